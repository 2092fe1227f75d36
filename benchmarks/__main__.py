"""Run the benchmarks, write ``benchmarks/results/<name>.json``, optionally the README.

    python -m benchmarks                       # every benchmark, full size (about an hour)
    python -m benchmarks step_time accuracy    # a chosen subset
    python -m benchmarks --quick               # tiny configurations (CI; seconds each)
    python -m benchmarks --report              # then rewrite README results + figures

Each benchmark is a module ``benchmarks.<name>`` with ``main(argv)`` that accepts
``--out FILE`` (and ``--quick`` where it has a tiny configuration); benchmarks that are not
there yet are skipped with a note. A bare list of rows is wrapped with the machine
description (``benchmarks.machine``) so every result file says where it was measured.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import time
from pathlib import Path

from benchmarks import RESULTS, machine, read_results

#: name -> does it accept --quick
BENCHMARKS: dict[str, bool] = {"step_time": True, "accuracy": True, "plateau": True,
                               "capacity": True, "file_size": True,
                               "kernels": True, "deploy_accuracy": True,
                               "inference": False, "threads": False,
                               "notebooks": False, "launch": False, "tiers": False}


def available() -> list[str]:
    """The benchmarks whose module exists in this checkout."""
    return [n for n in BENCHMARKS if importlib.util.find_spec(f"benchmarks.{n}") is not None]


def run_one(name: str, out_dir: Path, quick: bool = False, extra: list[str] = ()) -> dict:
    """Run benchmark ``name``; return its result file's content."""
    out = out_dir / f"{name}.json"
    shown = os.path.relpath(out) if not os.path.relpath(out).startswith("..") else str(out)
    argv = [*(["--quick"] if quick and BENCHMARKS[name] else []), "--out", shown, *extra]
    start = time.perf_counter()
    importlib.import_module(f"benchmarks.{name}").main(argv)
    seconds = time.perf_counter() - start
    raw = json.loads(out.read_text())
    doc = {**(raw if isinstance(raw, dict) else {}), **read_results(out)}  # keep extra keys
    if not doc["meta"]:  # a benchmark that writes bare rows: say where it ran
        doc["meta"] = {**machine(), "command": f"python -m benchmarks.{name} {' '.join(argv)}"}
    doc["meta"].update({"quick": quick, "seconds": round(seconds, 1)})
    out.write_text(json.dumps(doc, indent=1))
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    ap.add_argument("--quick", action="store_true", help="tiny configurations, for CI")
    ap.add_argument("--out-dir", type=Path, default=RESULTS, help="where the JSON goes")
    ap.add_argument("--report", action="store_true",
                    help="afterwards, regenerate the README results section and figures")
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    present = available()
    names = args.names or present
    for name in names:
        if name not in present:
            print(f"skipping {name}: benchmarks/{name}.py is not in this checkout")
            continue
        if args.quick and not BENCHMARKS[name] and not args.names:
            print(f"skipping {name} in --quick mode (it has no tiny configuration; name it "
                  f"to run it anyway)")
            continue
        print(f"== {name}", flush=True)
        doc = run_one(name, args.out_dir, args.quick)
        print(f"   {len(doc['rows'])} rows -> {args.out_dir / (name + '.json')} "
              f"({doc['meta']['seconds']} s)", flush=True)
    if args.report:
        from benchmarks import report

        report.main(["--results", str(args.out_dir)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
