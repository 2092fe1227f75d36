"""Execute every course notebook; print its wall time and the kernel's peak memory.

    python -m benchmarks.notebooks [--out benchmarks/results/notebooks.json] [--threads N]
                                   [--no-stamp] [notebooks/01_why_ternary.ipynb ...]

Each notebook runs top to bottom with ``nbclient`` in a fresh kernel, in a temporary working
directory (datasets cache there too), one after the other. Each runs in its own child
process, so that the kernel's peak resident memory is exact: ``getrusage(RUSAGE_CHILDREN)``
of that process once the kernel has exited. Goals (the course issue): each notebook under
120 s and 1.5 GB, all together under 20 minutes, on 2 CPU cores.

The run time each notebook states in its opening cell ("**Run time:** about N s ...") is
written here from the measurement (`stamp`), so that no notebook quotes a time nobody
measured; ``tests/test_course_prose.py`` checks that the two agree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
GOAL_SECONDS, GOAL_MB, GOAL_TOTAL_SECONDS = 120.0, 1536.0, 1200.0


RUN_TIME = re.compile(r"\*\*Run time:\*\*.*?(?=\n\n|$)", re.S)


def stated_seconds(seconds: float) -> int:
    """What a notebook states for a measured run time: rounded to 5 s (at least 5)."""
    return max(5, 5 * round(seconds / 5))


def run_time_sentence(seconds: float, peak_mb: float, cpu: str) -> str:
    return (f"**Run time:** about {stated_seconds(seconds)} s on 2 CPU cores, "
            f"peak memory about {100 * round(peak_mb / 100)} MB (measured by "
            f"`benchmarks/notebooks.py` on {cpu} with an empty cache; a second run reuses "
            f"the cached full-precision starts, and a busy shared machine can take twice "
            f"as long).")


def stamp(rows: list[dict], cpu: str) -> list[str]:
    """Write each measured notebook's run-time sentence into its opening cell; return the
    names of the notebooks changed."""
    import nbformat

    changed = []
    for row in rows:
        path = NOTEBOOKS / row["notebook"]
        if not path.exists() or row.get("errors"):
            continue
        nb = nbformat.read(path, as_version=4)
        first = nb.cells[0]
        sentence = run_time_sentence(row["seconds"], row["peak MB"], cpu)
        new = RUN_TIME.sub(lambda _, s=sentence: s, first.source, count=1)
        if new != first.source:
            first.source = new
            nbformat.write(nb, path)
            changed.append(path.name)
    return changed


def _peak_child_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def execute(path: Path, timeout: int = 600) -> dict:
    """Run one notebook in a fresh kernel (in this process); return seconds, errors, cells."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="ttqlab-nb-") as tmp:
        env = {**os.environ, "TTQLAB_DATA": str(Path(tmp) / "data")}
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": tmp}})
        error = None
        start = time.perf_counter()
        try:
            client.execute(env=env)
        except CellExecutionError as exc:
            error = str(exc).strip().splitlines()[-1][:300]
        seconds = time.perf_counter() - start
    stderr = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                 if o.get("output_type") == "stream" and o.get("name") == "stderr")
    return {"seconds": seconds, "error": error, "stderr outputs": stderr,
            "code cells": sum(c.cell_type == "code" for c in nb.cells)}


def _child(path: str) -> None:
    result = execute(Path(path))
    result["peak MB"] = _peak_child_mb()
    print(json.dumps(result))


def run(path: Path, threads: int | None) -> dict:
    """Execute ``path`` in a child process and return its row."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.notebooks", "--child", str(path)],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"running {path.name} failed:\n{proc.stderr[-2000:]}")
    r = json.loads(lines[-1])
    ok = r["error"] is None and r["seconds"] < GOAL_SECONDS and r["peak MB"] < GOAL_MB
    return {"notebook": path.name, "seconds": round(r["seconds"], 1),
            "peak MB": round(r["peak MB"]), "code cells": r["code cells"],
            "errors": r["error"] or 0, "stderr outputs": r["stderr outputs"],
            "goal (<120 s, <1.5 GB)": "met" if ok else "MISSED"}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=Path,
                    help="notebooks to run (default: every notebooks/*.ipynb)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" /
                    "notebooks.json", help="JSON result file (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP_NUM_THREADS for the kernels (default: PyTorch's default)")
    ap.add_argument("--no-stamp", action="store_true",
                    help="do not write the measured run times into the notebooks")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child)
        return []
    from benchmarks import write_results
    from ttqlab.stats import Table

    paths = args.notebooks or sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    rows = []
    for path in paths:
        rows.append(run(Path(path), args.threads))
        print(f"{rows[-1]['notebook']}: {rows[-1]['seconds']} s, {rows[-1]['peak MB']} MB",
              flush=True)
    total = sum(r["seconds"] for r in rows)
    rows.append({"notebook": "(all)", "seconds": round(total, 1),
                 "peak MB": max((r["peak MB"] for r in rows), default=0),
                 "code cells": sum(r["code cells"] for r in rows),
                 "errors": sum(1 for r in rows if r["errors"]),
                 "stderr outputs": sum(r["stderr outputs"] for r in rows),
                 "goal (<120 s, <1.5 GB)": "met" if total < GOAL_TOTAL_SECONDS and all(
                     r["goal (<120 s, <1.5 GB)"] == "met" for r in rows) else "MISSED"})
    threads = args.threads or "default"
    print(Table(rows, title=f"course notebooks (kernel threads: {threads}; all together: goal "
                            f"< {GOAL_TOTAL_SECONDS / 60:.0f} min)"))
    doc = write_results(args.out, "notebooks", rows, argv)
    if not args.no_stamp:
        changed = stamp(rows[:-1], doc["meta"]["cpu"])
        print(f"run times written into {len(changed)} notebook(s)")
    return rows


if __name__ == "__main__":
    main()
