"""The documentation site builds with warnings as errors, and its API reference covers
every public module."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_has_an_api_page():
    modules = {p.stem for p in (ROOT / "ttqlab").glob("*.py") if not p.stem.startswith("_")}
    modules |= {p.parent.name for p in (ROOT / "ttqlab").glob("*/__init__.py")
                if p.parent.name != "notebooks"}  # packages: ttqlab.methods, ttqlab.exercises
    pages = {p.stem for p in (ROOT / "docs" / "api").glob("*.md")}
    assert modules == pages, f"missing: {modules - pages}, stale: {pages - modules}"
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in pages:
        assert f"api/{page}.md" in nav
        assert f"::: ttqlab.{page}" in (ROOT / "docs" / "api" / f"{page}.md").read_text()


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocstrings", reason="the docs extra: pip install -e '.[docs]'")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                        str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    fit = (tmp_path / "site" / "api" / "train" / "index.html").read_text()
    assert "Train <code>model</code> on" in fit, "fit's docstring is in the reference"
    saving = (tmp_path / "site" / "saving" / "index.html").read_text()
    assert "TQ1_0" in saving and "state_dict" in saving
