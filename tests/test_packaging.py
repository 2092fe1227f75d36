"""What `pip install ttqlab` gets: the wheel, the sdist, and the course inside them. The
slow test installs the wheel into a fresh virtual environment and runs it there as a user
would (the unpacked wheel on PYTHONPATH would hide a missing file: the checkout's editable
install answers for it)."""

import hashlib
import json
import os
import re
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


def _run(*cmd, timeout=300, **kwargs):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout}\n{r.stderr}"
    return r


def _source_modules(root: Path) -> set[str]:
    """The dotted names of every module under root/ttqlab/ (a package's is its own name)."""
    out = set()
    for f in (root / "ttqlab").rglob("*.py"):
        if "__pycache__" in f.parts:
            continue
        parts = f.relative_to(root).with_suffix("").parts
        out.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def _wheel_modules(whl: Path) -> set[str]:
    names = zipfile.ZipFile(whl).namelist()
    out = set()
    for n in names:
        if n.startswith("ttqlab/") and n.endswith(".py"):
            parts = n[:-3].split("/")
            out.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def _contents(whl: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(whl) as z:
        return {n: z.read(n) for n in z.namelist()}


def _build(hook: str, src: Path, out: Path) -> Path:
    """Run setuptools' PEP 517 hook (build_wheel or build_sdist) in src, without isolation."""
    out.mkdir(parents=True, exist_ok=True)
    r = _run(sys.executable, "-c",
             f"import sys, setuptools.build_meta as b; print(b.{hook}(sys.argv[1]))", str(out),
             cwd=src)
    return out / r.stdout.strip().splitlines()[-1]


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
    """The wheel built from the checkout (what is uploaded)."""
    return _build("build_wheel", source, tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def sdist(source, tmp_path_factory) -> Path:
    return _build("build_sdist", source, tmp_path_factory.mktemp("sdist"))


@pytest.fixture(scope="module")
def sdist_wheel(sdist, tmp_path_factory) -> Path:
    """The wheel pip builds from the sdist (what `pip install ttqlab` gets where no wheel fits)."""
    where = tmp_path_factory.mktemp("sdist-tree")
    with tarfile.open(sdist) as tar:
        tar.extractall(where, filter="data")
    (top,) = where.iterdir()
    return _build("build_wheel", top, tmp_path_factory.mktemp("sdist-wheel"))


def test_the_wheel_holds_the_course_and_py_typed(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert COURSE and len(COURSE) >= 6
    for nb in COURSE:
        assert f"ttqlab/notebooks/{nb}" in names
    assert "ttqlab/notebooks/README.md" in names
    assert "ttqlab/py.typed" in names
    assert not any("solutions" in n for n in names), "the worked solutions stay out"
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


def test_the_wheel_ships_the_default_datasets_and_needs_only_the_core(wheel):
    """The offline datasets ship pinned, with their credits and licenses; the core install
    needs torch, numpy, tqdm and safetensors, and the generators are the datasets extra."""
    from ttqlab import data

    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for name, (sha256, size) in data.PACKAGE_DATA.items():
            blob = z.read(f"ttqlab/_data/{name}")
            assert (len(blob), hashlib.sha256(blob).hexdigest()) == (size, sha256), name
        meta = z.read(f"ttqlab-{ttqlab.__version__}.dist-info/METADATA").decode()
    assert {"ttqlab/_data/README.md", "ttqlab/_data/LICENSE-mnist1d",
            "ttqlab/_data/LICENSE-scikit-learn"} <= names
    requires = re.findall(r"^Requires-Dist: (.*)$", meta, re.M)
    core = sorted(re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower()
                  for r in requires if "extra ==" not in r)
    assert core == ["numpy", "safetensors", "torch", "tqdm"], requires
    datasets = sorted(re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower()
                      for r in requires if re.search(r"extra == .datasets.", r))
    assert datasets == ["mnist1d", "scikit-learn"], requires


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


def test_the_wheel_holds_every_module_of_the_source_tree(wheel):
    missing = _source_modules(ROOT) - _wheel_modules(wheel)
    assert not missing, (
        f"the wheel lacks {sorted(missing)}: a package under ttqlab/ missing from "
        "[tool.setuptools] packages in pyproject.toml?")


def test_the_sdist_builds_the_same_wheel_and_leaves_tests_out(sdist, wheel, sdist_wheel):
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    rel = {n.split("/", 1)[1] for n in names if "/" in n}
    assert not any(n.startswith(("tests/", "benchmarks/", "binder/")) for n in rel), (
        "the sdist leaves the test suite out (it needs a repository checkout)")
    assert not any("solutions" in n for n in rel), "the worked solutions stay out"
    assert {f"notebooks/{nb}" for nb in COURSE} <= rel
    missing = {f.relative_to(ROOT).as_posix() for f in (ROOT / "ttqlab").rglob("*.py")
               if "__pycache__" not in f.parts} - rel
    assert not missing, f"the sdist lacks {sorted(missing)}"
    from_checkout, from_sdist = _contents(wheel), _contents(sdist_wheel)
    assert sorted(from_sdist) == sorted(from_checkout), (
        "the wheel built from the sdist holds other files than the one built from the checkout: "
        f"only from the sdist {sorted(set(from_sdist) - set(from_checkout))}, "
        f"only from the checkout {sorted(set(from_checkout) - set(from_sdist))}")
    differ = [n for n in from_checkout if from_checkout[n] != from_sdist[n]]
    assert not differ, f"the two wheels' copies differ: {differ}"


#: The course notebook the install test runs: the fastest one (README "Notebook run times").
FASTEST_NOTEBOOK = "09_your_own_model.ipynb"
KERNEL = "ttqlab-installed"

#: Run in the fresh environment: import every module of the installed package (walking it,
#: so a module that is there but fails to import fails too; __main__ aside) and say where it
#: came from.
IMPORT_ALL = """
import importlib, json, pkgutil, sys, ttqlab
failed, names = {}, {"ttqlab"}
def onerror(name):
    failed[name] = repr(sys.exc_info()[1])
for m in pkgutil.walk_packages(ttqlab.__path__, "ttqlab.", onerror=onerror):
    names.add(m.name)
    if m.name.endswith(".__main__"):  # importing it runs the command line: `ttqlab` below
        continue
    try:
        importlib.import_module(m.name)
    except Exception as exc:
        failed[m.name] = repr(exc)
print(json.dumps({"file": ttqlab.__file__, "prefix": sys.prefix, "version": ttqlab.__version__,
                  "modules": sorted(names), "failed": failed,
                  "course": str(__import__("ttqlab.course").course.source())}))
"""

#: Run in the fresh environment with the core install: the upstream generators (and what
#: they pull in) are absent, the shipped datasets load, another MNIST-1D seed names the extra.
CORE_DATA = """
import importlib.util, json, ttqlab.data as d
heavy = [m for m in ("sklearn", "mnist1d", "matplotlib", "scipy") if importlib.util.find_spec(m)]
digits, m1d = d.load("digits"), d.load("mnist1d")
try:
    d.load("mnist1d", seed=1)
    other_seed = False
except ImportError as e:
    other_seed = 'pip install "ttqlab[datasets]"' in str(e)
print(json.dumps({"heavy": heavy, "digits": [len(digits.train), len(digits.test)],
                  "mnist1d": [len(m1d.train), len(m1d.test)], "other_seed": other_seed}))
"""

#: Run with the environment's own python: execute a notebook with the environment's kernel.
EXECUTE = """
import sys, nbclient, nbformat
from nbclient.exceptions import CellExecutionError
path, kernel, check = sys.argv[1:4]
nb = nbformat.read(path, as_version=4)
nb.cells.insert(0, nbformat.v4.new_code_cell(check))
client = nbclient.NotebookClient(nb, timeout=600, kernel_name=kernel,
                                 resources={"metadata": {"path": sys.argv[4]}})
try:
    client.execute()
except CellExecutionError as exc:
    sys.exit(f"{path} raised:\\n{exc}")
problems = []
for i, cell in enumerate(nb.cells):
    for out in cell.get("outputs", []):
        if out.output_type == "error":
            problems.append(f"cell {i}: {out.ename}: {out.evalue}")
        elif out.output_type == "stream" and out.name == "stderr":
            problems.append(f"cell {i} wrote to stderr: {out.text[:500]}")
if problems:
    sys.exit("\\n".join(problems))
"""

#: pip's messages when it reaches no package index at all.
UNREACHABLE = ("NewConnectionError", "Failed to establish a new connection",
               "Temporary failure in name resolution", "Network is unreachable",
               "No route to host", "Connection refused", "ConnectTimeoutError", "ProxyError")


@pytest.mark.slow
def test_what_pip_install_gets_works_in_a_fresh_environment(wheel, sdist_wheel, tmp_path):
    """The wheel installed by pip into a new virtual environment, the way a user gets it: no
    editable install, no PYTHONPATH, no system site-packages, run from outside the checkout.
    Its base dependencies alone import every module and run `ttqlab --version`, `ttqlab course`
    and a short `ttqlab compare`; with the `notebooks` extra added, the environment's own kernel
    runs the fastest course notebook from the copied course. (The wheel built from the sdist is
    checked to be the same, file for file, so installing one of the two covers both.)"""
    import torch

    assert sorted(_contents(sdist_wheel)) == sorted(_contents(wheel)), (
        "the sdist's wheel differs from the checkout's (see the sdist test)")
    venv, work = tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    assert not work.resolve().is_relative_to(ROOT), "run from outside the checkout"
    _run(sys.executable, "-m", "venv", str(venv), timeout=120)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP",
                        "JUPYTER_PATH", "JUPYTER_DATA_DIR")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", TTQLAB_DATA=str(tmp_path / "data"),
               PIP_NO_INPUT="1")
    env.pop("MPLBACKEND", None)
    env.setdefault("PIP_RETRIES", "0")  # as in .ci/run: an unreachable index fails fast

    def sh(*cmd, timeout=300, **more_env):
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**env, **more_env}, cwd=work)

    def pip_install(*args):
        # The README's command: the PyTorch CPU index, and this torch's version (a CPU build
        # from there or a local mirror, not the much larger CUDA build of a newer release).
        r = sh(str(py), "-m", "pip", "install", "--no-compile", "--disable-pip-version-check",
               "--extra-index-url", "https://download.pytorch.org/whl/cpu",
               f"torch=={torch.__version__.split('+')[0]}", *args, timeout=900)
        if r.returncode != 0:
            said = r.stdout + r.stderr
            probe = sh(str(py), "-m", "pip", "download", "--no-deps", "--no-cache-dir",
                       "--disable-pip-version-check", "-d", str(tmp_path / "probe"), "six")
            if probe.returncode != 0 and any(s in probe.stdout + probe.stderr
                                             for s in UNREACHABLE):
                pytest.skip("no package index is reachable: " + probe.stderr.strip()[-300:])
            pytest.fail(f"pip install {' '.join(args)} failed in a fresh venv:\n{said[-6000:]}",
                        pytrace=False)

    # 1. The wheel with its base dependencies only.
    pip_install(str(wheel))
    r = sh(str(py), "-c", IMPORT_ALL)
    assert r.returncode == 0, f"importing the installed ttqlab failed:\n{r.stdout}\n{r.stderr}"
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(got["prefix"]).resolve() == venv.resolve()
    assert Path(got["file"]).resolve().is_relative_to(venv.resolve()), (
        f"ttqlab was imported from {got['file']}, not from the fresh environment {venv}")
    assert got["version"] == ttqlab.__version__
    assert not got["failed"], f"modules of the installed package fail to import: {got['failed']}"
    missing = _source_modules(ROOT) - set(got["modules"])
    assert not missing, (f"the installed package lacks {sorted(missing)} (in the source tree): "
                         "a package missing from [tool.setuptools] packages in pyproject.toml?")
    assert Path(got["course"]).resolve().is_relative_to(venv.resolve()), (
        f"the course is read from {got['course']}, not from the installed package")

    # the core install: no generator packages, and the default datasets load without them
    r = sh(str(py), "-c", CORE_DATA)
    assert r.returncode == 0, f"the core install's datasets:\n{r.stdout}\n{r.stderr}"
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {
        "heavy": [], "digits": [1347, 450], "mnist1d": [4000, 1000], "other_seed": True}

    r = sh(str(venv / "bin" / "ttqlab"), "--version")
    assert r.returncode == 0 and ttqlab.__version__ in r.stdout, (
        f"`ttqlab --version` (the console script) said:\n{r.stdout}\n{r.stderr}")

    course = work / "my course"
    r = sh("ttqlab", "course", str(course))
    assert r.returncode == 0, f"`ttqlab course` failed:\n{r.stdout}\n{r.stderr}"
    copied = sorted(p.name for p in course.glob("*.ipynb"))
    assert copied == COURSE, f"`ttqlab course` copied {copied}; the course is {COURSE}"
    for nb in COURSE:
        assert (course / nb).read_bytes() == (ROOT / "notebooks" / nb).read_bytes(), nb
    assert (course / "README.md").is_file(), "the course's README.md is missing"
    leaked = [p.name for p in course.rglob("*") if "solution" in p.name or p.suffix == ".py"]
    assert not leaked, f"the worked solutions stay out of the course: {leaked}"
    assert json.loads((course / ".ttqlab-course.json").read_text()).keys() >= set(COURSE)

    # A one-epoch start, one fine-tuning epoch, one seed: a few seconds (cache: TTQLAB_DATA).
    r = sh("ttqlab", "compare", "--pretrain-epochs", "1", "--epochs", "1", "--seeds", "1")
    assert r.returncode == 0, f"`ttqlab compare` failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    for method in ("fp32", "twn", "ttq", "inq"):
        assert re.search(rf"^\s*{method}\s", r.stdout, re.M), (
            f"`ttqlab compare` printed no row for {method}:\n{r.stdout[-3000:]}")

    # 2. The notebooks extra, then a course notebook on this environment's own kernel (nbclient
    # drives it: the test's tool, not part of the extra's promise).
    pip_install(f"{wheel}[notebooks]", "nbclient")
    _run(str(py), "-m", "ipykernel", "install", "--prefix", str(venv), "--name", KERNEL,
         env=env, cwd=work)
    assert FASTEST_NOTEBOOK in COURSE, f"{FASTEST_NOTEBOOK} is no longer in the course"
    check = ("import sys, pathlib, ttqlab\n"
             f"assert pathlib.Path(sys.prefix).resolve() == pathlib.Path({str(venv)!r}).resolve()"
             ", sys.prefix\n"
             f"assert pathlib.Path(ttqlab.__file__).resolve().is_relative_to({str(venv)!r}), "
             "ttqlab.__file__")
    r = sh(str(py), "-c", EXECUTE, str(course / FASTEST_NOTEBOOK), KERNEL, check, str(course),
           timeout=900, MPLBACKEND="module://matplotlib_inline.backend_inline")
    assert r.returncode == 0, (
        f"{FASTEST_NOTEBOOK}, copied by `ttqlab course`, failed on the installed package's "
        f"kernel:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")
