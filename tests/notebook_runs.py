"""Each course notebook executes once per test session: in JupyterLab when the browser runs.

``tests/launch/test_browser.py::test_notebook_in_jupyterlab[NAME.ipynb]`` runs a course
notebook in JupyterLab and checks what ``tests/test_notebooks.py::
test_notebook_runs_without_errors[NAME]`` checks with nbclient (no error, nothing on stderr,
a figure for every ``viz`` call, no silent cell over ``SILENT_LIMIT``) and more. When a
session holds both and the browser can run (Chromium and Playwright are there, and
``TTQLAB_SKIP_BROWSER`` is unset, as in CI), the nbclient run skips (`nbclient_runs_to_skip`;
tests/conftest.py applies it). Any other session (``-m "not browser"``, no Chromium, the
notebook tests alone) executes every notebook with nbclient.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

BROWSER_TEST = "test_notebook_in_jupyterlab"
NBCLIENT_TEST = "test_notebook_runs_without_errors"
SKIP_REASON = "executed in JupyterLab by tests/launch/test_browser.py, which checks the same"
_BROWSER_ITEM = re.compile(rf"{BROWSER_TEST}\[(.+)\]")


def nbclient_runs_to_skip(names: Iterable[str], browser_problem: Callable[[], str | None],
                          environ: Mapping[str, str]) -> set[str]:
    """The names of the session's ``test_notebook_runs_without_errors[STEM]`` items whose
    notebook ``test_notebook_in_jupyterlab[STEM.ipynb]`` also runs in this session.

    ``names``: the session's final items (after ``-m`` / ``-k`` deselection), by
    ``item.name``. ``browser_problem()``: why the browser cannot run (None when it can; called
    only when there is something to skip). ``environ``: with ``TTQLAB_SKIP_BROWSER`` set,
    nothing is skipped (the browser tests may skip).
    """
    names = set(names)
    in_browser = {Path(m.group(1)).stem for n in names if (m := _BROWSER_ITEM.fullmatch(n))}
    skips = {f"{NBCLIENT_TEST}[{stem}]" for stem in in_browser} & names
    if not skips or "TTQLAB_SKIP_BROWSER" in environ or browser_problem() is not None:
        return set()
    return skips
