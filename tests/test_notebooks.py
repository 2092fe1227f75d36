"""The course notebooks: committed clean, shaped like a lesson, and each one runs top to
bottom without an error (``-m notebook`` selects the execution tests; ``-m "not notebook"``
skips them)."""

import os
import re
import time
from pathlib import Path

import pytest


def _nbformat():
    """nbformat, imported when a test needs it, not at collection (its import takes over 1 s)."""
    return pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]


def read(path):
    return _nbformat().read(path, as_version=4)


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
    _nbformat().validate(nb)
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


#: The longest a cell may run without showing progress (s, as on an idle machine): after
#: that a student sees only ``[*]`` and cannot tell a slow cell from a hung one.
SILENT_LIMIT = 10.0
#: A CPU-bound loop run in the kernel before and after the notebook: its wall time over its
#: CPU time is how much slower than idle this machine runs right now (>= 1).
CALIBRATION = ("import time as _t\n_w, _c = _t.perf_counter(), _t.process_time()\n"
               "_x = 0\nfor _i in range(3_000_000):\n    _x += _i * _i\n"
               "print(repr((_t.perf_counter() - _w, _t.process_time() - _c)))")
#: A tqdm text bar (``42%|####      | 21/50``).
TQDM_TEXT = re.compile(r"\d+%\|.*\|\s*\d+/\d+")
#: A cell whose source matches calls a ``ttqlab.viz`` figure function and must show a figure
#: (every viz function but ``ternary_fit``, which returns a Figure).
VIZ_CALL = re.compile(r"\bviz\.(?!ternary_fit\b)\w+\(")


def _kernel_cpu(client) -> float:
    """CPU seconds the kernel process has used so far (user + system)."""
    import psutil

    t = psutil.Process(client.km.provisioner.pid).cpu_times()
    return t.user + t.system


class CellTimer:
    """nbclient hooks that record, for every code cell, its wall time and the kernel's CPU
    time while it ran: ``cells[index] = (wall_s, cpu_s)``."""

    def __init__(self, client):
        self.client, self.cells, self._start = client, {}, None
        client.on_cell_execute = self.start
        client.on_cell_executed = self.stop

    def start(self, cell, cell_index, **_):
        self._start = (time.perf_counter(), _kernel_cpu(self.client))

    def stop(self, cell, cell_index, **_):
        wall0, cpu0 = self._start
        self.cells[cell_index] = (time.perf_counter() - wall0, _kernel_cpu(self.client) - cpu0)


def idle_seconds(wall: float, cpu: float, slowdown: float) -> float:
    """How long a cell would run on an idle machine: its computing part takes its CPU time
    ``cpu`` there (on this machine ``slowdown * cpu`` of wall time), and what is left of
    ``wall`` (sleeping, waiting on files) is not sped up by an idle machine:
    ``cpu + max(0, wall - slowdown * cpu)``. One torch thread (``THREADS``) keeps CPU time
    equal to the work done."""
    return cpu + max(0.0, wall - slowdown * cpu)


def _widget_models(nb, client) -> dict:
    state = getattr(client, "widget_state", None) or {}
    if not state:
        saved = nb.metadata.get("widgets", {}).get(
            "application/vnd.jupyter.widget-state+json", {})
        state = saved.get("state", {})
    return state


def _is_progress(model_id: str, models: dict, depth: int = 0) -> bool:
    """A widget that is a progress bar or holds one (tqdm.notebook shows an HBox of a label,
    a FloatProgress and a label)."""
    model = models.get(model_id)
    if model is None or depth > 5:
        return False
    if model.get("model_name", "").endswith("ProgressModel"):
        return True
    children = model.get("state", {}).get("children", [])
    return any(_is_progress(c.removeprefix("IPY_MODEL_"), models, depth + 1)
               for c in children if isinstance(c, str))


def shows_progress(cell, models: dict) -> bool:
    """The cell shows a progress display: a tqdm widget (a progress bar's view) or a tqdm
    text bar (``42%|####      | 21/50``)."""
    for out in cell.get("outputs", []):
        view = out.get("data", {}).get("application/vnd.jupyter.widget-view+json")
        if view and _is_progress(view.get("model_id", ""), models):
            return True
        text = out.get("text", "") if out.get("output_type") == "stream" else \
            out.get("data", {}).get("text/plain", "")
        if TQDM_TEXT.search("".join(text) if isinstance(text, list) else text):
            return True
    return False


def silent_cells(nb, timings: dict, slowdown: float, models: dict, *,
                 limit: float = SILENT_LIMIT, name: str = "") -> list[str]:
    """One line per code cell that ran longer than ``limit`` seconds (idle-machine time,
    `idle_seconds`) without a progress display."""
    out = []
    for i, (wall, cpu) in sorted(timings.items()):
        took = idle_seconds(wall, cpu, slowdown)
        if took > limit and not shows_progress(nb.cells[i], models):
            out.append(silent_message(name, i, nb.cells[i].source, wall, cpu, slowdown))
    return out


