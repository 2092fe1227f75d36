"""The README's commands are the ones CI runs."""

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"


def readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(python3 -m venv[^\n]*)\n```", text)


def test_readme_has_setup_test_and_course_commands():
    cmds = readme_commands()
    assert len(cmds) == 3
    assert "ttqlab compare" in cmds[0] and "pytest" in cmds[1]
    assert "ttqlab course my-course" in cmds[2] and "jupyter lab my-course/" in cmds[2]
    for c in cmds:
        # A CPU-only PyTorch for Linux users (PyPI's Linux torch is the CUDA build), pinned to
        # the tested version so that a mirror without the CPU index cannot give a newer one.
        assert f"pip install {CPU_INDEX} torch==2.13.0 " in c, c


def test_every_install_command_in_the_readme_asks_for_the_cpu_build():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    installs = [line for b in blocks for line in b.splitlines() if "pip install" in line]
    assert installs and all(CPU_INDEX in line for line in installs), installs
    course = text.split("## Run the course", 1)[1].split("\n## ", 1)[0]
    assert "--allow-root" in course, "say what containers (root) need next to the command"


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci


def test_the_use_it_on_your_own_model_example_runs(tmp_path, monkeypatch, capsys):
    """The README's first Python example, as written (one epoch instead of ten)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use it on your own model", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "epochs=10" in code
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code.replace("epochs=10", "epochs=1"), "README.md", "exec"), scope)
    model, same, plain = scope["model"], scope["same"], scope["plain"]
    x = scope["data"].test.tensors[0][:32]
    for m in (model, same, plain):
        m.eval()
    with torch.no_grad():
        torch.testing.assert_close(same(x), model(x))
        torch.testing.assert_close(plain(x), model(x))
    assert "conv2" in capsys.readouterr().out
