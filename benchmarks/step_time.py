"""Training-step time of each method relative to full precision (same model and batch).

    python -m benchmarks.step_time [--quick] [--device cpu cuda] [--threads N] [--compile]
        [--out results/step_time.json]

``--compile`` times ``torch.compile(model)`` (every method and fp32 compiled alike; the
compilation itself happens in the warm-up and is not timed).

One step = forward, cross-entropy, backward, optimizer (Adam) step. For each model the
methods are timed in interleaved rounds (fp32, binary, twn, ttq, inq, bitnet, fp32, ...) so
that drift in machine speed hits all of them alike; the table reports the median step
time over all rounds and the median over rounds of each round's ratio to the full-precision
run of the same round (so that drift between rounds cancels).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import ttqlab
from benchmarks import write_results

METHODS = ["fp32", "binary", "twn", "ttq", "inq", "bitnet"]
CONFIGS = {
    "lenet5": dict(input_shape=(1, 28, 28)),
    "resnet20": dict(input_shape=(3, 32, 32)),
}


def make(model_name: str, method: str, device: str, compile: bool = False):
    model = ttqlab.models.get(model_name, seed=0, **CONFIGS[model_name])
    if method == "inq":
        inq = ttqlab.INQ(model, bits=5)
        inq.step()  # 50% frozen: the re-training phase INQ spends its time in
    elif method != "fp32":
        ttqlab.quantize(model, method)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return (torch.compile(model) if compile else model), opt


def step(model, opt, x, y):
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bench(model_name: str, batch: int, rounds: int, steps: int, device: str,
          compile: bool = False) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    shape = CONFIGS[model_name]["input_shape"]
    x = torch.randn(batch, *shape, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    if compile:
        torch._dynamo.reset()
    built = {m: make(model_name, m, device, compile) for m in METHODS}
    times = {m: [] for m in METHODS}
    for m in METHODS:  # warm-up
        for _ in range(3):
            step(*built[m], x, y)
    for _ in range(rounds):
        for m in METHODS:
            model, opt = built[m]
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(steps):
                step(model, opt, x, y)
            if device == "cuda":
                torch.cuda.synchronize()
            times[m].append((time.perf_counter() - t) / steps)
    rows = []
    for m in METHODS:
        # the ratio of each round to the fp32 run of the same round, then the median: a
        # machine that speeds up or slows down between rounds cancels out
        ratios = [t / b for t, b in zip(times[m], times["fp32"])]
        rows.append({"model": model_name, "method": m, "batch": batch, "device": device,
                     "threads": torch.get_num_threads(), "compiled": compile,
                     "step_ms": 1000 * statistics.median(times[m]),
                     "ratio": statistics.median(ratios),
                     "ratio_spread": (max(ratios) - min(ratios)) / 2 if len(ratios) > 1 else 0.0})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run for CI (a few steps)")
    ap.add_argument("--device", nargs="+", default=None, choices=["cpu", "cuda"],
                    help="default: cpu, and cuda too when a GPU is present")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--models", nargs="+", default=list(CONFIGS))
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's, all cores; --quick: 1)")
    ap.add_argument("--compile", action="store_true", help="time torch.compile(model)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    threads = args.threads or (1 if args.quick else None)
    if threads:
        torch.set_num_threads(threads)
    rounds, steps = (2, 1) if args.quick else (15, 3)
    rows = []
    for name in args.models:
        for device in args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
            rows += bench(name, args.batch if not args.quick else 8, rounds, steps, device,
                          compile=args.compile)
    cols = ["model", "method", "batch", "device", "threads", "compiled", "step_ms", "ratio",
            "ratio_spread"]
    print(ttqlab.stats.Table(rows, cols, title="training-step time (median), ratio to fp32"))
    write_results(args.out, "step_time", rows, argv)
    return rows


if __name__ == "__main__":
    main()
