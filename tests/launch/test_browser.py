"""Every course notebook, run in JupyterLab in a real (headless Chromium) browser.

JupyterLab is served from the Binder environment (see conftest.py). For each notebook:
open it fresh, "Restart Kernel and Run All Cells", wait until the kernel is idle and every
code cell has run, then assert: no error output, every widget view rendered (no "Error
displaying widget" / "Loading widget..."), every plotly figure drew its traces, nothing
overflows its cell, and the kernel stayed within Binder's memory. Then every interactive
explorer is moved with the mouse and its figure must change. Screenshots of each notebook's
key widget land in ``test-artifacts/browser/``.

The second half checks that the harness itself can fail: a notebook that raises, a kernel
that dies, a widget that cannot be displayed, a slider wired to nothing, a busy port.
"""

from __future__ import annotations

import json
import socket
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
from binder_env import ROOT
from jupyter_harness import (
    JupyterLab,
    KernelDied,
    LabError,
    PeakMemory,
    PortInUse,
    chromium_problem,
    explorer_locator,
    explorers,
    figure_signature,
    move_slider,
    run_notebook,
    wait_for_change,
)

NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))

#: The plotly figures each notebook must show, by title prefix (the first is its key widget,
#: screenshotted). Notebooks not listed here are still run and checked in full; listing them
#: makes a figure that silently disappears a failure.
FIGURES = {
    "01": ["Ternary threshold explorer"],
    "02": ["TWN training (seed 0), live"],
    "03": ["TTQ fine-tuning, live"],
    "04": ["TTQ sparsity trade-offs"],
    "05": ["INQ power-of-two levels", "INQ partition explorer"],
    "06": [],
}
#: How many explorers (a slider above a plotly figure) each notebook shows; each is moved.
EXPLORERS = {"01": 1, "02": 0, "03": 0, "04": 1, "05": 2, "06": 0}
BINDER_MEMORY = 2 * 2**30  # mybinder.org's limit, for everything in the container
BUDGET = 1.5 * 2**30  # what the server and the notebook's kernel may use of it together

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
    with PeakMemory(lab) as memory:
        run = run_notebook(page, lab, f"notebooks/{name}")
    page.screenshot(path=str(artifacts / f"{stem}-page.png"))
    _record(artifacts, name, {"seconds": round(run.seconds, 1),
                              "peak_kernel_MB": round(memory.peak / 2**20),
                              "peak_server_MB": round(memory.server_peak / 2**20),
                              "code_cells": run.code_cells, "widgets": len(run.widgets)})
    failures = run.problems()

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
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / name)
    return f"{folder.name}/{name}"


@pytest.fixture(scope="module")
def scratch(binder_env) -> Path:
    """A folder of throwaway notebooks inside what JupyterLab serves (not the repository)."""
    return binder_env.home / "harness-checks"


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


# ------------------------------------------------------------------ the server (no browser)


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
