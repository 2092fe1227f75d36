"""Every course notebook, run in JupyterLab in a real (headless Chromium) browser.

JupyterLab is served from the Binder environment (see conftest.py). For each notebook:
open it fresh, "Restart Kernel and Run All Cells", wait until the kernel is idle and every
code cell has run, then assert: no error output, every widget view rendered (no "Error
displaying widget" / "Loading widget..."), every plotly figure drew its traces, nothing
overflows its cell, and the kernel stayed within Binder's memory. It also checks what
tests/test_notebooks.py's nbclient run checks (`course_problems`): nothing on stderr, a
rendered figure in every cell that calls a ``ttqlab.viz`` figure, and no cell that computes
longer than ``SILENT_LIMIT`` s (idle-machine estimate) without a progress display; so CI
executes each course notebook once, here (tests/conftest.py skips its nbclient run). Then
every interactive explorer is moved with the mouse and its figure must change. Screenshots
of each notebook's key widget land in ``test-artifacts/browser/``.

The second half checks that the harness itself can fail: a notebook that raises, a kernel
that dies, a widget that cannot be displayed, a slider wired to nothing, a busy port, a
silent cell, stderr, a viz call with no figure; and that every kind of explorer has its
data drawn while a later cell keeps the kernel busy (next to a control figure that is
filled only later, which must be seen empty).

A quick local run of these tests alone can serve JupyterLab from an existing environment
instead of building Binder's: ``TTQLAB_LAB_PYTHON=.venv/bin/python pytest tests/launch -m
browser`` (conftest.py).
"""

from __future__ import annotations

import datetime
import json
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest
from binder_env import ROOT
from jupyter_harness import (
    JupyterLab,
    KernelCpu,
    KernelDied,
    LabError,
    PeakMemory,
    PortInUse,
    cell_timings,
    chromium_problem,
    drawn_figures,
    explorer_locator,
    explorers,
    figure_signature,
    finish_run,
    move_slider,
    progress,
    run_notebook,
    start_notebook,
    wait_for_change,
)
from test_notebooks import (  # the nbclient run's rules and messages (tests/ is on sys.path)
    CALIBRATION,
    SILENT_LIMIT,
    TQDM_TEXT,
    VIZ_CALL,
    idle_seconds,
    no_figure_message,
    silent_message,
    stderr_message,
)

NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))

#: The plotly figures each notebook must show, by title prefix (the first is its key widget,
#: screenshotted). Notebooks not listed here are still run and checked in full; listing them
#: makes a figure that silently disappears a failure.
FIGURES = {
    "01": ["Ternary threshold explorer"],
    "02": ["TWN fine-tuning (first seed), live"],
    "03": ["TTQ fine-tuning, live"],
    "04": ["TTQ sparsity trade-offs"],
    "05": ["INQ power-of-two levels", "INQ partition explorer"],
    "06": [],
}
#: How many explorers (a slider above a plotly figure) each notebook shows; each is moved.
EXPLORERS = {"01": 1, "02": 0, "03": 0, "04": 1, "05": 2, "06": 0}
BINDER_MEMORY = 2 * 2**30  # mybinder.org's limit, for everything in the container
BUDGET = 1.5 * 2**30  # what the server and the notebook's kernel may use of it together
STDERR = "application/vnd.jupyter.stderr"  # the mime type of a stderr stream output


def machine_slowdown() -> float:
    """How much slower than idle this machine runs now: `CALIBRATION` (the CPU-bound loop
    tests/test_notebooks.py runs in its kernel) run in this process, wall / CPU time (>= 1)."""
    import ast
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(CALIBRATION, {})
    wall, cpu = ast.literal_eval(printed.getvalue().strip())
    return max(1.0, wall / max(cpu, 1e-3))


def shows_progress(run, cell: int) -> bool:
    """Cell ``cell`` shows a progress display: an ipywidgets progress bar (a tqdm.notebook
    bar), a widget the kernel closed (a finished tqdm bar with ``leave=False``), or a tqdm
    text bar."""
    return any(o.progress_bars or (o.widget and o.closed) or TQDM_TEXT.search(o.text)
               for o in run.outputs if o.cell == cell)


