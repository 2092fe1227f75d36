"""Test accuracy of every method in the papers' regime, over seeds, with the claims judged.

    python -m benchmarks.accuracy [--quick] [--seeds 5] [--epochs 10] [--datasets mnist1d]
        [--channels 16] [--lrs 3e-4 1e-3 3e-3 1e-2 3e-2 1e-1] [--all-layers] [--threads 1]
        [--out benchmarks/results/accuracy.json]

Runs ``ttqlab.experiments.compare`` (what ``ttqlab compare`` runs): per seed one converged
full-precision start (`ttqlab.starts.Recipe`, cached), then every row, the fp32 control
included, fine-tunes it for ``--epochs`` with a cosine schedule; INQ's one-step schedule is
the ablation of its increments.

Each row's fine-tuning learning rate is chosen on the validation split: ``compare`` runs
once per candidate in ``--lrs``; each method, the fp32 control included, gets the lr with
its highest validation accuracy (mean over seeds), and a last run with those lrs gives the
reported table. Only its test accuracies are reported; ``selection`` records every
candidate's validation accuracy and which choices sit at the grid's edge.
The claims are judged from the 95% interval of the paired per-seed test differences
(`ttqlab.evidence`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import ttqlab
from benchmarks import write_results
from ttqlab.experiments import ALL_METHODS, CLAIMS, FINETUNE_LRS, compare
from ttqlab.starts import Recipe
from ttqlab.stats import Table

__all__ = ["CLAIMS", "MODELS", "main", "run"]

#: the default model per dataset (README "Results": why this width)
MODELS = {"mnist1d": ("cnn1d", {"channels": 32}), "digits": ("lenet5", {}),
          "synthetic": ("mlp", {})}
LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


def _model(dataset: str, channels: int | None) -> tuple[str, dict]:
    name, kwargs = MODELS[dataset]
    if channels is not None and name == "cnn1d":
        kwargs = {"channels": channels}
    return name, kwargs


def run(dataset: str, seeds: int, epochs: int, keep_first_last: bool, lrs=LRS,
        quick: bool = False, channels: int | None = None,
        recipe: Recipe | None = None) -> tuple[list[dict], list[dict], dict]:
    """(rows, claims, selection) for one dataset."""
    limits = {"limit_train": 256, "limit_test": 128} if quick else {}
    data = ttqlab.data.load(dataset, seed=0, **limits).split_validation(0.1, seed=0)
    name, kwargs = _model(dataset, channels)

    def build(s):
        return ttqlab.models.get(name, input_shape=data.input_shape,
                                 num_classes=data.num_classes, seed=s, **kwargs)

    seed_list = list(range(seeds))
    candidates = []
    for lr in lrs:
        start = time.perf_counter()
        table, _ = compare(build, data, epochs=epochs, seeds=seed_list, lr=lr,
                           methods=ALL_METHODS, recipe=recipe,
                           keep_first_last=keep_first_last)
        seconds = time.perf_counter() - start
        candidates.append({"lr": lr, "seconds": seconds,
                           "val_acc": {r["method"]: r["val_acc_mean"] for r in table.rows}})
        print(f"{dataset}: fine-tuning lr {lr:g}: validation accuracy "
              + ", ".join(f"{m} {v:.2f}%" for m, v in candidates[-1]["val_acc"].items())
              + f" ({seconds:.0f} s)", flush=True)
    chosen = {m: max(candidates, key=lambda c, m=m: c["val_acc"][m])["lr"]
              for m in ALL_METHODS}
    start = time.perf_counter()
    table, _ = compare(build, data, epochs=epochs, seeds=seed_list, lr=chosen,
                       methods=ALL_METHODS, recipe=recipe, keep_first_last=keep_first_last)
    seconds = time.perf_counter() - start
    model = name + "".join(f" {k}={v}" for k, v in kwargs.items())
    meta = {k: table.meta[k] for k in ("recipe", "finetune", "val_split", "starts",
                                       "match_margin")}
    rows = [{"dataset": dataset, "model": model, "train": table.meta["train"],
             "val": table.meta["val"], "test": table.meta["test_images"],
             "layers": "all" if not keep_first_last else "inner",
             "point per test image": table.meta["point_per_test_image"],
             "compare seconds": seconds, **meta, **r} for r in table.rows]
    claims = [{"dataset": dataset, "model": model, **c} for c in table.claims]
    edge = [m for m, v in chosen.items() if v in (min(lrs), max(lrs)) and len(lrs) > 1]
    selection = {"dataset": dataset, "model": model, "candidates": candidates,
                 "chosen_lr": chosen, "at_grid_edge": edge,
                 "library_default_lr": dict(FINETUNE_LRS)}
    return rows, claims, selection


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run for CI")
    ap.add_argument("--datasets", nargs="+", default=["mnist1d"], choices=sorted(MODELS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs per row")
    ap.add_argument("--channels", type=int, default=None, help="cnn1d width (default 32)")
    ap.add_argument("--lrs", type=float, nargs="+", default=list(LRS),
                    help="fine-tuning learning rates to choose from on validation")
    ap.add_argument("--all-layers", action="store_true",
                    help="quantize the first and last layer too")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: fastest for these small models, and the "
                         "numbers do not depend on the machine's core count)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.seeds < 2 and not args.quick:
        ap.error("--seeds must be >= 2: an interval needs at least two seeds")
    torch.set_num_threads(args.threads)
    seeds, epochs = (2, 2) if args.quick else (args.seeds, args.epochs)
    recipe = Recipe(epochs=2) if args.quick else None
    lrs = args.lrs[:2] if args.quick else args.lrs
    rows, claims, selection = [], [], []
    for ds in args.datasets:
        r, c, s = run(ds, seeds, epochs, not args.all_layers, lrs, args.quick,
                      args.channels, recipe)
        rows += r
        claims += c
        selection.append(s)
    cols = ["dataset", "model", "method", "epochs", "val_acc_mean", "test_acc_mean",
            "test_acc_std", "delta_vs_fp32_mean", "delta_vs_fp32_low", "delta_vs_fp32_high",
            "sparsity", "seconds"]
    print(Table(rows, cols, title=f"test accuracy (%) over {seeds} seeds, converged starts"))
    print(Table([{**c, "mean": c["interval"]["mean"], "low": c["interval"]["low"],
                  "high": c["interval"]["high"]} for c in claims],
                ["dataset", "paper", "claim", "comparison", "mean", "low", "high",
                 "verdict"], title="papers' claims: 95% intervals of paired differences"))
    doc = write_results(args.out, "accuracy", rows, argv)
    doc["claims"], doc["selection"] = claims, selection
    if args.out is not None:
        args.out.write_text(json.dumps(doc, indent=1))
    return rows


if __name__ == "__main__":
    main()
