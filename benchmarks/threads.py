"""One torch thread or two? Training-epoch time of the course's models, idle and beside a
busy process.

    python -m benchmarks.threads [--repeats 3] [--out benchmarks/results/threads.json]

The course runs on Binder and shared course servers: two cores that other work also uses.
PyTorch's default is one thread per core, and its OpenMP threads wait for each other at
every parallel region: when one core is busy elsewhere, the other thread waits. This
benchmark times one training epoch of each model the notebooks train (their own data and
batch size) with 1 and 2 threads, on an idle machine and beside one process that keeps a
core busy (a spinning Python loop, like a second student's kernel), in interleaved rounds
(each round runs every thread count and condition once, so drift hits all alike). Each
(threads, condition) runs in its own process, because torch fixes its thread pool at the
first parallel call. The table reports the median epoch time and its ratio to one thread in
the same condition. The course's default, ``torch.set_num_threads(1)`` in every notebook's
first cell, is the choice that is never much slower: measured here, two threads won a little
on an idle machine and lost several times beside a busy process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREADS = (1, 2)
CONDITIONS = ("idle", "beside a busy process")


def _models():
    import ttqlab

    seq = dict(input_shape=(1, 40))
    return {
        "cnn1d 32 ch (MNIST-1D)": ("mnist1d", lambda: ttqlab.models.cnn1d(channels=32, seed=0)),
        "cnn1d 32 ch, TWN": ("mnist1d", lambda: ttqlab.quantize(
            ttqlab.models.cnn1d(channels=32, seed=0), "twn")),
        "LeNet-5 (digits)": ("digits", lambda: ttqlab.models.lenet5(input_shape=(1, 8, 8),
                                                                     seed=0)),
        "transformer (MNIST-1D)": ("mnist1d", lambda: ttqlab.models.transformer(**seq, seed=0)),
        "GRU (MNIST-1D)": ("mnist1d", lambda: ttqlab.models.gru(**seq, seed=0)),
    }


def _child(threads: int, repeats: int) -> None:
    import torch

    torch.set_num_threads(threads)
    import ttqlab

    data = {name: ttqlab.data.load(name) for name in ("mnist1d", "digits")}
    out = {}
    for name, (dataset, build) in _models().items():
        model = build()
        ttqlab.fit(model, data[dataset], epochs=1, seed=0, progress=False)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            ttqlab.fit(model, data[dataset], epochs=1, seed=0, progress=False)
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times)
    print(json.dumps(out))


def _measure(threads: int, busy: bool, repeats: int) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.threads", "--child",
                               str(threads), "--repeats", str(repeats)], cwd=ROOT, env=env,
                              capture_output=True, text=True, check=False)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"the {threads}-thread run failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed epochs per model in each run (default 3)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" /
                    "threads.json", help="JSON result file (default: %(default)s)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child, args.repeats)
        return []
    from benchmarks import write_results
    from ttqlab.stats import Table

    seen: dict[tuple[str, int, str], list[float]] = {}
    for _ in range(args.rounds):
        for condition in CONDITIONS:
            for threads in THREADS:
                for model, seconds in _measure(threads, condition != "idle",
                                               args.repeats).items():
                    seen.setdefault((model, threads, condition), []).append(seconds)
    rows = []
    for (model, threads, condition), times in seen.items():
        one = statistics.median(seen[(model, 1, condition)])
        med = statistics.median(times)
        rows.append({"model": model, "condition": condition, "threads": threads,
                     "epoch s (median)": round(med, 3),
                     "vs 1 thread": round(med / one, 2)})
    rows.sort(key=lambda r: (r["model"], r["condition"], r["threads"]))
    print(Table(rows, title="one training epoch: 1 vs 2 torch threads (lower is faster)"))
    write_results(args.out, "threads", rows, argv)
    return rows


if __name__ == "__main__":
    main()