def course_problems(run, slowdown: float, *, name: str, limit: float = SILENT_LIMIT
                    ) -> list[str]:
    """What tests/test_notebooks.py asserts of a course notebook beyond ``run.problems()``,
    with its messages: nothing on stderr, a rendered image in every cell whose source calls
    a ``ttqlab.viz`` figure function (`VIZ_CALL`), and no cell that ran longer than
    ``limit`` s (`idle_seconds` of its wall and kernel CPU time, ``slowdown`` from
    `machine_slowdown`) without a progress display (`shows_progress`)."""
    out = [stderr_message(o.cell, o.text) for o in run.outputs
           if o.type == "stream" and STDERR in o.mime]
    for i, source in sorted(run.sources.items()):
        if VIZ_CALL.search(source) and not any(
                "image/png" in o.mime and any(im["w"] > 0 for im in o.images)
                for o in run.outputs if o.cell == i):
            out.append(no_figure_message(i))
    for i, (wall, cpu) in sorted(run.timings.items()):
        if idle_seconds(wall, cpu, slowdown) > limit and not shows_progress(run, i):
            out.append(silent_message(name, i, run.sources.get(i, ""), wall, cpu, slowdown))
    return out


def _record(artifacts: Path, name: str, row: dict) -> None:
    path = artifacts / "runs.json"
    runs = json.loads(path.read_text()) if path.exists() else {}
    runs[name] = row
    path.write_text(json.dumps(runs, indent=1))


def test_the_course_has_notebooks():
    assert NOTEBOOKS, "no notebooks/NN_*.ipynb found: the browser tests would test nothing"


@pytest.mark.browser
@pytest.mark.binder
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_in_jupyterlab(name, page, lab, artifacts):
    stem = Path(name).stem
    before = machine_slowdown()
    with PeakMemory(lab) as memory:
        run = run_notebook(page, lab, f"notebooks/{name}")
    slowdown = max(before, machine_slowdown())
    page.screenshot(path=str(artifacts / f"{stem}-page.png"))
    silent = [i for i in run.timings if not shows_progress(run, i)]  # the check's margin:
    longest = max(silent, default=None, key=lambda i: idle_seconds(*run.timings[i], slowdown))
    _record(artifacts, name, {"seconds": round(run.seconds, 1),
                              "peak_kernel_MB": round(memory.peak / 2**20),
                              "peak_server_MB": round(memory.server_peak / 2**20),
                              "code_cells": run.code_cells, "widgets": len(run.widgets),
                              "slowdown": round(slowdown, 2),
                              "cells_timed": len(run.timings),
                              "longest_silent_cell": None if longest is None else {
                                  "cell": longest,
                                  "idle_s": round(idle_seconds(*run.timings[longest],
                                                               slowdown), 1),
                                  "wall_s": round(run.timings[longest][0], 1),
                                  "cpu_s": round(run.timings[longest][1], 1)}})
    failures = run.problems()
    if len(run.timings) != run.executed:
        failures.append(f"timed {len(run.timings)} of the {run.executed} code cells that ran: "
                        f"the silent-cell check needs every one")
    failures += course_problems(run, slowdown, name=name)

    titles = [p["title"] for o in run.outputs for p in o.plots]
    for want in FIGURES.get(stem[:2], []):
        if not any(t.startswith(want) for t in titles):
            failures.append(f"no figure titled {want!r} rendered (figures: {titles})")
    key = _key_widget(page, FIGURES.get(stem[:2], []))
    if key is not None:
        key.screenshot(path=str(artifacts / f"{stem}.png"))
    used = memory.peak + memory.server_peak
    if used > BUDGET:
        failures.append(
            f"kernel {memory.peak / 2**20:.0f} MB + server {memory.server_peak / 2**20:.0f} MB "
            f"at their peaks; on Binder ({BINDER_MEMORY / 2**30:.0f} GB for everything) that "
            f"risks a dead kernel")

    errors_before = len(run.kernel_errors)
    found = explorers(page)
    if len(found) != EXPLORERS.get(stem[:2], len(found)):
        failures.append(f"{len(found)} explorers on the page, expected {EXPLORERS[stem[:2]]}")
    for i in found:
        before = figure_signature(page, i)
        move_slider(page, i)
        after = wait_for_change(page, i, before)
        explorer_locator(page, i).screenshot(path=str(artifacts / f"{stem}-explorer{i}.png"))
        if after["value"] == before["value"]:
            failures.append(f"explorer {i}: the slider did not move")
        elif after["data"] == before["data"] or after["paths"] == before["paths"]:
            failures.append(f"explorer {i}: slider moved {before['value']} -> {after['value']}, "
                            f"but the figure did not change")
        elif after["readout"] == before["readout"]:
            failures.append(f"explorer {i}: the readout did not change")
    failures += [f"moving the sliders raised in the kernel: {e}"
                 for e in page.evaluate("window.__ttqlab.errors")[errors_before:]]
    assert not failures, f"{name}:\n" + "\n".join(failures)


