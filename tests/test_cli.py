"""The command line, end to end on the offline digits data."""

import json
import subprocess
import sys

import pytest

from ttqlab.cli import main


@pytest.mark.slow
def test_compare_runs_end_to_end_on_digits(tmp_path, capsys):
    out = tmp_path / "compare.json"
    assert main(["compare", "--dataset", "digits", "--epochs", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for method in ("fp32", "binary", "twn", "ttq", "inq"):
        assert method in text
    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == ["fp32", "binary", "twn", "ttq", "inq"]
    assert all(0.5 < r["test_acc"] <= 1 for r in rows)
    by = {r["method"]: r for r in rows}
    assert by["ttq"]["bits/weight"] == 2 and by["inq"]["bits/weight"] == 5
    assert by["binary"]["quantized ratio"] > 30 and by["twn"]["quantized ratio"] > 15


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
