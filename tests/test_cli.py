"""The command line, end to end on the offline digits data."""

import json
import os
import subprocess
import sys

import pytest

from ttqlab.cli import main


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TTQLAB_DATA", str(tmp_path / "cache"))  # starts cached per test
    return tmp_path / "cache"


@pytest.mark.slow
def test_compare_runs_end_to_end_with_two_seeds(tmp_path, capsys, cache):
    out = tmp_path / "sub" / "compare.json"
    argv = ["compare", "--dataset", "digits", "--epochs", "2", "--pretrain-epochs", "2",
            "--seeds", "2", "--json", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    methods = ["fp32", "binary", "twn", "ttq", "inq", "inq-oneshot"]
    for method in methods:
        assert method in text
    assert "±" in text and "one test image = 0.22 points" in text and "Columns:" in text
    saved = json.loads(out.read_text())
    assert "95% CI" in text and all(f"{c['claim']} ({c['comparison']})" in text and
                                    c["verdict"] in text for c in saved["claims"])
    rows = saved["rows"]
    assert [r["method"] for r in rows] == methods
    assert saved["seeds"] == [0, 1] and saved["model"] == "lenet5"
    assert saved["recipe"]["epochs"] == 2 and saved["finetune"]["epochs"] == 2
    assert saved["dataset"] == "digits" and saved["val"] > 0 and saved["claims"]
    for r in rows:
        assert r["epochs"] == 2 and r["seeds"] == [0, 1] and len(r["test_acc"]) == 2
        assert 0 <= r["test_acc_mean"] <= 100 and r["test_acc_std"] >= 0
        assert r["delta_vs_fp32_mean"] == pytest.approx(
            sum(a - b for a, b in zip(r["test_acc"], rows[0]["test_acc"])) / 2)
    by = {r["method"]: r for r in rows}
    assert by["ttq"]["bits_per_weight"] == 2 and by["inq"]["bits_per_weight"] == 5
    assert by["binary"]["model_bytes"] < by["twn"]["model_bytes"] < by["fp32"]["model_bytes"]
    assert len(list((cache / "starts").glob("*.safetensors"))) == 2  # one start per seed
    assert main(argv) == 0  # again: the starts come from the cache, the numbers are equal
    assert "all 2 read from the cache" in capsys.readouterr().out
    assert [r["test_acc"] for r in json.loads(out.read_text())["rows"]] == \
        [r["test_acc"] for r in rows]


def test_compare_from_scratch_drops_inq_by_default(tmp_path, cache, capsys):
    out = tmp_path / "c.json"
    assert main(["compare", "--dataset", "synthetic", "--init", "scratch", "--epochs", "1",
                 "--seeds", "1", "--json", str(out)]) == 0
    # the output ends with the next step: the course, copied out by `ttqlab course DEST`
    # (a pip install has no notebooks/ folder to open)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("Next:") and "ttqlab course" in last and "notebooks/" not in last
    saved = json.loads(out.read_text())
    assert [r["method"] for r in saved["rows"]] == ["fp32", "binary", "twn", "ttq"]
    assert saved["protocol"] == "scratch" and saved["starts"] == []
    assert not cache.exists() or not list(cache.glob("starts/*"))  # no start trained


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "--seeds"), (["--seeds", "-2"], "--seeds"),
    (["--json", "{tmp}"], "is a folder"),
    (["--json", "{tmp}/file.txt/x.json"], "is a file, not a folder"),
    (["--model", "lenet5", "--channels", "8"], "--channels"),
    (["--threads", "0"], "--threads"), (["--val-fraction", "1.5"], "--val-fraction"),
    (["--init", "scratch", "--methods", "fp32", "inq"], "INQ quantizes a trained model"),
    (["--methods", "twn", "twn"], "twice"), (["--pretrain-epochs", "0"], "at least 1"),
    (["--seed", "-1"], "--seed must be >= 0")])