def silent_message(name: str, index: int, source: str, wall: float, cpu: float,
                   slowdown: float) -> str:
    """The report for a silent cell (`silent_cells`; the browser run reports the same)."""
    first = source.strip().splitlines()[0][:70] if source.strip() else ""
    return (f"{name} cell {index} ({first!r}) ran {idle_seconds(wall, cpu, slowdown):.1f} s "
            f"(idle-machine estimate; {wall:.1f} s wall, {cpu:.1f} s CPU, machine "
            f"{slowdown:.1f}x slower than idle) with no progress display: wrap its loop in "
            f"tqdm.auto.tqdm (or let ttqlab.fit show its bar)")


def stderr_message(index: int, text: str) -> str:
    return f"cell {index} wrote to stderr: {text[:500]}"


def no_figure_message(index: int) -> str:
    return f"cell {index} calls a ttqlab.viz figure but shows no figure"


def _slowdown(client) -> float:
    """Run `CALIBRATION` in the kernel; wall / CPU time of a CPU-bound loop (>= 1)."""
    import ast

    from nbformat.v4 import new_code_cell

    cell = new_code_cell(CALIBRATION)
    client.nb.cells.append(cell)
    try:
        client.execute_cell(cell, len(client.nb.cells) - 1)
    finally:
        client.nb.cells.pop()
    text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
    wall, cpu = ast.literal_eval(text.strip())
    return max(1.0, wall / max(cpu, 1e-3))


def execute(nb, cwd: Path, env: dict | None = None, timeout: int = 600):
    """Run ``nb`` in a fresh python3 kernel; return ``(timings, slowdown, widget models)``:
    per code cell ``(wall s, kernel CPU s)`` and the machine's slowdown (measured in the
    kernel before and after; the larger). Raises nbclient's ``CellExecutionError``."""
    import nbclient

    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    with client.setup_kernel(env=env or dict(os.environ)):
        before = _slowdown(client)
        timer = CellTimer(client)
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        client.on_cell_execute = client.on_cell_executed = None
        after = _slowdown(client)
        client.set_widgets_metadata()
    return timer.cells, max(before, after), _widget_models(nb, client)


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_without_errors(path, tmp_path):
    """Every notebook runs top to bottom: no error, nothing on stderr, a figure for every
    ``viz`` call, and no cell that runs more than `SILENT_LIMIT` s without progress."""
    pytest.importorskip("nbclient")
    from nbclient.exceptions import CellExecutionError

    nb = read(path)
    env = {**os.environ, "TTQLAB_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": THREADS,
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    try:
        timings, slowdown, models = execute(nb, tmp_path, env)
    except CellExecutionError as exc:
        pytest.fail(f"{path.name} raised:\n{exc}", pytrace=False)
    problems = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                problems.append(f"cell {i}: {out.ename}: {out.evalue}")
            elif out.output_type == "stream" and out.name == "stderr":
                problems.append(stderr_message(i, out.text))
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and VIZ_CALL.search(cell.source):
            if not any("image/png" in out.get("data", {}) for out in cell.outputs):
                problems.append(no_figure_message(i))
    problems += silent_cells(nb, timings, slowdown, models, name=path.name)
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


# ------------------------------------------------------------ the silent-cell check itself


def _synthetic(*cells: str):
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def _check(nb, tmp_path, limit):
    pytest.importorskip("nbclient")
    pytest.importorskip("psutil")
    timings, slowdown, models = execute(nb, tmp_path, {**os.environ, "OMP_NUM_THREADS": "1"})
    return silent_cells(nb, timings, slowdown, models, limit=limit, name="synthetic.ipynb")


def test_a_cell_that_sleeps_silently_is_reported(tmp_path):
    nb = _synthetic("x = 1", "import time\ntime.sleep(3)", "print('done')")
    problems = _check(nb, tmp_path, limit=2.0)
    assert len(problems) == 1 and "synthetic.ipynb cell 1 " in problems[0], problems
    assert "no progress display" in problems[0] and "tqdm" in problems[0]


def test_a_cell_that_computes_silently_is_reported(tmp_path):
    # CPU time counts as it would on an idle machine, however loaded this one is
    nb = _synthetic("import time\nt = time.process_time()\n"
                    "while time.process_time() - t < 3:\n    pass")
    problems = _check(nb, tmp_path, limit=2.0)
    assert len(problems) == 1 and "cell 0 " in problems[0], problems


def test_a_cell_with_a_tqdm_bar_passes(tmp_path):
    nb = _synthetic("import time\nfrom tqdm.auto import tqdm\n"
                    "for _ in tqdm(range(6), desc='training'):\n    time.sleep(0.5)",
                    "import time\ntime.sleep(0.2)")
    problems = _check(nb, tmp_path, limit=2.0)
    assert problems == []
    assert nb.cells[0].outputs, "tqdm.auto showed nothing"


def test_idle_seconds_discounts_a_loaded_machine_only_for_computing():
    assert idle_seconds(wall=30.0, cpu=10.0, slowdown=3.0) == pytest.approx(10.0)
    assert idle_seconds(wall=15.0, cpu=0.0, slowdown=3.0) == pytest.approx(15.0)  # sleeping
    assert idle_seconds(wall=12.0, cpu=2.0, slowdown=2.0) == pytest.approx(10.0)
    assert idle_seconds(wall=5.0, cpu=5.0, slowdown=1.0) == pytest.approx(5.0)
