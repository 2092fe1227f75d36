"""The command line, end to end on the offline digits data."""

import json
import subprocess
import sys

import pytest

from ttqlab.cli import main


@pytest.mark.slow
def test_compare_runs_end_to_end_with_two_seeds(tmp_path, capsys):
    out = tmp_path / "sub" / "compare.json"
    assert main(["compare", "--dataset", "digits", "--epochs", "2", "--seeds", "2",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for method in ("fp32", "binary", "twn", "ttq", "inq"):
        assert method in text
    assert "±" in text and "one test image = 0.22 points" in text and "Columns:" in text
    saved = json.loads(out.read_text())
    rows = saved["rows"]
    assert [r["method"] for r in rows] == ["fp32", "binary", "twn", "ttq", "inq"]
    assert saved["seeds"] == [0, 1] and saved["model"] == "lenet5"
    for r in rows:
        assert r["epochs"] == 2 and r["seeds"] == [0, 1] and len(r["test_acc"]) == 2
        assert 50 < r["test_acc_mean"] <= 100 and r["test_acc_std"] >= 0
        assert r["delta_vs_fp32_mean"] == pytest.approx(
            sum(a - b for a, b in zip(r["test_acc"], rows[0]["test_acc"])) / 2)
    by = {r["method"]: r for r in rows}
    assert by["ttq"]["bits_per_weight"] == 2 and by["inq"]["bits_per_weight"] == 5
    assert by["binary"]["model_bytes"] < by["twn"]["model_bytes"] < by["fp32"]["model_bytes"]


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "--seeds"), (["--seeds", "-2"], "--seeds"),
    (["--json", "{tmp}"], "is a directory"),
    (["--json", "{tmp}/file.txt/x.json"], "cannot write --json"),
    (["--model", "lenet5", "--channels", "8"], "--channels"),
    (["--threads", "0"], "--threads")])
def test_compare_bad_input_fails_before_training(argv, message, tmp_path, capsys,
                                                 monkeypatch):
    (tmp_path / "file.txt").write_text("")
    import ttqlab.cli

    def no_training(*a, **k):
        raise AssertionError("training started despite bad input")

    monkeypatch.setattr(ttqlab.cli, "compare", no_training)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["compare", "--dataset", "digits", *argv]) == 2
    assert message in capsys.readouterr().err


def test_compare_without_fp32_says_there_is_no_delta(capsys):
    assert main(["compare", "--dataset", "synthetic", "--methods", "twn", "--epochs", "2",
                 "--seeds", "1"]) == 0
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


def test_bad_arguments_exit_with_message(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--method", "ternary"])
    assert "invalid choice" in capsys.readouterr().err
    assert main(["train", "--method", "ttq", "--t", "2", "--dataset", "synthetic",
                 "--epochs", "1", "--model", "mlp"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "ttqlab", "--help"], capture_output=True,
                       text=True, check=True)
    assert "compare" in r.stdout and "train" in r.stdout
