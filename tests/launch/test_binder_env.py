"""The Binder environment: ``binder/`` is complete and pinned, and it builds.

The first tests read the files (instant). The others build the environment the way
mybinder.org does (a fresh environment from ``binder/`` alone, then ``postBuild``) and
check what a student gets: a CPU-only torch, exactly the pinned versions, a consistent
environment, ttqlab importable from the repository, and the JupyterLab extensions that
display widgets and plotly figures. Every notebook then runs in it, in a browser:
``test_browser.py`` serves JupyterLab from this same environment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from binder_env import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

BINDER = ROOT / "binder"
tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")


def pins() -> dict[str, Version]:
    """``name -> version`` of every line of binder/requirements.txt (each must be ``==``)."""
    out = {}
    for line in (BINDER / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith("-"), (
            f"binder/requirements.txt: {line!r}; pip applies an index or option given here to "
            f"every package (see the file's header); put it in postBuild")
        req = Requirement(line)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"pin {line!r} with =="
        out[canonicalize_name(req.name)] = Version(spec[0].version)
    return out


def torch_pin() -> str:
    m = re.search(r'"torch==([^"]+)"', (BINDER / "postBuild").read_text())
    assert m, "binder/postBuild must install a pinned torch"
    return m.group(1)


def test_runtime_names_a_python_version():
    assert re.fullmatch(r"python-3\.\d+", (BINDER / "runtime.txt").read_text().strip())


def test_torch_is_a_pinned_cpu_build_of_the_readme_version():
    version = torch_pin()
    assert version.endswith("+cpu"), "a CUDA build does not fit in Binder's 2 GB"
    readme = (ROOT / "README.md").read_text()
    assert f"torch=={version.removesuffix('+cpu')}" in readme
    assert "torch" not in pins()


def test_every_dependency_of_the_library_and_notebooks_is_pinned():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = pins()
    needed = [Requirement(r) for r in meta["dependencies"]
              + meta["optional-dependencies"]["notebooks"]]
    for req in needed:
        name = canonicalize_name(req.name)
        if name == "torch":
            assert req.specifier.contains(Version(torch_pin()), prereleases=True)
            continue
        assert name in pinned, f"{req} (pyproject.toml) is not pinned in binder/requirements.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"binder/requirements.txt pins {name}=={pinned[name]}, outside {req}")


def test_readme_links_every_notebook_on_binder():
    """The badge opens the first notebook; each notebook has a link; no link is stale."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    repo = meta["urls"]["Homepage"].removeprefix("https://github.com/")
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\(https://mybinder\.org/v2/gh/([^/]+/[^/]+)/HEAD\?urlpath=lab/tree/"
                       r"(notebooks/[^)\s]+\.ipynb)\)", readme)
    assert links, "README has no Binder link"
    assert {r for r, _ in links} == {repo}, f"Binder links must point at {repo} (pyproject)"
    linked = [path for _, path in links]
    notebooks = sorted(f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))
    assert linked[0] == notebooks[0], "the badge at the top opens the first notebook"
    assert set(linked) == set(notebooks), (
        f"stale: {sorted(set(linked) - set(notebooks))}, "
        f"missing: {sorted(set(notebooks) - set(linked))}")
    assert readme.index(linked[0]) < readme.index("## Quick start"), "badge near the top"


@pytest.mark.parametrize("name", ["postBuild", "start"])
def test_postbuild_and_start_are_executable_scripts(name):
    path = BINDER / name
    assert path.read_text().startswith("#!/bin/bash\n")
    assert path.stat().st_mode & 0o111, f"chmod +x binder/{name}"