def test_compare_bad_input_fails_before_training(argv, message, tmp_path, capsys,
                                                 monkeypatch):
    (tmp_path / "file.txt").write_text("")
    import ttqlab.experiments

    def no_training(*a, **k):
        raise AssertionError("training started despite bad input")

    monkeypatch.setattr(ttqlab.experiments, "compare", no_training)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as exit_:  # a usage error: argparse's exit status 2
        main(["compare", "--dataset", "digits", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_compare_without_fp32_says_there_is_no_delta(capsys, cache):
    assert main(["compare", "--dataset", "synthetic", "--methods", "twn", "--epochs", "2",
                 "--pretrain-epochs", "1", "--seeds", "1"]) == 0
    assert "No Δ column" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["ttq", "inq"])
def test_train_command(method, tmp_path, capsys):
    out = tmp_path / "h.json"
    args = ["train", "--method", method, "--model", "mlp", "--dataset", "synthetic",
            "--epochs", "2", "--json", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "layer report" in text and "test accuracy" in text
    saved = json.loads(out.read_text())
    assert saved["summary"]["method"] == method and len(saved["epochs"]) >= 3
    # percent, as compare prints it
    assert f"test accuracy {100 * saved['summary']['test_acc']:.2f}%" in text


@pytest.mark.parametrize("argv, meant", [
    (["train", "--method", "twn", "--epoch", "3"], "--epochs"),   # no silent abbreviation
    (["train", "--method", "twn", "--epocs", "3"], "--epochs"),
    (["compare", "--sedes", "2"], "--seeds"),
    (["compare", "--pretrain-epoch", "2"], "--pretrain-epochs")])
def test_a_mistyped_option_names_the_command_and_the_option_meant(argv, meant, no_work,
                                                                  capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    line = err[-1]
    assert line.startswith(f"ttqlab {argv[0]}: error: unrecognized arguments")
    assert f"did you mean {meant}?" in line
    # the command's own usage (its options), not the top-level one
    assert err[0].startswith(f"usage: ttqlab {argv[0]} ") and meant in " ".join(err[:-1])


def test_a_mistyped_command_names_the_command_meant(capsys):
    line = _usage_error(["trian", "--method", "twn"], capsys)
    assert line.startswith("ttqlab: error: argument COMMAND: invalid choice: 'trian'")
    assert "did you mean train?" in line and "compare" in line
    line = _usage_error(["--version-x"], capsys)  # an option, no command: argparse's message
    assert "ttqlab: error:" in line


def test_bad_arguments_exit_with_message(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--method", "ternary"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "ttqlab", "--help"], capture_output=True,
                       text=True, check=True)
    assert "compare" in r.stdout and "train" in r.stdout


# --------------------------------------------------------------------------- an instant CLI

#: Runs the command line in a fresh interpreter, then prints which heavy modules it imported
#: (on stderr's last line, after whatever the command printed).
_WATCH = """
import json, sys
from ttqlab.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "numpy", "safetensors", "tqdm", "ttqlab.models",
                            "ttqlab.data", "ttqlab.experiments") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""

COMMANDS = ("train", "compare", "export", "report", "reproduce", "course")


@pytest.mark.parametrize("argv, code", [
    (["--help"], 0), (["--version"], 0),
    *[([c, "--help"], 0) for c in COMMANDS],
    ([], 2), (["trian"], 2), (["--verbose"], 2),
    (["train"], 2),                                          # --method is required
    (["train", "--method", "ternary"], 2),                   # not a choice
    (["train", "--method", "twn", "--epocs", "3"], 2),      # a typo
    (["train", "--method", "twn", "--epochs", "0"], 2),      # a bad value
    (["train", "--method", "twn", "--model", "alexnet"], 2),
    (["compare", "--seeds", "0"], 2), (["compare", "--seed", "-1"], 2),
    (["compare", "--init", "scratch", "--methods", "inq"], 2),
    (["export", "--method", "twn"], 2),                      # --out is required
    (["export", "--method", "twn", "--out", "m.safetensors", "--packing", "3bit"], 2),
    (["report", "no-such-file.safetensors"], 2),
    (["reproduce", "twn-imagenet"], 2), (["reproduce", "twn-mnist", "--max-epochs", "0"], 2),
    (["course", "a", "b"], 2),
])
def test_help_version_and_usage_errors_answer_without_importing_torch(argv, code, tmp_path):
    """`ttqlab --help`, `--version`, every command's `--help` and usage errors build and run
    the parsers only: no PyTorch (seconds to import), nothing of ttqlab that imports it."""
    r = subprocess.run([sys.executable, "-c", _WATCH, *argv], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    seen = json.loads(r.stderr.strip().splitlines()[-1])
    assert seen == {"code": code, "heavy": []}, f"ttqlab {' '.join(argv)}:\n{r.stderr}"
    said = r.stdout + r.stderr
    assert "Traceback" not in said
    if code == 2:
        assert "error:" in said and "usage: ttqlab" in said
    if argv == ["--version"]:
        import torch

        import ttqlab
        assert r.stdout.strip() == f"ttqlab {ttqlab.__version__} (torch {torch.__version__})"


def test_the_clis_names_are_the_librarys():
    """The CLI lists the accepted names itself (the registries import PyTorch): the same."""
    from ttqlab import cli, data, experiments, models, reproduce, stats

    assert cli.MODEL_NAMES == tuple(sorted(models.MODELS)), (
        f"add the new model names to ttqlab.cli.MODEL_NAMES: {tuple(sorted(models.MODELS))}")
    assert cli.DATASET_NAMES == data.DATASETS, "update ttqlab.cli.DATASET_NAMES"
    assert cli.ALL_METHODS == tuple(experiments.ALL_METHODS), "update ttqlab.cli.ALL_METHODS"
    assert cli.METHOD_TABLE == cli._registry_table(), (
        f"update ttqlab.cli.METHOD_TABLE to the registry's: {cli._registry_table()}")
    assert cli.DEFAULT_METHODS == tuple(experiments.DEFAULT_METHODS)
    assert cli.PACKING_NAMES == tuple(sorted(stats.PACKINGS)), "update cli.PACKING_NAMES"
    assert cli.RECIPE_NAMES == tuple(reproduce.RECIPES), "update ttqlab.cli.RECIPE_NAMES"


def test_import_ttqlab_is_light_and_every_public_name_resolves():
    """`import ttqlab` imports no PyTorch; each name of ``__all__`` is imported on first use,
    by attribute and by ``from ttqlab import ...``, and is the object its module defines."""
    code = """
import sys, ttqlab
assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))
from ttqlab import quantize, quantizers as Q, viz, widgets
import ttqlab.convert, ttqlab.train
assert quantize is ttqlab.convert.quantize and ttqlab.fit is ttqlab.train.fit
for name in ttqlab.__all__:
    assert getattr(ttqlab, name) is not None, name
assert set(ttqlab.__all__) <= set(dir(ttqlab))
assert set(ttqlab.__all__) == {"__version__", *ttqlab._FROM, *ttqlab._SUBMODULES}
for bad in ("nope", "a.b", "__wrapped__"):
    try:
        getattr(ttqlab, bad)
    except AttributeError as e:
        assert repr(bad) in str(e), e
    else:
        raise AssertionError(bad)
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_a_missing_optional_package_exits_1_with_the_pip_command(cache, monkeypatch, capsys):
    """MNIST-1D's other seeds need the mnist1d package (the datasets extra): one line that
    says which pip install adds it, no traceback."""
    for mod in ("mnist1d", "mnist1d.data"):
        monkeypatch.setitem(sys.modules, mod, None)
    code = main(["train", "--method", "twn", "--model", "mlp", "--dataset", "mnist1d",
                 "--seed", "1", "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("ttqlab train: error:")
    assert 'pip install "ttqlab[datasets]"' in err[0]


# --------------------------------------------------------------------------- polish


def _help(*argv) -> str:
    r = subprocess.run([sys.executable, "-m", "ttqlab", *argv, "--help"], capture_output=True,
                       text=True, check=True)
    return r.stdout


def test_version():
    import ttqlab

    r = subprocess.run([sys.executable, "-m", "ttqlab", "--version"], capture_output=True,
                       text=True, check=True)
    assert r.stdout.startswith(f"ttqlab {ttqlab.__version__} ")


def test_every_command_has_examples_and_every_option_help():
    import argparse

    from ttqlab.cli import EXAMPLES, _assemble

    _, commands = _assemble()
    assert set(commands) == set(EXAMPLES)
    for name, p in commands.items():
        assert p.epilog.startswith("examples:") and f"ttqlab {name}" in p.epilog
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"ttqlab {name} {action.option_strings or action.dest}: no help"
    text = _help("train")
    assert "examples:" in text and "ttqlab train --method ttq" in text


# --------------------------------------------------------------------------- validation first


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if any command starts loading data or training."""
    def forbidden(*a, **k):
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr("ttqlab.data.load", forbidden)
    monkeypatch.setattr("ttqlab.reproduce.run", forbidden)


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("argv, message", [
    (["train", "--method", "inq", "--bits", "9"], "--bits: bits must be an integer from 2 to 8"),
    (["train", "--method", "twn", "--factor", "-1"], "--factor: factor must be positive"),
    (["train", "--method", "twn", "--bits", "4"], "--bits is an option of inq, inq-oneshot"),
    (["train", "--method", "ttq", "--t", "2"], "between 0 and 1"),
    (["train", "--method", "ttq", "--sparsity", "1"], "between 0 and 1"),
    (["train", "--method", "twn", "--epochs", "0"], "--epochs: must be at least 1"),
    (["train", "--method", "twn", "--epochs", "2.0"], "expected a whole number"),
    (["train", "--method", "twn", "--lr", "nan"], "finite"),
    (["compare", "--batch-size", "-3"], "--batch-size: must be at least 1"),
    (["train", "--method", "twn", "--device", "tpu9"], "--device"),
    (["reproduce", "twn-mnist", "--limit-train", "0"], "--limit-train must be at least 1"),
    (["reproduce", "twn-mnist", "--max-epochs", "0"], "--max-epochs must be at least 1"),
    (["report", "no-such-file.safetensors"], "no such file"),
])
def test_bad_options_are_refused_before_any_work(argv, message, no_work, capsys):
    line = _usage_error(argv, capsys)
    assert message in line and line.startswith(f"ttqlab {argv[0]}: error:")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is visible")
@pytest.mark.parametrize("command", [["train", "--method", "twn"], ["compare"],
                                     ["reproduce", "twn-mnist"]])
def test_cuda_on_a_machine_without_it_is_a_usage_error(command, no_work, capsys):
    line = _usage_error([*command, "--device", "cuda"], capsys)
    assert "--device cuda" in line and "--device cpu" in line


def test_unwritable_outputs_are_refused_before_training(tmp_path, no_work, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _usage_error(["train", "--method", "inq", "--json", str(blocker / "h.json")],
                        capsys)
    assert "--json" in line and "not a folder" in line
    line = _usage_error(["export", "--method", "twn", "--out", str(blocker / "m.safetensors")],
                        capsys)
    assert "--out" in line and "not a folder" in line
    line = _usage_error(["compare", "--json", str(tmp_path)], capsys)
    assert "is a folder" in line
    line = _usage_error(["reproduce", "twn-mnist", "--out", str(blocker / "run")], capsys)
    assert "--out" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_read_only_folder_is_refused(tmp_path, no_work, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        line = _usage_error(["train", "--method", "twn", "--json", str(ro / "x.json")], capsys)
    finally:
        ro.chmod(0o700)
    assert "cannot write" in line


# --------------------------------------------------------------------------- failures while working


@pytest.mark.parametrize("error", [
    FloatingPointError("loss is nan at epoch 3"),
    OSError(28, "No space left on device"),
    RuntimeError("CUDA out of memory"),
    "SafetensorError",
])
def test_runtime_failures_exit_1_with_one_line(error, monkeypatch, capsys):
    if error == "SafetensorError":
        from safetensors import SafetensorError

        error = SafetensorError("Error while deserializing header: HeaderTooLarge")

    def fail(*a, **k):
        raise error

    monkeypatch.setattr("ttqlab.experiments.train_method", fail)
    code = main(["train", "--method", "twn", "--model", "mlp", "--dataset", "synthetic",
                 "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("ttqlab train: error:")
    assert "Traceback" not in err[0]


def test_a_damaged_file_exits_1_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    assert main(["report", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ttqlab report: error:")


def test_progress_bars_only_on_a_terminal_and_new_fit_options(monkeypatch, capsys):
    import inspect

    from ttqlab.train import fit

    seen = []

    def record(model, method, data, **kwargs):
        seen.append(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr("ttqlab.experiments.train_method", record)
    base = ["train", "--method", "twn", "--model", "mlp", "--dataset", "synthetic"]
    assert main(base) == 1                      # pytest's stderr is not a terminal
    assert seen[-1]["progress"] is False
    assert "compile" not in seen[-1] and "deterministic" not in seen[-1]
    assert main([*base, "--progress"]) == 1
    assert seen[-1]["progress"] is True
    params = inspect.signature(fit).parameters
    for flag in ("compile", "deterministic"):
        if flag in params:
            assert main([*base, f"--{flag}"]) == 1 and seen[-1][flag] is True
        else:                                   # a fit without the option: refused up front
            n = len(seen)
            with pytest.raises(SystemExit) as e:
                main([*base, f"--{flag}"])
            assert e.value.code == 2 and len(seen) == n
    capsys.readouterr()


# --------------------------------------------------------------------------- ttqlab course


def test_course_copies_and_protects_the_students_work(tmp_path, capsys):
    from ttqlab import course

    dest = tmp_path / "course"
    assert main(["course", str(dest)]) == 0
    out = capsys.readouterr().out
    assert "jupyter lab" in out and "--allow-root" in out
    names = sorted(p.name for p in dest.glob("*.ipynb"))
    assert names == sorted(p.name for p in course.files() if p.suffix == ".ipynb")
    assert main(["course", str(dest)]) == 0     # an untouched copy is refreshed silently
    first = dest / names[0]
    first.write_text(first.read_text().replace("ternary", "TERNARY", 1))
    mine = first.read_bytes()
    line = _usage_error(["course", str(dest)], capsys)
    assert names[0] in line and "--force" in line
    assert first.read_bytes() == mine, "nothing is lost"
    assert main(["course", str(dest), "--force"]) == 0
    assert first.read_bytes() == course.files()[0].read_bytes()
    capsys.readouterr()


@pytest.mark.parametrize("dest", ["", "  "])
def test_course_refuses_an_empty_destination_and_writes_nothing(tmp_path, monkeypatch,
                                                                 capsys, dest):
    """``Path("")`` is the current folder: an empty DEST must not copy the course there."""
    monkeypatch.chdir(tmp_path)
    line = _usage_error(["course", dest], capsys)
    assert "DEST is empty" in line and "ttqlab course my-course" in line
    assert list(tmp_path.iterdir()) == []
