"""Test accuracy of each method on the offline datasets, mean and spread over seeds.

    python -m benchmarks.accuracy [--quick] [--datasets digits mnist1d] [--seeds 5]
        [--epochs 30] [--all-layers] [--init pretrained|scratch] [--models mnist1d=mlp]
        [--ttq-sparsity 0.3 0.5 0.7 0.9] [--threads 1] [--out results/accuracy.json]

For every seed: a full-precision model is trained with Adam (lr 1e-3, cosine schedule);
binary, TWN and TTQ then train for the same number of epochs (from that model with
``--init pretrained``, the TTQ / INQ papers' practice, or from the same random init with
``--init scratch``), and INQ (5 bits, schedule 0.5 / 0.75 / 0.875 / 1) re-trains from it.
With ``--init pretrained`` the quantized models have trained twice as long as the
full-precision start, so the reference for "vs fp32" is ``fp32-continued``: the same
full-precision model trained for the same further epochs (gap = mean and std of the
per-seed differences). ``--ttq-sparsity`` adds ttqlab's fixed-sparsity TTQ mode
(inspired by, not equal to, the authors' ``p_ternarize`` of Section 5) at each target sparsity: accuracy against sparsity.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

import ttqlab
from benchmarks import write_results
from ttqlab.experiments import ALL_METHODS, compare, train_method
from ttqlab.stats import Table

MODELS = {"digits": "lenet5", "mnist1d": "cnn1d", "synthetic": "mlp"}
REFERENCE = "fp32-continued"
TRAINING = "Adam, lr 1e-3, cosine schedule, batch 64; INQ: 5 bits, 0.5 / 0.75 / 0.875 / 1"


def run(dataset: str, seeds: int, epochs: int, keep_first_last: bool, init: str,
        quick: bool = False, model: str | None = None,
        ttq_sparsity: Sequence[float] = ()) -> list[dict]:
    """One row per method: accuracy mean / std / min / max over seeds, and the gap to
    full precision trained for as many epochs (mean and std of the per-seed gaps).

    ``ttq_sparsity``: also TTQ's fixed-sparsity variant at each target sparsity (rows
    with method ``"ttq-sparsity"``), trained like TTQ: the accuracy-vs-sparsity curve.
    """
    limits = {"limit_train": 256, "limit_test": 128} if quick else {}
    name = model or MODELS[dataset]
    per_method: dict[str, list[dict]] = {}
    for seed in range(seeds):
        data = ttqlab.data.load(dataset, seed=seed, **limits)

        def build(s, data=data):
            return ttqlab.models.get(name, input_shape=data.input_shape,
                                     num_classes=data.num_classes, seed=s)

        table, results = compare(build, data, epochs=epochs, seed=seed, init=init,
                                 keep_first_last=keep_first_last, lr_schedule="cosine")
        for row in table:
            per_method.setdefault(row["method"], []).append(row)
        if init == "pretrained":
            # the fair reference: full precision trained as long as the quantized models
            # (which started from the trained fp32 model and trained `epochs` more)
            longer = train_method(copy.deepcopy(results["fp32"].model), "fp32", data,
                                  epochs=epochs, seed=seed, lr_schedule="cosine")
            per_method.setdefault(REFERENCE, []).append(
                {**longer.summary, "method": REFERENCE, "init": "pretrained"})
        start = "pretrained" if init == "pretrained" else "scratch"
        for p in ttq_sparsity:
            net = copy.deepcopy(results["fp32"].model) if start == "pretrained" else build(seed)
            r = train_method(net, "ttq", data, epochs=epochs, init=start, seed=seed,
                             options={"sparsity": p}, keep_first_last=keep_first_last,
                             lr_schedule="cosine")
            per_method.setdefault(f"ttq-sparsity {p:g}", []).append(r.summary)
    ref = REFERENCE if init == "pretrained" else "fp32"
    ref_accs = [r["test_acc"] for r in per_method[ref]]
    order = ["fp32", REFERENCE, *ALL_METHODS[1:]] + [f"ttq-sparsity {p:g}" for p in ttq_sparsity]
    rows = []
    for key in [m for m in order if m in per_method]:
        runs = per_method[key]
        method = key.split()[0]
        accs = [r["test_acc"] for r in runs]
        gaps = [a - b for a, b in zip(accs, ref_accs)]
        trained = epochs * (2 if method == REFERENCE or (
            init == "pretrained" and method not in ("fp32", "inq")) else 1)
        if method == "inq":
            trained = epochs + 4 * math.ceil(epochs / 4)
        rows.append({
            "dataset": dataset, "train": len(data.train), "test": len(data.test),
            "model": name, "method": method, "training": TRAINING,
            "init": init, "start": runs[0]["init"],
            "layers": "all" if not keep_first_last else "inner",
            "epochs": epochs, "epochs total": trained, "seeds": seeds,
            "acc mean": 100 * statistics.mean(accs),
            "acc std": 100 * statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "vs fp32": 100 * statistics.mean(gaps),
            "gap std": 100 * statistics.stdev(gaps) if len(gaps) > 1 else 0.0,
            "reference": ref, "min": 100 * min(accs), "max": 100 * max(accs),
            "sparsity": statistics.mean(r["sparsity"] for r in runs),
            "model ratio": runs[0]["model ratio"],
            **({"target sparsity": float(key.split()[1])} if " " in key else {}),
        })
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run for CI")
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--ttq-sparsity", type=float, nargs="*", default=[0.3, 0.5, 0.7, 0.9],
                    help="target sparsities for TTQ's fixed-sparsity variant (--quick: 0.5)")
    ap.add_argument("--all-layers", action="store_true",
                    help="quantize the first and last layer too")
    ap.add_argument("--init", default="pretrained", choices=["pretrained", "scratch"])
    ap.add_argument("--models", nargs="+", default=[], metavar="DATASET=MODEL",
                    help=f"override the model per dataset (default {MODELS})")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: fastest for these small models, and the "
                         "numbers do not depend on the machine's core count)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        chosen = dict(m.split("=", 1) for m in args.models)
    except ValueError:
        ap.error(f"--models takes DATASET=MODEL pairs such as mnist1d=mlp, got {args.models}")
    torch.set_num_threads(args.threads)
    seeds, epochs = (2, 1) if args.quick else (args.seeds, args.epochs)
    rows = []
    for ds in args.datasets:
        rows += run(ds, seeds, epochs, not args.all_layers, args.init, args.quick,
                    chosen.get(ds), [0.5] if args.quick else args.ttq_sparsity)
    cols = ["dataset", "model", "method", "target sparsity", "layers", "epochs total", "seeds",
            "acc mean", "acc std", "vs fp32", "gap std", "min", "max", "sparsity"]
    print(Table(rows, cols, title=f"test accuracy (%) over seeds; vs fp32 = gap to "
                                  f"{rows[0]['reference']}"))
    write_results(args.out, "accuracy", rows, argv)
    return rows


if __name__ == "__main__":
    main()