def _key_widget(page, titles: list[str]):
    """The output holding the first expected figure (else the first widget)."""
    outputs = page.locator(".jp-OutputArea-output:has(.jupyter-widgets)")
    for want in titles:
        hit = outputs.filter(has_text=want)
        if hit.count():
            return hit.first
    return outputs.first if outputs.count() else None


# ------------------------------------------------------------------ the harness can fail


def _notebook(folder: Path, name: str, *cells: str) -> str:
    import nbformat  # here, not at collection: it is slow to import

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / name)
    return f"{folder.name}/{name}"


@pytest.fixture(scope="module")
def scratch(served) -> Path:
    """A folder of throwaway notebooks inside what JupyterLab serves (not the repository)."""
    return served.home / "harness-checks"


@pytest.mark.browser
@pytest.mark.binder
def test_errors_are_reported_and_warnings_are_not(page, lab, scratch):
    path = _notebook(scratch, "error.ipynb",
                     "import sys, warnings\nprint('progress', file=sys.stderr)\n"
                     "warnings.warn('just a warning')",
                     "1 / 0",
                     "print('never runs')")
    run = run_notebook(page, lab, path)
    assert [o.text for o in run.errors] == ["ZeroDivisionError: division by zero"]
    assert "ZeroDivisionError" in run.errors[0].traceback  # as the page shows it
    problems = run.problems()
    assert any("raised ZeroDivisionError" in p for p in problems)
    assert "only 2 of 3 code cells ran" in problems
    assert not any("warning" in p for p in problems), problems


@pytest.mark.browser
@pytest.mark.binder
def test_a_dead_kernel_is_reported(page, lab, scratch):
    # the pause lets the kernel flush cell 1's reply first: a SIGKILL right after it can
    # drop messages still queued in ZeroMQ, and the page would not know cell 1 ran
    path = _notebook(scratch, "dies.ipynb", "x = 1", "import os, signal, time\n"
                     "time.sleep(2)\n"
                     "os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does",
                     "print(x)")
    with pytest.raises(KernelDied, match="died while running code cell 2 of 3"):
        run_notebook(page, lab, path, timeout=180)


@pytest.mark.browser
@pytest.mark.binder
def test_a_widget_that_cannot_render_is_reported(page, lab, scratch):
    path = _notebook(scratch, "bad-widget.ipynb", """
        from IPython.display import display
        display({"application/vnd.jupyter.widget-view+json":
                 {"model_id": "no-such-model", "version_major": 2, "version_minor": 0},
                 "text/plain": "a widget"}, raw=True)
    """)
    run = run_notebook(page, lab, path, settle=15)
    assert not run.errors
    assert any("widget" in p for p in run.problems()), run.problems()


@pytest.mark.browser
@pytest.mark.binder
def test_a_slider_wired_to_nothing_leaves_the_figure_unchanged(page, lab, scratch):
    path = _notebook(scratch, "dead-slider.ipynb", """
        import ipywidgets as W
        import plotly.graph_objects as go
        fig = go.FigureWidget(go.Scatter(x=[0, 1, 2], y=[1, 3, 2]))
        fig.update_layout(title="not wired", height=300)
        W.VBox([W.HBox([W.FloatSlider(description="x", layout=W.Layout(width="480px"))]), fig])
    """, """
        import ipywidgets as W
        import plotly.graph_objects as go
        fig2 = go.FigureWidget(go.Scatter(x=[0, 1, 2], y=[1, 3, 2]))
        fig2.update_layout(title="wired", height=300)
        s = W.FloatSlider(description="y", layout=W.Layout(width="480px"))
        s.observe(lambda c: setattr(fig2.data[0], "y", [c.new, 3, 2]), names="value")
        W.VBox([W.HBox([s]), fig2])
    """)
    run = run_notebook(page, lab, path)
    assert not run.problems(), run.problems()
    changed = []
    for i in explorers(page):
        before = figure_signature(page, i)
        move_slider(page, i)
        after = wait_for_change(page, i, before, timeout=10)
        assert after["value"] != before["value"]
        changed.append(after["data"] != before["data"])
    assert changed == [False, True]


#: the explorers a notebook can show, each with the title its figure starts with
EXPLORER_TITLES = ("Ternary threshold explorer", "INQ power-of-two levels",
                   "INQ partition explorer", "Trade-off explorer")


