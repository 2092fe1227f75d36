"""`ttqlab course DEST` against a hostile DEST: symbolic links planted among the paths it writes."""

from __future__ import annotations

import os
import sys

import pytest

from ttqlab import course
from ttqlab.cli import main

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges")


def _snapshot(folder):
    return sorted((p.name, os.path.islink(p)) for p in folder.iterdir())


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("which", ["first notebook", "readme", "manifest"])
def test_symlink_in_dest_is_refused_before_anything_is_written(tmp_path, capsys, force, which):
    dest, elsewhere = tmp_path / "course", tmp_path / "elsewhere"
    dest.mkdir()
    elsewhere.mkdir()
    name = {"first notebook": course.files()[0].name, "readme": "README.md",
            "manifest": course.MANIFEST}[which]
    (dest / name).symlink_to(elsewhere / "planted")  # dangling: exists() is False
    before = _snapshot(dest)

    with pytest.raises(FileExistsError, match=r"is a symbolic link .*never writes through a link"
                                              r".*Remove the link, or pass another folder"):
        course.copy(dest, force=force)
    assert list(elsewhere.iterdir()) == [], "nothing is written outside DEST"
    assert _snapshot(dest) == before, "nothing is written inside DEST either"

    with pytest.raises(SystemExit) as e:  # the command line: a usage error, exit status 2
        main(["course", str(dest), *(["--force"] if force else [])])
    assert e.value.code == 2
    assert "symbolic link" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == [] and _snapshot(dest) == before


def test_symlink_to_an_existing_file_is_refused_and_the_file_untouched(tmp_path):
    dest, victim = tmp_path / "course", tmp_path / "victim.txt"
    dest.mkdir()
    victim.write_text("precious")
    (dest / course.files()[0].name).symlink_to(victim)
    with pytest.raises(FileExistsError, match="symbolic link"):
        course.copy(dest, force=True)
    assert victim.read_text() == "precious"


def test_dest_may_be_a_link_to_a_folder_but_not_a_dangling_link(tmp_path):
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real)
    copied = course.copy(link)
    assert sorted(p.name for p in real.iterdir()) == sorted(
        [p.name for p in copied] + [course.MANIFEST])
    assert not any(p.is_symlink() for p in real.iterdir())

    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError, match="which does not exist: pass a real folder"):
        course.copy(dangling)
    assert not (tmp_path / "nowhere").exists()


def test_a_folder_at_a_course_path_is_refused(tmp_path):
    dest = tmp_path / "course"
    (dest / course.files()[0].name).mkdir(parents=True)
    with pytest.raises(FileExistsError, match="is not a file; remove it, or pass another folder"):
        course.copy(dest, force=True)


def test_a_link_planted_after_the_check_is_replaced_not_followed(tmp_path, monkeypatch):
    dest, elsewhere = tmp_path / "course", tmp_path / "elsewhere"
    elsewhere.mkdir()
    check = course.check_destination

    def check_then_plant(d, force=False):  # the race: a link appears right after the check
        out = check(d, force)
        d.mkdir(parents=True, exist_ok=True)
        (d / course.files()[0].name).symlink_to(elsewhere / "planted")
        return out

    monkeypatch.setattr(course, "check_destination", check_then_plant)
    course.copy(dest)
    assert list(elsewhere.iterdir()) == []
    first = dest / course.files()[0].name
    assert not first.is_symlink() and first.read_bytes() == course.files()[0].read_bytes()
    assert not list(dest.glob(".*.part"))
