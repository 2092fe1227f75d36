"""Build the environment mybinder.org builds from ``binder/``, the way repo2docker does.

repo2docker (the builder behind mybinder.org) copies the repository into the image, creates
its base environment for the Python that ``binder/runtime.txt`` names (a conda environment
that already holds JupyterLab, notebook 7, jupyterhub-singleuser, ipywidgets and more), runs
``pip install --no-cache-dir -r binder/requirements.txt`` on top of it and then
``binder/postBuild`` from the repository root. `build` does the same with a virtual
environment instead of an image; the base environment is the pip-installable part of
repo2docker's own specification (`repo2docker_base`: the top-level packages of its
``environment.py-X.Y.yml`` at the versions its conda lock file pins), so a pin in
``binder/`` that conflicts with the base shows up in ``pip check`` here as on mybinder.org:

    <dest>/home    the repository's files (tracked and untracked-not-ignored, as a clone
                   with the working tree's changes would have them): what Binder serves
    <dest>/venv    the environment, built from ``home/binder`` alone
    <dest>/build.log, <dest>/stamp

With ``reuse=True`` an environment already in ``dest`` whose stamp (a hash of ``binder/``
and ``pyproject.toml``) matches is kept and only ``home`` is refreshed; the tests use this
when ``TTQLAB_BINDER_ENV`` names a folder, for quick local re-runs. CI builds from scratch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: pip writes "Retrying ... /whl/cpu/..." warnings for an unreachable index; keep them in
#: the log, not on the terminal
_QUIET = {"PIP_PROGRESS_BAR": "off", "PIP_NO_INPUT": "1"}


#: The repo2docker release whose base environment the build starts from (mybinder.org runs a
#: recent one; raise this when it moves on).
REPO2DOCKER = "jupyter-repo2docker==2026.4.0"
#: conda names of repo2docker's base packages -> PyPI names (None: not a pip package)
_CONDA_TO_PYPI = {"python": None, "nodejs": None, "pip": None,
                  "jupyterhub-singleuser": "jupyterhub"}


class BuildError(RuntimeError):
    """A step of the Binder build failed; the message names it and shows the log's tail."""


@dataclasses.dataclass
class BinderEnv:
    dest: Path
    home: Path
    venv: Path
    python: Path
    seconds: dict[str, float]
    reused: bool

    def run(self, *args: str, cwd: Path | None = None, check: bool = True,
            timeout: float = 600) -> subprocess.CompletedProcess:
        """Run a command with this environment first on PATH."""
        return subprocess.run(args, cwd=cwd or self.home, env=venv_environment(self.venv),
                              capture_output=True, text=True, check=check, timeout=timeout)


