"""Shared fixtures and the test tiers' plumbing.

Tiers (README "Development", CONTRIBUTING.md): the fast tier is
``python -m pytest -n 2 -m "not slow and not notebook and not browser and not binder"``;
``python -m pytest`` (CI, .ci/run) runs everything.

Each course notebook executes once: when the session also runs it in JupyterLab
(``tests/launch/test_browser.py``, which checks the same and more) and the browser can run,
its nbclient run (``tests/test_notebooks.py::test_notebook_runs_without_errors``) skips
(`pytest_collection_finish`, tests/notebook_runs.py). Without the browser tests
(``-m "not browser"``, no Chromium, ``TTQLAB_SKIP_BROWSER`` set) nbclient runs every notebook.

Collection stays light: nothing here imports more than torch, and what is expensive to
decide (whether torch.compile works on this machine: it imports TorchDynamo and compiles)
is decided when the first test that needs it runs (``@pytest.mark.needs_compile``), not while
collecting.
"""

import functools
import os
from pathlib import Path

import pytest
import torch

# One intra-op thread per test process: pytest-xdist already runs one worker per core, and
# two threads per worker on a 2-core machine only spin against each other.
torch.set_num_threads(1)

LAUNCH = Path(__file__).resolve().parent / "launch"


@functools.cache
def compile_problem() -> str | None:
    """None if ``torch.compile`` (backend aot_eager) works here, else why not."""
    try:
        torch._dynamo.reset()
        f = torch.compile(lambda x: x * 2 + 1, backend="aot_eager")
        if not torch.equal(f(torch.ones(2)), torch.full((2,), 3.0)):
            return "torch.compile computed a wrong result"
    except Exception as e:  # no compiler toolchain, unsupported Python, ...
        return f"torch.compile is not supported on this platform ({type(e).__name__}: {e})"
    return None


def pytest_runtest_setup(item):
    if item.get_closest_marker("needs_compile") is not None:
        problem = compile_problem()
        if problem is not None:
            pytest.skip(problem)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist with ``--dist loadgroup``, the launch tests (one Binder build, one
    JupyterLab server and one Chromium per session) stay in one worker, so they share those
    servers instead of starting one per worker. The nbclient notebook runs are a group of
    their own (one kernel at a time beside the other worker's tests); in CI they skip, as the
    browser executes the course (`pytest_collection_finish`)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(LAUNCH):
            item.add_marker(pytest.mark.xdist_group("launch"))
        elif item.get_closest_marker("notebook") is not None:
            item.add_marker(pytest.mark.xdist_group("notebooks"))


def _browser_problem() -> str | None:
    # tests/launch is on sys.path: its tests were collected (tests/notebook_runs.py)
    from jupyter_harness import chromium_problem

    return chromium_problem()


def pytest_collection_finish(session):
    """Skip the nbclient run of every course notebook the browser executes in this session
    (`notebook_runs.nbclient_runs_to_skip`: after ``-m`` / ``-k`` deselection; on every
    xdist worker, which each collect the whole session)."""
    from notebook_runs import SKIP_REASON, nbclient_runs_to_skip

    skips = nbclient_runs_to_skip([item.name for item in session.items], _browser_problem,
                                  os.environ)
    for item in session.items:
        if item.name in skips:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def digits_small():
    """A 600-sample slice of scikit-learn's digits (the table shipped inside ttqlab) as
    (train, test) tensor pairs."""
    from ttqlab.data import _package_arrays

    table = _package_arrays("digits.npz")
    x = torch.tensor(table["images"], dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0 - 0.3
    y = torch.tensor(table["target"], dtype=torch.int64)
    return (x[:450], y[:450]), (x[450:600], y[450:600])
