"""Every benchmark runs in its tiny configuration and writes its JSON; the report turns the
JSON into the README section and figures."""

import json
import shutil

import pytest
import torch

from benchmarks import __main__ as entry
from benchmarks import read_results, report

COLUMNS = {
    "step_time": {"model", "method", "batch", "device", "threads", "step_ms", "ratio"},
    "accuracy": {"dataset", "model", "method", "epochs", "seeds", "val_acc_mean",
                 "test_acc_mean", "test_acc_std", "delta_vs_fp32_mean", "delta_vs_fp32_low",
                 "delta_vs_fp32_high", "sparsity", "recipe", "finetune"},
    "capacity": {"channels", "params", "method", "test_acc_mean", "delta_vs_fp32_mean",
                 "delta_vs_fp32_low", "delta_vs_fp32_high"},
    "plateau": {"channels", "family", "epochs", "val_acc_mean", "val_acc_std",
                "seconds_mean"},
    "file_size": {"model", "method", "packing", "q fp32 file", "q packed file", "q ratio",
                  "model fp32 file", "model packed file", "model ratio", "outputs equal"},
    "kernels": {"model", "method", "path", "layers", "kernels", "extra", "extra_per_layer",
                "host_reads"},
    "deploy_accuracy": {"model", "method", "seed", "block_size", "test_acc", "flips",
                        "acc_diff_images"},
}
QUICK = [n for n in entry.available() if entry.BENCHMARKS[n]]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    threads = torch.get_num_threads()
    try:
        assert entry.main(["--quick", "--out-dir", str(out), *QUICK]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.slow  # the quick benchmarks run once, about a minute
@pytest.mark.parametrize("name", QUICK)
def test_benchmark_writes_its_rows(results, name):
    doc = read_results(results / f"{name}.json")
    assert doc["benchmark"] == name and doc["rows"]
    assert doc["meta"]["quick"] is True and doc["meta"]["cores"] >= 1
    assert "cpu" in doc["meta"] and "torch" in doc["meta"]
    for row in doc["rows"]:
        assert COLUMNS.get(name, set()) <= set(row), set(row)


@pytest.mark.slow  # the quick benchmarks run once, about a minute
def test_step_time_rows(results):
    rows = read_results(results / "step_time.json")["rows"]
    assert {(r["model"], r["method"]) for r in rows} == {
        (m, k) for m in ("lenet5", "resnet20")
        for k in ("fp32", "binary", "twn", "ttq", "inq", "bitnet")}
    assert all(r["step_ms"] > 0 for r in rows)
    assert all(r["ratio"] == 1.0 for r in rows if r["method"] == "fp32")


@pytest.mark.slow  # the quick benchmarks run once, about a minute
def test_kernel_rows(results):
    """The counts are real: fp32 adds nothing, every quantizer adds kernels to each
    quantized layer, and the device path reads nothing back to the host."""
    rows = read_results(results / "kernels.json")["rows"]
    assert {r["path"] for r in rows} == {"device", "cpu"}
    for r in rows:
        if r["method"] == "fp32":
            assert r["extra"] == 0 and r["layers"] == 0
        else:
            assert r["layers"] > 0 and r["extra"] >= r["layers"]
        if r["path"] == "device":
            assert r["host_reads"] == 0
    cpu = {r["method"]: r for r in rows if r["path"] == "cpu"}
    assert cpu["twn"]["host_reads"] > 0  # the CPU path's float(delta), counted


@pytest.mark.slow  # the quick benchmarks run once, about a minute
def test_accuracy_rows(results):
    rows = read_results(results / "accuracy.json")["rows"]
    assert {r["dataset"] for r in rows} == {"mnist1d"}
    assert [r["method"] for r in rows] == ["fp32", "binary", "twn", "ttq", "inq", "inq-oneshot",
                                           "bitnet"]
    assert len({r["epochs"] for r in rows}) == 1  # equal budgets
    for r in rows:
        assert r["seeds"] == [0, 1] and len(r["test_acc"]) == 2
        assert min(r["test_acc"]) <= r["test_acc_mean"] <= max(r["test_acc"])
        assert 0 <= r["test_acc_mean"] <= 100 and r["test_acc_std"] >= 0
    ternary = [r for r in rows if r["method"] in ("twn", "ttq")]
    assert ternary and all(0 < r["sparsity"] < 1 for r in ternary)
    doc = json.loads((results / "accuracy.json").read_text())
    (selection,) = doc["selection"]
    # each row's lr is chosen on validation: its best candidate's validation accuracy wins
    assert len(selection["candidates"]) == 2 and doc["claims"]
    for r in rows:
        best = max(selection["candidates"], key=lambda c: c["val_acc"][r["method"]])
        assert r["lr"] == best["lr"] == selection["chosen_lr"][r["method"]]
    for c in doc["claims"]:
        assert c["verdict"] in ("shows", "does not show", "not resolved with 2 seeds")


def test_committed_accuracy_results_chose_the_library_default():
    """The library's fine-tuning lr is the one benchmarks/accuracy.py chose on validation,
    and the README's claims come from that run."""
    from benchmarks import RESULTS
    from ttqlab.experiments import ALL_METHODS, FINETUNE_LRS

    doc = json.loads((RESULTS / "accuracy.json").read_text())
    for selection in doc["selection"]:
        assert selection["chosen_lr"] == FINETUNE_LRS
    assert {r["method"] for r in doc["rows"]} == set(ALL_METHODS)
    assert all(r["lr"] == FINETUNE_LRS[r["method"]] for r in doc["rows"])


@pytest.mark.slow  # the quick benchmarks run once, about a minute
def test_capacity_and_plateau_rows(results):
    cap = read_results(results / "capacity.json")["rows"]
    assert {r["channels"] for r in cap} == {4, 8}
    by = {(r["channels"], r["method"]): r for r in cap}
    assert by[(8, "fp32")]["params"] > by[(4, "fp32")]["params"]
    for r in cap:
        assert r["delta_vs_fp32_low"] <= r["delta_vs_fp32_mean"] <= r["delta_vs_fp32_high"]
    plateau = read_results(results / "plateau.json")["rows"]
    assert [r["epochs"] for r in plateau] == [1, 2]
    assert all(0 <= r["val_acc_mean"] <= 100 for r in plateau)


@pytest.mark.slow  # the quick benchmarks run once, about a minute
def test_report_writes_readme_section_and_figures(results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# t\n\nbefore\n<!-- results:start -->\nOLD SECTION\n<!-- results:end -->"
                      "\nafter\n")
    for p in results.glob("*.json"):
        shutil.copy(p, tmp_path)
    result = {"recipe": "twn-mnist", "measured": {"fp32": 99.1, "twn": 98.7},
              "conditions": {"full recipe": False,
                             "machine": {"device": "cuda:0", "gpu": "A GPU", "processes": 2}}}
    (tmp_path / "reproduce-twn-mnist.json").write_text(json.dumps(result))
    figures = tmp_path / "docs" / "figures"
    section = report.main(["--results", str(tmp_path), "--readme", str(readme),
                           "--figures", str(figures)])
    text = readme.read_text()
    assert text.startswith("# t\n\nbefore\n<!-- results:start -->\n")
    assert text.endswith("<!-- results:end -->\nafter\n") and "OLD SECTION" not in text
    assert section in text
    assert "99.35" in section and "91.13" in section  # the papers' numbers beside ours
    assert "quick CI configuration" in section  # our numbers say how they were made
    assert "ttqlab reproduce ttq-cifar10-resnet56" in section
    assert "TWN 98.70 (A GPU x2, shortened run)" in section
    assert "Where full precision converges" in section
    assert "against the network's width" in section
    if "deploy_accuracy" in QUICK:
        assert "Do the 2-bit ONNX models give the same answers?" in section
    for c in json.loads((results / "accuracy.json").read_text())["claims"]:
        assert f"*{c['claim']}*" in section and f"**{c['verdict']}**" in section
    for name in ("accuracy.png", "capacity.png", "size_per_method.png"):
        if name == "size_per_method.png" and "file_size" not in QUICK:
            continue
        png = figures / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(docs/figures/{name})" in section
    report.main(["--results", str(tmp_path), "--readme", str(readme), "--figures",
                 str(figures)])
    assert readme.read_text() == text  # regenerating from the same JSON changes nothing


def test_report_refuses_a_readme_without_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="results:start"):
        report.write_readme(readme, "x")
    assert readme.read_text() == "# no markers\n"


def test_unknown_benchmark_name_is_an_error(capsys):
    with pytest.raises(SystemExit):
        entry.main(["speed"])
    assert "choose from" in capsys.readouterr().err


def test_tiers_benchmark_reads_pytests_counts():
    """benchmarks/tiers.py: a tier's wall time, its test count and exit status, from a real
    pytest run (a few validation tests here, not the tier itself)."""
    from benchmarks import tiers

    rows = tiers.measure(tiers={"some": ["tests/test_validation.py", "-q", "-k", "is_int"],
                                "none": ["tests/test_validation.py", "-q", "-k", "no_such"]})
    some, none = rows
    assert some["tier"] == "some" and some["tests"] > 0 and some["exit status"] == 0
    assert some["seconds"] > 0 and "-k is_int" in some["command"]
    assert none["tests"] == 0 and none["exit status"] == 5  # pytest: no tests collected
