"""Where full precision converges: validation accuracy against training epochs and recipe.

    python -m benchmarks.plateau [--quick] [--channels 16 32] [--seeds 3] [--threads 1]
        [--out benchmarks/results/plateau.json]

``cnn1d`` on MNIST-1D (validation split of the training set) trained by
`ttqlab.starts.Recipe` variants: Adam lr 1e-2 with a cosine schedule for 10 ... 80 epochs
(the start's recipe is the shortest within about a point of the longest), and the former
default, Adam lr 1e-3 constant, for comparison. The quantized methods are then compared
from a plateau, not from a model still climbing.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

import ttqlab
from benchmarks import write_results
from ttqlab.starts import Recipe, pretrain
from ttqlab.stats import Table

__all__ = ["RECIPES", "main", "run"]

RECIPES = {"cosine": [Recipe(epochs=e) for e in (10, 20, 40, 80)],
           "constant 1e-3": [Recipe(epochs=e, lr=1e-3, lr_schedule=None)
                             for e in (10, 20, 40, 80)]}


def run(channels, seeds: int, recipes=RECIPES, quick: bool = False) -> list[dict]:
    limits = {"limit_train": 256, "limit_test": 128} if quick else {}
    data = ttqlab.data.load("mnist1d", seed=0, **limits).split_validation(0.1, seed=0)
    rows = []
    for width in channels:
        def build(s, width=width):
            return ttqlab.models.get("cnn1d", input_shape=data.input_shape,
                                     num_classes=data.num_classes, seed=s, channels=width)

        for family, variants in recipes.items():
            for recipe in variants:
                starts = [pretrain(build, data, s, recipe) for s in range(seeds)]
                val = [100 * st.history.last["val_acc"] for st in starts]
                train = [100 * st.history.last["train_acc"] for st in starts]
                rows.append({"dataset": "mnist1d", "model": "cnn1d", "channels": width,
                             "family": family, "recipe": str(recipe),
                             "epochs": recipe.epochs, "seeds": list(range(seeds)),
                             "val_acc": val, "val_acc_mean": statistics.mean(val),
                             "val_acc_std": statistics.stdev(val) if seeds > 1 else 0.0,
                             "train_acc_mean": statistics.mean(train),
                             "seconds_mean": statistics.mean(st.seconds for st in starts)})
                print(f"channels={width} {recipe}: val {rows[-1]['val_acc_mean']:.2f}%",
                      flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run for CI")
    ap.add_argument("--channels", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        rows = run([4], 2, {"cosine": [Recipe(epochs=1), Recipe(epochs=2)]}, quick=True)
    else:
        rows = run(args.channels, args.seeds)
    print(Table(rows, ["channels", "family", "epochs", "val_acc_mean", "val_acc_std",
                       "train_acc_mean", "seconds_mean"],
                title="full precision: validation accuracy (%) against the recipe"))
    write_results(args.out, "plateau", rows, argv)
    return rows


if __name__ == "__main__":
    main()
