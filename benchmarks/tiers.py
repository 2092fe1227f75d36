"""How long the test tiers take: collection and the fast tier, as a contributor runs them.

    python -m benchmarks.tiers [--repeats 1] [--out benchmarks/results/tiers.json]

Times, in fresh processes from the repository root, ``pytest --collect-only`` (every test
collected, nothing run) and the fast tier (README, CONTRIBUTING.md):
``pytest -n 2 -m "not slow and not notebook and not browser and not binder"``. CI's whole
run (``.ci/run``) is timed by CI itself. These are measurements, not assertions: a slow
machine makes them slower, and no test fails on them.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAST = "not slow and not notebook and not browser and not binder"
TIERS = {
    "collection": ["--collect-only", "-q"],
    "fast tier": ["-n", "2", "-q", "-m", FAST],
}
_COUNTS = re.compile(r"(\d+) (passed|skipped|failed|errors?|tests? collected|deselected)")


def run(args: list[str]) -> tuple[float, dict[str, int], int]:
    """Wall seconds, the counts pytest's last line reports, and its exit status."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    counts = {word.split()[0] if "collected" not in word else "collected": int(n)
              for n, word in _COUNTS.findall(tail)}
    return seconds, counts, done.returncode


def measure(repeats: int = 1, tiers: dict[str, list[str]] | None = None) -> list[dict]:
    rows = []
    for name, args in (tiers or TIERS).items():
        times, counts, status = [], {}, 0
        for _ in range(repeats):
            seconds, counts, status = run(args)
            times.append(seconds)
        rows.append({"tier": name, "command": "python -m pytest " + " ".join(
                         f'"{a}"' if " " in a else a for a in args),
                     "seconds": round(statistics.median(times), 1),
                     "tests": counts.get("passed", counts.get("collected", 0)),
                     "skipped": counts.get("skipped", 0), "exit status": status})
        print(f"{name:>12}: {rows[-1]['seconds']:7.1f} s  {rows[-1]['tests']} tests  "
              f"(exit {status})", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    from benchmarks import write_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1, help="runs per tier (median)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                    "tiers.json")
    args = ap.parse_args(argv)
    doc = write_results(args.out, "tiers", measure(args.repeats), argv)
    print(f"wrote {args.out} ({len(doc['rows'])} rows)")


if __name__ == "__main__":
    main()