@pytest.mark.browser
@pytest.mark.binder
def test_explorers_draw_while_later_cells_still_run(page, lab, scratch):
    """Run All: every explorer's figure has its data drawn while the kernel is still busy
    with a later cell (a student reads it during the next training run). A figure drawn
    empty and filled only by a later cell (the control) must be reported as empty."""
    flag = scratch / "busy-release"
    flag.unlink(missing_ok=True)
    path = _notebook(scratch, "busy.ipynb", """
        import torch
        from IPython.display import display
        import plotly.graph_objects as go
        from ttqlab import widgets
        w = torch.randn(32, 16, 3, 3, generator=torch.Generator().manual_seed(0)) * 0.05
        rows = [{"label": f"t={t}", "sparsity": s, "test_acc": a, "layers": {"c": s}}
                for t, s, a in [(0.05, 0.3, 0.9), (0.1, 0.5, 0.85), (0.2, 0.8, 0.7)]]
        for ex in (widgets.threshold_explorer(w), widgets.levels_explorer(w),
                   widgets.partition_explorer(w), widgets.tradeoff_explorer(rows)):
            display(ex)
        control = go.FigureWidget()
        control.update_layout(title="control: filled by a later cell", height=300)
        display(control)
    """, f"""
        import os, time   # the kernel stays busy until the test has looked (at most 180 s)
        t0 = time.time()
        while not os.path.exists({str(flag)!r}) and time.time() - t0 < 180:
            time.sleep(0.2)
    """, """
        control.add_scatter(y=[1, 3, 2])
    """)
    started = start_notebook(page, lab, path)
    try:
        deadline = time.monotonic() + 240
        while True:  # the explorers' cell has run; the waiting cell is running
            now = progress(page)
            if now["done"] >= 1 and now["status"] == "busy" and now["running"] == 1:
                break
            assert now["done"] < 2 and not now["errors"], f"the run went past the busy cell: {now}"
            assert time.monotonic() < deadline, f"the busy cell never started: {now}"
            time.sleep(0.25)
        # the page gets until the busy cell's end to draw; a view waiting for the kernel
        # to go idle would never draw here
        deadline = time.monotonic() + 120
        while True:
            figures = drawn_figures(page)
            drawn = {f["title"] for f in figures if f["subplots"] and min(f["subplots"]) > 0}
            if all(any(t.startswith(want) for t in drawn) for want in EXPLORER_TITLES) or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.5)
        still_busy = progress(page)
    finally:
        flag.touch()
    assert still_busy["status"] == "busy" and still_busy["running"] == 1, still_busy
    for want in EXPLORER_TITLES:
        hits = [f for f in figures if f["title"].startswith(want)]
        assert hits, f"no figure titled {want!r} on the page while busy: {figures}"
        assert min(hits[0]["subplots"]) > 0, (
            f"{want!r} shows empty axes while a later cell runs: {hits[0]}")
    control = [f for f in figures if f["title"].startswith("control")]
    assert control and max(control[0]["subplots"], default=0) == 0, (
        f"the harness did not see the control figure's empty axes: {control}")
    run = finish_run(page, lab, started, timeout=300)
    flag.unlink(missing_ok=True)
    # what this test is about: every cell ran and none raised. (The layout checks of
    # run.problems() belong to the course notebooks' test; anywidget's 2-s model
    # initialization timeout can fire on a loaded machine and is reported there too.)
    assert run.executed == run.code_cells and not run.errors, run.problems()


@pytest.mark.browser
@pytest.mark.binder
def test_missing_plotly_degrades_to_a_static_figure_in_the_page(page, lab, scratch):
    path = _notebook(scratch, "no-plotly.ipynb", """
        import sys
        sys.modules["plotly"] = None  # as if plotly were not installed
        import torch
        from ttqlab import widgets
        widgets.threshold_explorer(torch.randn(2000, generator=torch.Generator().manual_seed(0)))
    """)
    run = run_notebook(page, lab, path)
    assert not run.problems(), run.problems()
    text = " ".join(o.text for o in run.outputs)
    assert "needs plotly" in text and "static matplotlib figure" in text
    assert [im for o in run.outputs for im in o.images if im["w"] > 100], "no static figure"
    assert not run.widgets


