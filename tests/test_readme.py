"""The README's commands are the ones CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(python3 -m venv[^\n]*)\n```", text)


def test_readme_has_setup_and_test_commands():
    cmds = readme_commands()
    assert len(cmds) == 2
    assert "ttqlab compare" in cmds[0] and "pytest" in cmds[1]
    for c in cmds:
        assert "torch==2.13.0" in c, "pin torch so that no CUDA build is pulled"


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci
