"""The course notebooks: committed clean, shaped like a lesson, and each one runs top to
bottom without an error (``-m notebook`` selects the execution tests; ``-m "not notebook"``
skips them)."""

import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]


def read(path):
    return nbformat.read(path, as_version=4)


def test_the_course_is_there_in_reading_order():
    names = [p.name for p in NOTEBOOKS]
    assert len(names) >= 5, names
    parts = [re.match(r"(\d\d)([a-z]?)_", n) for n in names]
    assert all(parts), f"named NN_title.ipynb (or NNb_ for a second part): {names}"
    numbers = sorted({int(p.group(1)) for p in parts})
    assert numbers == list(range(1, len(numbers) + 1)), f"numbered 01, 02, ... in order: {names}"
    for p in parts:   # a part "07b" continues a notebook "07"
        assert not p.group(2) or any(q.group(1) == p.group(1) and not q.group(2) for q in parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_without_outputs(path):
    nb = read(path)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has outputs: clear them before committing"
            assert cell.execution_count is None, f"cell {i} has an execution count"
    assert "widgets" not in nb.metadata, "saved widget state: clear it before committing"
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_shaped_like_a_lesson(path):
    nb = read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    for needed in ("What you will learn", "Prerequisites", "Run time", "Dataset"):
        assert needed in first.source, f"the opening cell should say {needed!r}"
    headings = [line for c in nb.cells if c.cell_type == "markdown"
                for line in c.source.splitlines() if line.startswith("## ")]
    for h in ("## Summary", "## Exercises", "## References"):
        assert h in headings, f"missing {h!r}"
    assert headings.index("## Summary") < headings.index("## Exercises") < headings.index(
        "## References")
    refs = nb.cells[-1].source.split("## References")[-1]
    assert "arXiv:" in refs


#: PyTorch threads per kernel. One: CI runners are shared (and pytest-xdist runs several
#: kernels at once), and on a busy machine OpenMP threads that wait for each other at every
#: barrier run many times slower than one thread (measured here: 5-8 s instead of 0.9 s per
#: LeNet-5 epoch with 2 threads on 2 loaded cores).
THREADS = "1"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_without_errors(path, tmp_path):
    nbclient = pytest.importorskip("nbclient")
    from nbclient.exceptions import CellExecutionError

    nb = read(path)
    env = {**os.environ, "TTQLAB_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": THREADS,
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute(env=env)
    except CellExecutionError as exc:
        pytest.fail(f"{path.name} raised:\n{exc}", pytrace=False)
    problems = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                problems.append(f"cell {i}: {out.ename}: {out.evalue}")
            elif out.output_type == "stream" and out.name == "stderr":
                problems.append(f"cell {i} wrote to stderr: {out.text[:500]}")
    assert not problems, "\n".join(problems)
    draws = re.compile(r"\bviz\.(?!ternary_fit\b)\w+\(")  # every viz function but this one
    for i, cell in enumerate(nb.cells):              # returns a Figure
        if cell.cell_type == "code" and draws.search(cell.source):
            assert any("image/png" in out.get("data", {}) for out in cell.outputs), (
                f"cell {i} calls a ttqlab.viz figure but shows no figure")
