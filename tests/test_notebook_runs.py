"""Which nbclient notebook runs skip because the browser executes the notebook
(tests/notebook_runs.py, applied by tests/conftest.py). No browser needed."""

import os
import subprocess
import sys
from pathlib import Path

from notebook_runs import BROWSER_TEST, NBCLIENT_TEST, SKIP_REASON, nbclient_runs_to_skip

ROOT = Path(__file__).resolve().parents[1]


def _names(browser=(), nbclient=()):
    return ([f"{BROWSER_TEST}[{n}.ipynb]" for n in browser]
            + [f"{NBCLIENT_TEST}[{n}]" for n in nbclient] + ["test_something_else"])


def _never_asked():
    raise AssertionError("the browser check should not run here")


def test_the_browser_run_replaces_the_nbclient_run_of_the_same_notebook():
    names = _names(browser=["01_why", "02_twn"], nbclient=["01_why", "02_twn", "03_ttq"])
    assert nbclient_runs_to_skip(names, lambda: None, {}) == {
        f"{NBCLIENT_TEST}[01_why]", f"{NBCLIENT_TEST}[02_twn]"}  # 03 runs under nbclient


def test_without_the_browser_tests_nbclient_runs_everything():  # -m "not browser"
    assert nbclient_runs_to_skip(_names(nbclient=["01_why", "02_twn"]), _never_asked, {}) == set()
    # a browser run of another notebook skips nothing here
    assert nbclient_runs_to_skip(_names(browser=["02_twn"], nbclient=["01_why"]), _never_asked,
                                 {}) == set()


def test_nothing_skips_when_the_browser_cannot_run():
    names = _names(browser=["01_why"], nbclient=["01_why"])
    assert nbclient_runs_to_skip(names, lambda: "Chromium is not installed", {}) == set()
    assert nbclient_runs_to_skip(names, _never_asked, {"TTQLAB_SKIP_BROWSER": "1"}) == set()


def test_the_real_test_names_pair_up_and_the_skip_says_why(tmp_path, monkeypatch):
    """The names it matches are those pytest gives the two tests, and the session hook marks
    the nbclient runs skipped where the browser can run (a plugin prints the marks that a
    collect-only run of the two test files ends with)."""
    plugin = tmp_path / "report_skips.py"
    plugin.write_text(
        "import pytest\n\n"
        "@pytest.hookimpl(trylast=True)\n"
        "def pytest_collection_finish(session):\n"
        "    for item in session.items:\n"
        "        skip = item.get_closest_marker('skip')\n"
        "        print('ITEM', item.name, '|', skip.kwargs.get('reason') if skip else '-')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop("TTQLAB_SKIP_BROWSER", None)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "-p", "report_skips", "-k", f"{BROWSER_TEST} or {NBCLIENT_TEST}",
         "tests/test_notebooks.py", "tests/launch/test_browser.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    items = dict(line.removeprefix("ITEM ").split(" | ", 1) for line in out.stdout.splitlines()
                 if line.startswith("ITEM "))
    stems = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))
    assert stems and all(f"{BROWSER_TEST}[{s}.ipynb]" in items for s in stems), items
    nbclient = {n: why for n, why in items.items() if n.startswith(NBCLIENT_TEST)}
    assert sorted(nbclient) == sorted(f"{NBCLIENT_TEST}[{s}]" for s in stems)
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "launch"))
    from jupyter_harness import chromium_problem

    expected = SKIP_REASON if chromium_problem() is None else "-"
    assert set(nbclient.values()) == {expected}, nbclient
