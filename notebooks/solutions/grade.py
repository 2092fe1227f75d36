"""Grade handed-in exercises with ttqlab's checks and write a CSV (see docs/instructors.md).

    python notebooks/solutions/grade.py submissions/*.ipynb submissions/*.py --csv grades.csv

A submission is a course notebook (only its exercise cells run: the cells tagged as stubs,
or any cell that defines an exercise function, so no training) or a .py file defining the
functions. Each runs in its own Python process with a time limit, so a student's infinite
loop or crash costs only that student's row. The checks' verdicts (what a student would
see) are printed per submission. Columns: one per exercise (1 = passed), then the total.

Student code runs on your machine: grade inside a container or a throw-away account.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

MARK = "ttqlab-grade-result: "
PRELUDE = "import math\nimport torch\nimport ttqlab\nfrom ttqlab import quantizers as Q\n"


def _exercise_cells(path: Path, names: list[str]) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = []
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        role = cell.get("metadata", {}).get("ttqlab", {}).get("role")
        defines = any(re.search(rf"^def {n}\(", source, re.M) for n in names)
        if cell["cell_type"] == "code" and (role == "stub" or defines):
            cells.append(source)
    return cells


def grade_one(path: Path) -> None:
    """In a child process: define the submission's functions, run the checks, print JSON."""
    from ttqlab import exercises

    namespace: dict = {}
    exec(PRELUDE, namespace)
    sources = ([path.read_text(encoding="utf-8")] if path.suffix == ".py"
               else _exercise_cells(path, list(exercises.EXERCISES)))
    for source in sources:
        try:
            exec(compile(source, str(path), "exec"), namespace)
        except Exception as exc:  # one broken cell must not hide the others
            print(f"a cell of {path.name} raised {type(exc).__name__}: {exc}")
    results = exercises.grade(namespace, verbose=True)
    print(MARK + json.dumps({"order": list(exercises.EXERCISES), "results": results}), flush=True)


def grade_all(paths: list[Path], timeout: float) -> tuple[list[str], dict[Path, dict]]:
    """Grade each submission in its own process (this one never imports torch)."""
    results, order = {}, []
    for path in paths:
        print(f"== {path.name}", flush=True)
        try:
            done = subprocess.run([sys.executable, __file__, "--one", str(path)],
                                  capture_output=True, text=True, timeout=timeout)
            lines = done.stdout.splitlines()
            found = [json.loads(x[len(MARK):]) for x in lines if x.startswith(MARK)]
            print("\n".join(x for x in lines if not x.startswith(MARK)))
            if not found:
                print(f"   no result (exit code {done.returncode}): {done.stderr[-500:]}")
            results[path] = found[-1]["results"] if found else {}
            order = found[-1]["order"] if found else order
        except subprocess.TimeoutExpired:
            print(f"   stopped after {timeout:g} s (an endless loop?)")
            results[path] = {}
    names = [n for n in order if any(n in r for r in results.values())]
    return names, results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("submissions", nargs="*", type=Path)
    parser.add_argument("--csv", type=Path, default=Path("grades.csv"))
    parser.add_argument("--exercises", help="comma-separated columns (default: those found)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per submission")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        return grade_one(args.one)
    if not args.submissions:
        parser.error("pass the submissions to grade (.ipynb or .py files)")
    names, results = grade_all(args.submissions, args.timeout)
    if args.exercises:
        names = args.exercises.split(",")
    with args.csv.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["submission", *names, "passed"])
        for path, passed in results.items():
            row = [int(bool(passed.get(n))) for n in names]
            writer.writerow([path.name, *row, sum(row)])
    print(f"wrote {args.csv}: {len(results)} submissions, exercises {', '.join(names)}")


if __name__ == "__main__":
    main()
