"""What `pip install ttqlab` gets: the wheel, the sdist, and the course inside them."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import ttqlab

ROOT = Path(__file__).resolve().parents[1]
COURSE = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))


def _run(*cmd, **kwargs):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the checkout to build from: builds write build/ and *.egg-info into their
    source folder, and test processes running side by side must not share those."""
    where = tmp_path_factory.mktemp("src") / "ttqlab"
    shutil.copytree(ROOT, where, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "data", "runs", "__pycache__",
        ".*_cache", ".hypothesis", "test-artifacts", "node_modules"))
    return where


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         str(source), "-w", str(out))
    (whl,) = out.glob("ttqlab-*.whl")
    return whl


@pytest.fixture(scope="module")
def unpacked(wheel, tmp_path_factory) -> Path:
    """The wheel's contents: put on PYTHONPATH, it is the installed package."""
    where = tmp_path_factory.mktemp("site")
    zipfile.ZipFile(wheel).extractall(where)
    return where


def test_the_wheel_holds_the_course_and_py_typed(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert COURSE and len(COURSE) >= 6
    for nb in COURSE:
        assert f"ttqlab/notebooks/{nb}" in names
    assert "ttqlab/notebooks/README.md" in names
    assert "ttqlab/py.typed" in names
    assert not any("solutions" in n for n in names), "the worked solutions stay out"
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


def test_one_version_everywhere(wheel):
    meta = zipfile.ZipFile(wheel).read(
        f"ttqlab-{ttqlab.__version__}.dist-info/METADATA").decode()
    assert f"\nVersion: {ttqlab.__version__}\n" in meta
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" in project["dynamic"] and "version" not in project
    assert "Framework :: Jupyter" in project["classifiers"]
    assert {"Documentation", "Issues", "Changelog"} <= set(project["urls"])
    citation = (ROOT / "CITATION.cff").read_text()
    assert f"\nversion: {ttqlab.__version__}\n" in citation, "CITATION.cff's version"


def test_the_torch_floor_is_a_tested_version():
    """The floor must be a version some test run used; this suite runs on >= it."""
    import torch
    from packaging.version import Version

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if d.startswith("torch")]
    floor = Version(spec.split(">=")[1])
    assert floor >= Version("2.13"), "raise the floor only to a version a test run has used"
    assert Version(torch.__version__.split("+")[0]) >= floor


def test_the_sdist_builds_the_same_wheel_and_leaves_tests_out(source, tmp_path):
    pytest.importorskip("build")
    _run(sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", str(tmp_path),
         str(source))
    (sdist,) = tmp_path.glob("ttqlab-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path, filter="data")
    top = names[0].split("/")[0]
    rel = {n.split("/", 1)[1] for n in names if "/" in n}
    assert not any(n.startswith(("tests/", "benchmarks/", "binder/")) for n in rel), (
        "the sdist leaves the test suite out (it needs a repository checkout)")
    assert {f"notebooks/{nb}" for nb in COURSE} <= rel
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         str(tmp_path / top), "-w", str(tmp_path / "w"))
    (whl,) = (tmp_path / "w").glob("*.whl")
    inside = set(zipfile.ZipFile(whl).namelist())
    assert {f"ttqlab/notebooks/{nb}" for nb in COURSE} <= inside


def test_course_from_the_wheel_copies_valid_notebooks(unpacked, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    dest = tmp_path / "my course"
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    r = _run(sys.executable, "-m", "ttqlab", "course", str(dest), env=env, cwd=tmp_path)
    assert "jupyter lab" in r.stdout and str(dest) in r.stdout
    where = _run(sys.executable, "-c", "import ttqlab.course as c; print(c.source())",
                 env=env, cwd=tmp_path).stdout.strip()
    assert Path(where) == unpacked / "ttqlab" / "notebooks", "read from the wheel"
    assert sorted(p.name for p in dest.glob("*.ipynb")) == COURSE
    for nb in COURSE:
        nbformat.validate(nbformat.read(dest / nb, as_version=4))
        assert (dest / nb).read_bytes() == (ROOT / "notebooks" / nb).read_bytes()
    assert json.loads((dest / ".ttqlab-course.json").read_text()).keys() >= set(COURSE)


@pytest.mark.notebook
def test_a_notebook_copied_from_the_wheel_runs(unpacked, tmp_path):
    """The shortest notebook, copied by `ttqlab course` and run against the wheel's ttqlab."""
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    from nbclient.exceptions import CellExecutionError

    env = {**os.environ, "PYTHONPATH": str(unpacked), "OMP_NUM_THREADS": "1",
           "TTQLAB_DATA": str(tmp_path / "data"),
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    _run(sys.executable, "-m", "ttqlab", "course", str(tmp_path / "c"), env=env, cwd=tmp_path)
    copied = sorted((tmp_path / "c").glob("[0-9]*.ipynb"), key=lambda p: p.stat().st_size)
    nb = nbformat.read(copied[0], as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(
        "import ttqlab, pathlib\n"
        f"assert pathlib.Path(ttqlab.__file__).is_relative_to({str(unpacked)!r})"))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path / "c")}})
    try:
        client.execute(env=env)
    except CellExecutionError as exc:
        pytest.fail(f"{copied[0].name} (from the wheel) raised:\n{exc}", pytrace=False)
