"""The course's prose stays in step with its outputs: markdown never states a measured number
(a cell prints it, through ``ttqlab.evidence``), exercises and sections are numbered in
reading order, every notebook links all the others, and every one sets the thread count
the course measured (README, "Troubleshooting").

These checks read the committed notebooks (no execution), so they run in the fast tier.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]

#: a measured-looking number: a percentage, "N points", "± N", or an interval "[a, b]"
MEASURED = re.compile(
    r"(?<![\w.])[-+−]?\d+(?:\.\d+)?\s*(?:%|percent\b|points?\b|pp\b)"
    r"|±\s*\d"
    r"|\[\s*[-+−]\d+(?:\.\d+)?\s*,\s*[-+−]?\d+(?:\.\d+)?\s*\]")
#: a sentence may quote a paper's own number when it says whose it is, and may state what one
#: test image is worth (a property of the test set, not a result)
CITES = re.compile(r"\[\d+\]|\bpaper|\bauthors?\b|\breport(?:s|ed)\b|\bTable\b|arXiv"
                   r"|\bone test (?:image|sample|signal)\b", re.IGNORECASE)
#: definitions, not measurements: INQ's accumulated portions, "all", "none", TWN's 0.7 E|W|
DEFINED = {"0", "100", "50", "75", "87.5", "25", "12.5", "70"}


def read(path):
    """The notebook (nbformat imported here, not at collection: it is slow to import)."""
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(path, as_version=4)


def markdown(path):
    nb = read(path)
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def sentences(text: str) -> list[str]:
    """Sentences of the markdown outside code and maths (a citation covers its sentence)."""
    out = []
    for para in re.split(r"\n\s*\n", _without_code(text)):
        flat = " ".join(para.split())
        out += re.split(r"(?<=[.!?])\s+(?=[A-Z*(\[])", flat)
    return out


def _without_code(text: str) -> str:
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"\$\$.*?\$\$", "", text, flags=re.S)
    return re.sub(r"`[^`]*`|\$[^$]*\$", "", text)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_markdown_quotes_no_measured_number(path):
    """A number an experiment produces belongs to the cell that prints it: prose written
    before a run goes stale when the run changes (issue 22 found more than twenty)."""
    stale = []
    for i, source in enumerate(markdown(path)):
        for line in sentences(source):
            if CITES.search(line):
                continue
            for m in MEASURED.finditer(line):
                number = re.match(r"[-+−]?(\d+(?:\.\d+)?)", m.group().lstrip("±[ "))
                if number and number.group(1) in DEFINED and "±" not in m.group():
                    continue
                stale.append(f"markdown cell {i}: {m.group()!r} in {line.strip()[:120]!r}")
    assert not stale, ("state measured numbers in a printed line (ttqlab.evidence.observe), "
                       "not in markdown; quote a paper's number with its citation:\n"
                       + "\n".join(stale))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_exercises_are_numbered_in_reading_order(path):
    numbers = [int(m.group(1)) for source in markdown(path)
               for m in re.finditer(r"^#{2,4} Exercise (\d+)\b", source, re.M)]
    assert numbers == list(range(1, len(numbers) + 1)), (
        f"exercise headings numbered {numbers}: number them 1, 2, ... as they appear")
    titles = [m.group(1).strip().lower() for source in markdown(path)
              for m in re.finditer(r"^#{2,4} Exercise \d+[.:]?\s*(.*)$", source, re.M)]
    assert len(titles) == len(set(titles)), f"an exercise appears twice: {titles}"


def test_reviewer_sections_are_lettered_in_reading_order():
    """Notebook 7 and its second part 7b answer the reviewers' questions (a), (b), ... in
    order, with no letter skipped."""
    letters = [m.group(1) for p in NOTEBOOKS if p.stem.startswith("07")
               for source in markdown(p)
               for m in re.finditer(r"^## \(([a-z])\)", source, re.M)]
    expected = [chr(ord("a") + i) for i in range(len(letters))]
    assert letters == expected, f"sections lettered {letters}, expected {expected}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_notebook_links_every_other(path):
    first = markdown(path)[0]
    nav = [line for line in first.splitlines() if line.startswith("**The course:**")]
    assert nav, "the opening cell ends with the course's navigation line"
    for other in NOTEBOOKS:
        if other == path:
            assert "(this notebook)" in nav[0]
        else:
            assert f"]({other.name})" in nav[0], f"the navigation misses {other.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_notebook_sets_one_thread(path):
    """One torch thread: for the course's small models two threads were several times slower
    beside a busy process and only a little faster idle (benchmarks/threads.py)."""
    nb = read(path)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code and "torch.set_num_threads(1)" in code[0], (
        "the first code cell should call torch.set_num_threads(1)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_the_stated_run_time_is_the_measured_one(path):
    """The opening cell's "Run time" comes from benchmarks/notebooks.py (which writes it):
    rerun ``python -m benchmarks.notebooks`` after changing a notebook."""
    import json

    from benchmarks.notebooks import stated_seconds

    rows = json.loads((ROOT / "benchmarks" / "results" / "notebooks.json").read_text())["rows"]
    row = {r["notebook"]: r for r in rows}.get(path.name)
    assert row is not None, f"{path.name} is not in benchmarks/results/notebooks.json"
    m = re.search(r"\*\*Run time:\*\* about (\d+) s", markdown(path)[0])
    assert m, "the opening cell states '**Run time:** about N s ...'"
    assert int(m.group(1)) == stated_seconds(row["seconds"]), (
        f"states {m.group(1)} s, measured {row['seconds']} s")
