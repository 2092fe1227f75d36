"""The capacity curve: each method's gap to full precision against the network's width.

    python -m benchmarks.capacity [--quick] [--widths 8 16 32 64] [--seeds 5] [--epochs 10]
        [--threads 1] [--out benchmarks/results/capacity.json]

``cnn1d`` on MNIST-1D at several channel counts, each run as ``ttqlab compare`` runs it
(converged full-precision start per seed, every row fine-tuned the same epochs with a
cosine schedule, the library's fine-tuning lr). A row per (width, method): parameters,
validation and test accuracy, and the 95% interval of the paired per-seed test
difference to fp32. The papers' networks are wide; a narrow one shows quantization's cost
and where it shrinks.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import ttqlab
from benchmarks import write_results
from ttqlab.experiments import compare
from ttqlab.starts import Recipe
from ttqlab.stats import Table

__all__ = ["METHODS", "WIDTHS", "main", "run"]

WIDTHS = (8, 16, 32, 64)
METHODS = ("fp32", "binary", "twn", "ttq", "inq")


def run(widths, seeds: int, epochs: int, quick: bool = False) -> list[dict]:
    limits = {"limit_train": 256, "limit_test": 128} if quick else {}
    data = ttqlab.data.load("mnist1d", seed=0, **limits).split_validation(0.1, seed=0)
    recipe = Recipe(epochs=2) if quick else None
    rows = []
    for width in widths:
        def build(s, width=width):
            return ttqlab.models.get("cnn1d", input_shape=data.input_shape,
                                     num_classes=data.num_classes, seed=s, channels=width)

        params = sum(p.numel() for p in build(0).parameters())
        start = time.perf_counter()
        table, _ = compare(build, data, epochs=epochs, seeds=list(range(seeds)),
                           methods=METHODS, recipe=recipe)
        seconds = time.perf_counter() - start
        print(f"cnn1d channels={width}: {seconds:.0f} s", flush=True)
        for r in table.rows:
            rows.append({"dataset": "mnist1d", "model": "cnn1d", "channels": width,
                         "params": params, "compare seconds": seconds,
                         "test": table.meta["test_images"],
                         "finetune": table.meta["finetune"],
                         "recipe": table.meta["recipe"],
                         "start_final_val": [s["final"] for s in table.meta["starts"]],
                         **{k: r[k] for k in ("method", "epochs", "seeds", "val_acc_mean",
                                              "test_acc_mean", "test_acc_std", "test_acc",
                                              "delta_vs_fp32_mean", "delta_vs_fp32_std",
                                              "delta_vs_fp32_low", "delta_vs_fp32_high",
                                              "sparsity")}})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run for CI")
    ap.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs per row")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.seeds < 2 and not args.quick:
        ap.error("--seeds must be >= 2: an interval needs at least two seeds")
    torch.set_num_threads(args.threads)
    widths, seeds, epochs = ((4, 8), 2, 2) if args.quick else (args.widths, args.seeds,
                                                              args.epochs)
    rows = run(widths, seeds, epochs, args.quick)
    print(Table(rows, ["channels", "params", "method", "test_acc_mean", "delta_vs_fp32_mean",
                       "delta_vs_fp32_low", "delta_vs_fp32_high"],
                title=f"capacity: Δ vs fp32 (points, 95% CI over {seeds} seeds)"))
    write_results(args.out, "capacity", rows, argv)
    return rows


if __name__ == "__main__":
    main()
