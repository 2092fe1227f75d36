"""The course notebooks, copied into a folder of the user's: ``ttqlab course [DEST]``.

A wheel carries the notebooks as the package data ``ttqlab/notebooks/`` (built from the
repository's ``notebooks/``, their one source). In a repository checkout (an editable
install, or ``PYTHONPATH``) they are read from ``notebooks/`` directly. Students work in
their own copy, so the shipped originals stay clean.

Nothing is ever written through a symbolic link: a link (dangling or not) at one of the course's
paths in DEST, or at DEST's manifest, is refused before anything is written, with ``--force``
too (a planted ``DEST/01_why_ternary.ipynb -> /elsewhere/x`` would otherwise write outside
DEST). DEST itself may be a link to an existing folder (the user named it, e.g. a folder on
another disk); a DEST link to nothing is refused. Files are written to a temporary file in
DEST and renamed into place, which replaces a path rather than following it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from .validation import check_bool, check_path

MANIFEST = ".ttqlab-course.json"  # what was copied, with checksums, to tell edits apart


def source() -> Path:
    """The folder that holds the course notebooks (installed package data or the checkout)."""
    here = Path(__file__).resolve().parent
    for folder in (here / "notebooks", here.parent / "notebooks"):
        if any(folder.glob("[0-9]*.ipynb")):
            return folder
    raise FileNotFoundError("the course notebooks are missing from this installation of "
                            "ttqlab; reinstall it (pip install --force-reinstall ttqlab)")


def files() -> list[Path]:
    """The course's files, in reading order: the numbered notebooks, then the README."""
    src = source()
    out = sorted(src.glob("[0-9]*.ipynb"))
    if (src / "README.md").is_file():
        out.append(src / "README.md")
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copied_before(dest: Path) -> dict[str, str]:
    try:
        saved = json.loads((dest / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _refuse_unsafe_paths(dest: Path) -> None:
    """Raise ``FileExistsError`` if a copy into ``dest`` would go through a symbolic link, or
    onto something that is not a plain file (see the module's docstring)."""
    if dest.is_symlink() and not dest.exists():
        raise FileExistsError(f"{dest} is a symbolic link to {os.readlink(dest)}, which does "
                              f"not exist: pass a real folder for the course")
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"{dest} is a file, not a folder: pass a folder for the course")
    for name in [f.name for f in files()] + [MANIFEST]:
        target = dest / name
        if target.is_symlink():
            raise FileExistsError(
                f"{target} is a symbolic link (to {os.readlink(target)}); ttqlab course never "
                f"writes through a link, not even with --force. Remove the link, or pass "
                f"another folder")
        if target.exists() and not target.is_file():
            raise FileExistsError(f"{target} is not a file; remove it, or pass another folder")


def check_destination(dest: Path, force: bool = False) -> list[Path]:
    """Raise ``FileExistsError`` naming the student's files that a copy would overwrite, or
    a symbolic link (or a folder) among the paths it would write (even with ``force``).

    A file is the student's if it differs from the course's version and from what an earlier
    ``ttqlab course`` copied there (an untouched earlier copy is updated silently).

    ``force`` must be True or False (a ``TypeError`` otherwise: ``force="no"`` is not
    taken as a yes); ``dest`` a path (a ``str`` or a ``Path``).
    """
    dest = check_path("dest", dest)
    force = check_bool("force", force)
    _refuse_unsafe_paths(dest)
    before = _copied_before(dest)
    modified = []
    for f in files():
        target = dest / f.name
        if not target.exists():
            continue
        digest = _sha256(target)
        if digest != _sha256(f) and digest != before.get(f.name):
            modified.append(target)
    if modified and not force:
        names = ", ".join(p.name for p in modified)
        raise FileExistsError(f"{dest} already holds changed copies of {names}; they would be "
                              f"overwritten. Pass another folder, or --force to overwrite them")
    return modified


def copy(dest: str | Path = "ttqlab-course", force: bool = False) -> list[Path]:
    """Copy the course into ``dest`` (created if needed) and return the copied files.

    Refuses (``FileExistsError``) to overwrite a notebook the student has changed unless
    ``force`` (True or False; anything else is a ``TypeError``).
    """
    dest = check_path("dest", dest)
    force = check_bool("force", force)
    check_destination(dest, force)
    dest.mkdir(parents=True, exist_ok=True)
    copied, digests = [], {}
    for f in files():
        _write_replacing(dest / f.name, f.read_bytes())
        copied.append(dest / f.name)
        digests[f.name] = _sha256(f)
    _write_replacing(dest / MANIFEST, json.dumps(digests, indent=1).encode())
    return copied


def _write_replacing(target: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``target``, then rename it onto ``target``:
    a link planted at ``target`` after the check is replaced, never followed."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def how_to_open(dest: str | Path) -> str:
    """The commands that open the copied course in JupyterLab."""
    first = files()[0].name
    return (f"To open the course:\n"
            f"    cd {dest}\n"
            f"    jupyter lab {first}\n"
            f"(needs `pip install \"ttqlab[notebooks]\"`; add --allow-root when running as root, "
            f"e.g. in a container)")