@pytest.mark.parametrize(("files", "given", "want"), [
    ({"cpu.max": "100000 100000\n"}, None, "1"),            # cgroup v2, a 1-CPU quota
    ({"cpu.max": "50000 100000\n"}, None, "1"),             # half a CPU rounds up to 1
    ({"cpu.max": "max 100000\n"}, None, None),              # no quota: torch decides
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, None, "1"),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None, None),
    ({"cpu.max": "100000 100000\n"}, "3", "3"),             # the user's choice wins
    ({}, None, None),                                       # no cgroup files at all
    ({"cpu.max": "400000 100000\n"}, "CPU_LIMIT=1.0", "1"),  # JupyterHub's limit first
    ({}, "CPU_LIMIT=0.5", "1"),                             # a fraction rounds up
    ({}, "CPU_LIMIT=2", "2"),
    ({"cpu.max": "100000 100000\n"}, "CPU_LIMIT=", "1"),     # empty: the cgroup decides
    ({}, "CPU_LIMIT=lots", None),                           # not a number: ignored
])
def test_start_caps_torch_threads_at_the_cpu_quota(tmp_path, files, given, want):
    """binder/start: a container that sees all the host's cores but has a 1-CPU quota must
    not run one PyTorch thread per host core."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["TTQLAB_CGROUP_ROOT"] = str(tmp_path)
    env.pop("CPU_LIMIT", None)
    if given and given.startswith("CPU_LIMIT="):
        env["CPU_LIMIT"] = given.split("=", 1)[1]
    elif given:
        env["OMP_NUM_THREADS"] = given
    if want is not None and "OMP_NUM_THREADS" not in env and int(want) >= len(
            os.sched_getaffinity(0)):  # already at most the quota: nothing to cap
        want = None
    out = subprocess.run([str(BINDER / "start"), sys.executable, "-c",
                          "import os; print(os.environ.get('OMP_NUM_THREADS'))"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(want)


# ------------------------------------------------------------------ the built environment


@pytest.mark.binder
def test_the_environment_builds_from_binder_alone(binder_env):
    took = ", ".join(f"{k} {v:.0f} s" for k, v in binder_env.seconds.items())
    print(f"Binder environment in {binder_env.dest} ({'reused' if binder_env.reused else 'built'}"
          f": {took})")
    assert binder_env.python.exists()


@pytest.mark.binder
def test_torch_is_the_cpu_build(binder_env):
    out = binder_env.run("python", "-c", "import torch; print(torch.__version__, "
                         "torch.version.cuda, torch.cuda.is_available())").stdout.split()
    assert out == [torch_pin(), "None", "False"]


@pytest.mark.binder
def test_exactly_the_pinned_versions_are_installed(binder_env):
    listed = json.loads(binder_env.run("python", "-m", "pip", "list", "--format=json").stdout)
    installed = {canonicalize_name(p["name"]): Version(p["version"]) for p in listed}
    wrong = {n: (str(v), str(installed.get(n))) for n, v in pins().items()
             if installed.get(n) != v}
    assert not wrong, f"pinned vs installed: {wrong}"
    check = binder_env.run("python", "-m", "pip", "check", check=False)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.binder
def test_ttqlab_is_the_repository_copy(binder_env):
    where = binder_env.run("python", "-c", "import ttqlab; print(ttqlab.__file__)",
                           cwd=binder_env.home / "notebooks").stdout.strip()
    assert where == str(binder_env.home / "ttqlab" / "__init__.py")


@pytest.mark.binder
def test_jupyterlab_has_the_widget_and_plotly_extensions(binder_env):
    out = binder_env.run("jupyter", "labextension", "list")
    text = out.stdout + out.stderr
    for ext in ("@jupyter-widgets/jupyterlab-manager", "anywidget", "jupyterlab-plotly"):
        line = next((ln for ln in text.splitlines() if ext in ln), "")
        assert "enabled" in line and "OK" in line, f"{ext} missing or broken:\n{text}"
    settings = binder_env.run("python", "-c", "import sys; print(sys.prefix)").stdout.strip()
    overrides = json.loads((binder_env.venv / "share/jupyter/lab/settings/overrides.json")
                           .read_text())
    assert settings and overrides["@jupyterlab/apputils-extension:notification"][
        "fetchNews"] == "false"


@pytest.mark.binder
def test_widgets_are_interactive_there(binder_env):
    """The notebooks' widget path (not the static fallback) is what Binder users get."""
    out = binder_env.run("python", "-c", "from ttqlab import widgets; "
                         "print(widgets.missing_dependencies())").stdout.strip()
    assert out == "None"


def test_missing_widget_packages_degrade_with_a_message(tmp_path):
    """Without plotly / anywidget the explorers print why and return a matplotlib figure."""
    code = ("import sys\nfor m in ('plotly', 'anywidget'): sys.modules[m] = None\n"
            "import torch\nfrom ttqlab import widgets\n"
            "fig = widgets.threshold_explorer(torch.randn(500))\n"
            "print(type(fig).__module__, type(fig).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path, env={**os.environ, "MPLBACKEND": "Agg"})
    assert "needs plotly, anywidget" in out.stdout
    assert "showing a static matplotlib figure instead" in out.stdout
    assert out.stdout.strip().endswith("matplotlib.figure Figure")