@pytest.mark.browser
@pytest.mark.binder
def test_a_silent_cell_is_reported_and_one_with_a_tqdm_bar_is_not(page, lab, scratch):
    path = _notebook(scratch, "silent.ipynb", """
        import time
        t = time.process_time()
        while time.process_time() - t < 12:  # computes 12 s (CPU) and shows nothing
            pass
    """, """
        import time
        from tqdm.auto import tqdm
        for _ in tqdm(range(24), desc="kept"):
            time.sleep(0.5)
    """, """
        for _ in tqdm(range(24), desc="closed", leave=False):  # leaves a closed widget
            time.sleep(0.5)
    """, "time.sleep(0.2)")
    before = machine_slowdown()
    run = run_notebook(page, lab, path)
    slowdown = max(before, machine_slowdown())
    assert not run.problems(), run.problems()
    assert sorted(run.timings) == [0, 1, 2, 3], run.timings
    assert run.timings[0][1] > 11, f"the kernel's CPU time was not measured: {run.timings}"
    assert all(run.timings[i][0] > 11.5 for i in (1, 2)), run.timings  # long, with a bar
    assert run.timings[3][0] < 5, run.timings
    problems = course_problems(run, slowdown, name="silent.ipynb")
    assert len(problems) == 1, problems
    assert problems[0].startswith("silent.ipynb cell 0 ('import time')"), problems
    assert "no progress display" in problems[0] and "tqdm" in problems[0]
    assert [o.progress_bars for o in run.outputs if o.cell == 1 and o.widget] == [1]
    assert [o.closed for o in run.outputs if o.cell == 2 and o.widget] == [True]


@pytest.mark.browser
@pytest.mark.binder
def test_stderr_and_a_viz_call_without_a_figure_are_reported(page, lab, scratch):
    path = _notebook(scratch, "stderr-viz.ipynb", """
        import sys
        print("all is well")
        print("something went wrong", file=sys.stderr)
    """, """
        import matplotlib.pyplot as plt
        from types import SimpleNamespace

        def _draws():
            plt.figure(figsize=(3, 2)).gca().plot([0, 1], [1, 0])

        viz = SimpleNamespace(draws=_draws, forgets=lambda: None, ternary_fit=lambda: None)
    """, "viz.draws()", "viz.forgets()", "viz.ternary_fit()  # returns a Figure: not shown")
    run = run_notebook(page, lab, path)
    assert not run.errors, run.problems()
    assert [o.cell for o in run.outputs if "image/png" in o.mime] == [2], run.outputs
    problems = course_problems(run, 1.0, name="stderr-viz.ipynb")
    assert len(problems) == 2, problems
    assert problems[0].startswith("cell 0 wrote to stderr: something went wrong"), problems
    assert problems[1] == no_figure_message(3)


# ------------------------------------------------------------------ the server (no browser)


def test_cell_timings_pair_each_cell_with_its_execution_and_the_kernels_cpu():
    cpu = KernelCpu(lab=None)
    t = 1_700_000_000.0
    # kernel 11 is restarted as kernel 12 at t + 2; kernel 12 computes 3 s from t + 5 to t + 9
    cpu.samples = [(t, {11: 4.0}), (t + 2, {12: 0.5}), (t + 5, {12: 1.0}), (t + 9, {12: 4.0}),
                   (t + 10, {12: 4.1})]

    def iso(s):  # a message date, s seconds after t
        return datetime.datetime.fromtimestamp(t + s, datetime.timezone.utc).isoformat()

    cells = [{"index": 0, "type": "markdown", "count": None},
             {"index": 1, "type": "code", "count": 1}, {"index": 2, "type": "code", "count": 2},
             {"index": 3, "type": "code", "count": None}]  # never ran (an error before it)
    executions = [{"count": 1, "start": iso(-5), "end": iso(-4)},  # before the restart
                  {"count": 1, "start": iso(3), "end": iso(4)},
                  {"count": 2, "start": iso(5), "end": iso(9).replace("+00:00", "Z")},
                  {"count": 3, "start": iso(9.5), "end": None}]  # still running
    timings = cell_timings(cells, executions, cpu)
    assert sorted(timings) == [1, 2]
    assert timings[1] == pytest.approx((1.0, 0.5))  # samples at t + 2 and t + 5
    assert timings[2] == pytest.approx((4.0, 3.0))
    assert cpu.between(t + 1, t + 3) == 0.0  # no kernel in both samples: not a negative time


def test_a_busy_port_is_reported_plainly(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        lab = JupyterLab(sys.executable, tmp_path, port=port, workdir=tmp_path / "lab")
        with pytest.raises(PortInUse, match=f"port {port} on 127.0.0.1 is already in use"):
            lab.start()
        assert lab.process is None


def test_a_missing_chromium_says_how_to_install_it(tmp_path):
    problem = chromium_problem(str(tmp_path / "no-chromium"))
    assert "is not installed" in problem and "apt-get install -y chromium" in problem


def test_a_server_that_dies_at_start_is_reported_with_its_log(tmp_path):
    lab = JupyterLab(sys.executable, tmp_path / "no-such-folder", workdir=tmp_path / "lab")
    with pytest.raises(LabError, match="exited with code") as err:
        lab.start(timeout=120)
    assert "no-such-folder" in str(err.value)
