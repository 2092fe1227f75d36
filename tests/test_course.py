"""ttqlab.course: its arguments are checked before anything is read or written; a flag is
True or False, never a string that only looks like an answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttqlab import course


def _changed_copy(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """A course copied into tmp_path/course whose first notebook the student has edited."""
    dest = tmp_path / "course"
    course.copy(dest)
    first = dest / course.files()[0].name
    edited = first.read_bytes() + b"\n"
    first.write_bytes(edited)
    return dest, first, edited


@pytest.mark.parametrize("force", ["no", "False", 0, 1, None, [False]], ids=repr)
def test_a_force_that_is_not_a_bool_is_refused_and_overwrites_nothing(tmp_path, force):
    dest, first, edited = _changed_copy(tmp_path)
    for call in (course.copy, course.check_destination):
        with pytest.raises(TypeError, match=rf"^force must be True or False, got "
                                            rf".*\({type(force).__name__}\)$"):
            call(dest, force=force)
    assert first.read_bytes() == edited  # "no" used to count as yes: the work was lost


def test_force_false_protects_and_force_true_overwrites(tmp_path):
    dest, first, edited = _changed_copy(tmp_path)
    with pytest.raises(FileExistsError, match="--force to overwrite them"):
        course.copy(dest, force=False)
    assert first.read_bytes() == edited
    assert course.check_destination(dest, force=True) == [first]
    course.copy(dest, force=True)
    assert first.read_bytes() == course.files()[0].read_bytes()


@pytest.mark.parametrize("dest, error, says", [
    (None, TypeError, r"dest must be a path \(a str or a pathlib.Path .*got None \(NoneType\)"),
    (3, TypeError, r"dest must be a path .*got 3 \(int\)"),
    (b"course", TypeError, r"dest must be a path .*got b'course' \(bytes\)"),
    ("", ValueError, r"dest must be a path such as 'runs/a', got the empty name ''; pass '.'"),
], ids=["none", "int", "bytes", "empty"])
def test_a_dest_that_is_not_a_path_is_refused(tmp_path, monkeypatch, dest, error, says):
    monkeypatch.chdir(tmp_path)  # "" would have meant this folder
    for call in (course.copy, course.check_destination):
        with pytest.raises(error, match=says):
            call(dest)
    assert list(tmp_path.iterdir()) == []


def test_dest_may_be_a_str_or_a_path(tmp_path):
    copied = course.copy(str(tmp_path / "a"))
    assert [p.name for p in copied] == [f.name for f in course.files()]
    assert course.copy(tmp_path / "b")[0].read_bytes() == course.files()[0].read_bytes()
