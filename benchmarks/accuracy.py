"""Test accuracy of each method on the offline datasets, mean and spread over seeds.

    python -m benchmarks.accuracy [--quick] [--datasets digits mnist1d] [--seeds 5]
        [--epochs 15] [--all-layers] [--init pretrained|scratch] [--out results/accuracy.json]

For every seed: a full-precision model is trained with Adam (lr 1e-3, cosine schedule);
binary, TWN and TTQ then train for the same number of epochs (from that model with
``--init pretrained``, the TTQ / INQ papers' practice, or from the same random init with
``--init scratch``), and INQ (5 bits, schedule 0.5 / 0.75 / 0.875 / 1) re-trains from it.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import ttqlab
from ttqlab.experiments import ALL_METHODS, compare
from ttqlab.stats import Table

MODELS = {"digits": "lenet5", "mnist1d": "mlp", "synthetic": "mlp"}


def run(dataset: str, seeds: int, epochs: int, keep_first_last: bool, init: str,
        quick: bool = False) -> list[dict]:
    limits = {"limit_train": 256, "limit_test": 128} if quick else {}
    per_method: dict[str, list[dict]] = {m: [] for m in ALL_METHODS}
    for seed in range(seeds):
        data = ttqlab.data.load(dataset, seed=seed, **limits)
        name = MODELS[dataset]

        def build(s, name=name, data=data):
            return ttqlab.models.get(name, input_shape=data.input_shape,
                                     num_classes=data.num_classes, seed=s)

        table, _ = compare(build, data, epochs=epochs, seed=seed, init=init,
                           keep_first_last=keep_first_last, lr_schedule="cosine")
        for row in table:
            per_method[row["method"]].append(row)
    rows = []
    fp = [r["test_acc"] for r in per_method["fp32"]]
    for method, runs in per_method.items():
        accs = [r["test_acc"] for r in runs]
        rows.append({
            "dataset": dataset, "model": MODELS[dataset], "method": method,
            "init": runs[0]["init"], "layers": "all" if not keep_first_last else "inner",
            "epochs": epochs, "seeds": seeds,
            "acc mean": 100 * statistics.mean(accs),
            "acc std": 100 * statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "vs fp32": 100 * (statistics.mean(accs) - statistics.mean(fp)),
            "min": 100 * min(accs), "max": 100 * max(accs),
            "sparsity": statistics.mean(r["sparsity"] for r in runs),
            "model ratio": runs[0]["model ratio"],
        })
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run for CI")
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--all-layers", action="store_true",
                    help="quantize the first and last layer too")
    ap.add_argument("--init", default="pretrained", choices=["pretrained", "scratch"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    seeds, epochs = (2, 1) if args.quick else (args.seeds, args.epochs)
    rows = []
    for ds in args.datasets:
        rows += run(ds, seeds, epochs, not args.all_layers, args.init, args.quick)
    print(Table(rows, title="test accuracy (%) over seeds"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