def repo_files(repo: Path = ROOT) -> list[str]:
    """The repository's files as a clone of the working tree has them (git's view:
    tracked plus untracked files that are not ignored, minus deleted ones)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         cwd=repo, capture_output=True, text=True, check=True).stdout
    return sorted(f for f in set(out.split("\0")) if f and (repo / f).is_file())


def copy_repo(repo: Path, home: Path) -> int:
    """Copy `repo_files` into ``home`` (emptied first); return how many."""
    if home.exists():
        shutil.rmtree(home)
    files = repo_files(repo)
    for rel in files:
        target = home / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, target)
    return len(files)


def stamp(repo: Path = ROOT) -> str:
    """A hash of what the environment is built from."""
    h = hashlib.sha256(REPO2DOCKER.encode())
    for path in [*sorted((repo / "binder").iterdir()), repo / "pyproject.toml"]:
        if path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def runtime_python(repo: Path = ROOT) -> str:
    """The interpreter ``binder/runtime.txt`` asks for (``python-3.11`` -> ``python3.11``)."""
    text = (repo / "binder" / "runtime.txt").read_text().strip()
    m = re.fullmatch(r"python-(\d+\.\d+)", text)
    if not m:
        raise BuildError(f"binder/runtime.txt says {text!r}; repo2docker expects e.g. "
                         f"'python-3.11'")
    exe = shutil.which(f"python{m.group(1)}")
    if exe is None:
        raise BuildError(f"binder/runtime.txt asks for Python {m.group(1)}, and python"
                         f"{m.group(1)} is not on PATH here: install it (e.g. apt-get install "
                         f"python{m.group(1)} python{m.group(1)}-venv) to build the Binder "
                         f"environment")
    return exe


def repo2docker_base(python_version: str, cache: Path) -> list[str]:
    """``name==version`` of repo2docker's base environment for ``python_version`` ("3.11"):
    the top-level packages of its ``environment.py-X.Y.yml``, pinned as its linux-64 conda
    lock pins them. The specification is read from the ``jupyter-repo2docker`` wheel
    (`REPO2DOCKER`), downloaded into ``cache`` without its dependencies."""
    import zipfile

    cache.mkdir(parents=True, exist_ok=True)
    if not list(cache.glob("jupyter_repo2docker-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                        str(cache), REPO2DOCKER], check=True, capture_output=True, text=True,
                       timeout=600)
    (wheel,) = cache.glob("jupyter_repo2docker-*.whl")
    folder = "repo2docker/buildpacks/conda/"
    with zipfile.ZipFile(wheel) as z:
        try:
            spec = z.read(f"{folder}environment.py-{python_version}.yml").decode()
            lock = z.read(f"{folder}environment.py-{python_version}-linux-64.lock").decode()
        except KeyError:
            raise BuildError(f"{REPO2DOCKER} has no base environment for Python "
                             f"{python_version}; change binder/runtime.txt") from None
    locked = {}
    for url in re.findall(r"^https://\S+", lock, re.M):
        stem = re.sub(r"\.(conda|tar\.bz2)$", "", url.rsplit("/", 1)[1].split("#")[0])
        name, version, _build = stem.rsplit("-", 2)
        locked[name.lower()] = version
    out = []
    for name in re.findall(r"^\s*-\s*([A-Za-z0-9_.-]+)", spec, re.M):
        name = name.lower()
        pypi = _CONDA_TO_PYPI.get(name, name)
        if pypi is not None and name in locked:
            out.append(f"{pypi}=={locked[name]}")
    if not any(r.startswith("jupyterlab==") for r in out):
        raise BuildError(f"could not read the base environment from {wheel.name}")
    return out


def venv_environment(venv: Path) -> dict:
    """os.environ with ``venv`` activated (and nothing from the caller's environment)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CONDA_PREFIX")}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = str(venv / "bin") + os.pathsep + env.get("PATH", "")
    env.update(_QUIET)
    return env


def _step(name: str, args: list[str], cwd: Path, env: dict, log, timeout: float) -> float:
    log.write(f"\n$ {' '.join(args)}\n")
    log.flush()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise BuildError(f"{name} did not finish within {timeout:.0f} s") from err
    if proc.returncode != 0:
        log.flush()
        tail = "\n".join(Path(log.name).read_text(errors="replace").splitlines()[-30:])
        raise BuildError(f"{name} failed (exit code {proc.returncode}); last lines of "
                         f"{log.name}:\n{tail}")
    return time.perf_counter() - t0


def build(dest: Path, repo: Path = ROOT, *, reuse: bool = False,
          timeout: float = 1800) -> BinderEnv:
    """Build (or, with ``reuse``, refresh) the Binder environment in ``dest``."""
    dest = Path(dest).resolve()
    home, venv = dest / "home", dest / "venv"
    python = venv / "bin" / "python"
    want = stamp(repo)
    stamp_file = dest / "stamp"
    if reuse and python.exists() and stamp_file.exists() and stamp_file.read_text() == want:
        t0 = time.perf_counter()
        copy_repo(repo, home)  # the editable install points here: fresh code, same env
        return BinderEnv(dest, home, venv, python, {"copy": time.perf_counter() - t0}, True)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    copy_repo(repo, home)
    seconds["copy"] = time.perf_counter() - t0
    env = venv_environment(venv)
    with open(dest / "build.log", "w") as log:
        seconds["venv"] = _step("creating the virtual environment",
                                [runtime_python(repo), "-m", "venv", str(venv)], home,
                                os.environ.copy(), log, timeout)
        version = re.fullmatch(r"python-(\d+\.\d+)",
                               (repo / "binder" / "runtime.txt").read_text().strip()).group(1)
        base = repo2docker_base(version, dest / "repo2docker")
        (dest / "base-requirements.txt").write_text("\n".join(base) + "\n")
        seconds["base"] = _step(
            "repo2docker's base environment (pip-installable part)",
            [str(python), "-m", "pip", "install", "--no-cache-dir", "-r",
             str(dest / "base-requirements.txt")], home, env, log, timeout)
        seconds["requirements"] = _step(
            "pip install -r binder/requirements.txt",
            [str(python), "-m", "pip", "install", "--no-cache-dir", "-r",
             "binder/requirements.txt"], home, env, log, timeout)
        seconds["postBuild"] = _step("binder/postBuild", ["bash", "binder/postBuild"], home,
                                     env, log, timeout)
    stamp_file.write_text(want)
    return BinderEnv(dest, home, venv, python, seconds, False)


if __name__ == "__main__":  # python tests/launch/binder_env.py DEST: build one by hand
    env = build(Path(sys.argv[1]), reuse="--reuse" in sys.argv)
    print(env)
