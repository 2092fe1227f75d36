"""How long a Binder-style launch takes: install, JupyterLab start, each notebook in a browser.

    python -m benchmarks.launch [--env DIR] [--notebooks 01 03] [--out FILE]

1. install: a fresh environment from ``binder/`` alone, as mybinder.org builds it
   (``pip install -r binder/requirements.txt``, then ``binder/postBuild``), timed step by
   step. ``--env DIR`` reuses an environment built there before (its install is then not
   timed; the rows say so).
2. JupyterLab start: process start until ``/api/status`` answers, then until the JupyterLab
   page is usable in headless Chromium (Debian's ``chromium``).
3. Each notebook: open it, "Restart Kernel and Run All Cells", wait until the kernel is idle
   and every cell has run (the browser tests' harness, ``tests/launch/jupyter_harness.py``);
   wall time and the kernel's peak resident memory (Binder allows 2 GB in all).

Times depend on the machine's load (the JSON records the load average); on a shared 2-core
machine they vary by a factor of two or more between runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import ttqlab
from benchmarks import RESULTS, write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "launch"))

from binder_env import build  # noqa: E402
from jupyter_harness import (  # noqa: E402
    JupyterLab,
    LabError,
    PeakMemory,
    launch_chromium,
    run_notebook,
)


def _lab_ready_seconds(browser, lab: JupyterLab) -> float:
    """From navigating to /lab until JupyterLab's shell is restored and usable."""
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    t0 = time.perf_counter()
    page.goto(lab.url("lab", reset=""))
    page.wait_for_function("window.jupyterapp && window.jupyterapp.started", timeout=120_000)
    page.evaluate("window.jupyterapp.restored.then(() => true)")
    page.wait_for_selector(".jp-DirListing-item", timeout=120_000)  # the file browser is filled
    seconds = time.perf_counter() - t0
    page.close()
    return seconds


def bench(env_dir: Path | None, notebooks: list[str]) -> list[dict]:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ttqlab-launch-") as tmp:
        dest = env_dir or Path(tmp) / "binder"
        env = build(dest, reuse=env_dir is not None)
        if env.reused:
            rows.append({"step": f"install (reused {dest}; not timed)", "seconds": None})
        else:
            for key, label in (("venv", "install: create the environment (runtime.txt)"),
                               ("requirements", "install: pip install -r binder/requirements.txt"),
                               ("postBuild", "install: binder/postBuild (torch+cpu, ttqlab)")):
                rows.append({"step": label, "seconds": round(env.seconds[key], 1)})
            rows.append({"step": "install: total", "seconds": round(sum(env.seconds.values()), 1)})

        from playwright.sync_api import sync_playwright

        with JupyterLab(env.python, env.home, workdir=Path(tmp) / "lab") as lab, \
                sync_playwright() as pw:
            rows.append({"step": "JupyterLab: server answers /api/status",
                         "seconds": round(lab.start_seconds, 1)})
            browser = launch_chromium(pw)
            rows.append({"step": "JupyterLab: page usable in Chromium",
                         "seconds": round(_lab_ready_seconds(browser, lab), 1)})
            for name in notebooks:
                context = browser.new_context(viewport={"width": 1366, "height": 900})
                page = context.new_page()
                with PeakMemory(lab) as memory:
                    try:
                        run = run_notebook(page, lab, f"notebooks/{name}")
                    except LabError as err:  # a dead kernel, a timeout: say so, go on
                        print(f"  {name}: {err}", file=sys.stderr)
                        rows.append({"step": f"run all: {name} FAILED", "problems": 1})
                        context.close()
                        continue
                problems = run.problems()
                rows.append({"step": f"open (kernel idle): {name}",
                             "seconds": round(run.open_seconds, 1)})
                rows.append({"step": f"run all: {name}", "seconds": round(run.seconds, 1),
                             "peak kernel MB": round(memory.peak / 2**20),
                             "peak server MB": round(memory.server_peak / 2**20),
                             "cells": run.code_cells, "widgets": len(run.widgets),
                             "problems": len(problems)})
                for p in problems:
                    print(f"  {name}: {p.splitlines()[0]}", file=sys.stderr)
                context.close()
            browser.close()
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.launch",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--env", type=Path, default=None,
                    help="reuse (or build once into) this Binder environment folder")
    ap.add_argument("--notebooks", nargs="*", default=None, metavar="PREFIX",
                    help="only notebooks whose name starts with these (default: all)")
    ap.add_argument("--out", type=Path, default=RESULTS / "launch.json",
                    help="where the rows go as JSON (default: %(default)s)")
    args = ap.parse_args(argv)
    names = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))
    if args.notebooks:
        names = [n for n in names if n.startswith(tuple(args.notebooks))]
    rows = bench(args.env, names)
    cols = ["step", "seconds", "peak kernel MB", "peak server MB", "cells", "widgets",
            "problems"]
    print(ttqlab.stats.Table(rows, cols, title="Binder-style launch: install, start, run all"))
    write_results(args.out, "launch", rows, argv)
    return rows


if __name__ == "__main__":
    main()
