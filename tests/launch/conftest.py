"""Fixtures for the launch tests: the Binder environment, JupyterLab served from it, Chromium.

The Binder launch is simulated end to end once per session: `binder_env` builds the
environment from ``binder/`` alone (a few minutes), `lab` starts JupyterLab from it on
the repository copy it serves, and the browser tests run every notebook there.

Environment variables (CI sets none of them):

* ``TTQLAB_BINDER_ENV=DIR``: build the environment in DIR and reuse it on later runs while
  ``binder/`` and ``pyproject.toml`` are unchanged (quick local re-runs).
* ``TTQLAB_SKIP_BROWSER=1``: skip the browser tests when Chromium is missing, for a local run
  on a machine without it. Without it a missing Chromium FAILS them: they are part of what
  the project promises (``.ci/run`` installs Chromium).
* ``TTQLAB_LAB_PYTHON=PATH``: serve JupyterLab from this interpreter's environment (e.g. the
  development venv) instead of a Binder build, for a quick local run of the browser tests
  alone: they then test the page, not the Binder environment (its own tests,
  ``test_binder_env.py``, still build it). The repository is copied as Binder would serve it;
  the kernels import ttqlab from wherever that environment installed it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from binder_env import ROOT, BinderEnv, build, copy_repo
from jupyter_harness import JupyterLab, chromium_problem, launch_chromium
from test_notebooks import THREADS  # tests/ is on sys.path (its conftest.py)

ARTIFACTS = ROOT / "test-artifacts" / "browser"
VIEWPORT = {"width": 1366, "height": 900}  # a common laptop screen


@pytest.fixture(scope="session")
def binder_env():
    cached = os.environ.get("TTQLAB_BINDER_ENV")
    if cached:
        yield build(Path(cached).expanduser(), reuse=True)
        return
    with tempfile.TemporaryDirectory(prefix="ttqlab-binder-") as tmp:
        yield build(Path(tmp))


@pytest.fixture(scope="session")
def served(request) -> BinderEnv:
    """The environment JupyterLab serves from: the Binder build, or with
    ``TTQLAB_LAB_PYTHON`` that interpreter's environment and a fresh copy of the repository."""
    python = os.environ.get("TTQLAB_LAB_PYTHON")
    if not python:
        return request.getfixturevalue("binder_env")
    python = Path(python).expanduser().absolute()
    if not python.exists():
        pytest.fail(f"TTQLAB_LAB_PYTHON={python} does not exist: name a Python interpreter "
                    f"whose environment has JupyterLab, or unset it to build Binder's",
                    pytrace=False)
    dest = Path(tempfile.mkdtemp(prefix="ttqlab-lab-"))
    request.addfinalizer(lambda: shutil.rmtree(dest, ignore_errors=True))
    copy_repo(ROOT, dest / "home")
    return BinderEnv(dest, dest / "home", python.parents[1], python, {}, True)


@pytest.fixture(scope="session")
def lab(served: BinderEnv):
    """JupyterLab started from the served environment, serving its repository copy. Its
    kernels run one PyTorch thread, as the nbclient runs do (tests/test_notebooks.py
    ``THREADS``) and as ``binder/start`` caps a 1-CPU Binder session: kernel CPU time then
    equals the work done, which the silent-cell check needs, and a loaded CI machine does
    not slow the kernel's threads down waiting for each other."""
    with JupyterLab(served.python, served.home, workdir=served.dest / "lab-session",
                    env={"OMP_NUM_THREADS": THREADS}) as server:
        yield server


@pytest.fixture(scope="session")
def browser():
    problem = chromium_problem()
    if problem:
        if os.environ.get("TTQLAB_SKIP_BROWSER") == "1":
            pytest.skip(f"TTQLAB_SKIP_BROWSER=1: {problem}")
        pytest.fail(f"the browser tests need a real Chromium: {problem} (for a local run "
                    f"without it, set TTQLAB_SKIP_BROWSER=1; CI never does)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = launch_chromium(pw)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (no cookies, no storage) and page, at laptop size."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
