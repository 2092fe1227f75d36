"""Test accuracy of every method on the default dataset, mean ± std over seeds, equal budgets.

    python -m benchmarks.accuracy [--quick] [--seeds 5] [--epochs 10] [--datasets mnist1d]
        [--channels 16] [--init pretrained|scratch] [--all-layers] [--threads 1]
        [--out benchmarks/results/accuracy.json]

Runs ``ttqlab.experiments.compare`` (what ``ttqlab compare`` runs): every method trains the
same total number of epochs, pre-training included (half fp32 pre-training, half
fine-tuning; INQ's re-training epochs over its four steps add up to the same half; the
fp32 row trains on unquantized: the control). One extra row, INQ with a one-step schedule
(everything quantized at once, same budget), is the ablation for INQ's incremental claim.
``claims`` pairs up methods per seed (mean ± std of the per-seed differences) and says
whether each paper's claim shows beyond twice that spread.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import ttqlab
from benchmarks import write_results
from ttqlab.experiments import compare
from ttqlab.stats import Table

#: the default model per dataset (README "Results": why the narrow cnn1d)
MODELS = {"mnist1d": ("cnn1d", {"channels": 16}), "digits": ("lenet5", {}),
          "synthetic": ("mlp", {})}
TRAINING = "Adam, lr 1e-3, batch 64, constant lr; INQ: 5 bits, 0.5 / 0.75 / 0.875 / 1"
#: (claim, paper, better, worse): "better beats worse"
CLAIMS = [("ternary beats binary", "TWN", "twn", "binary"),
          ("ternary beats binary", "TTQ", "ttq", "binary"),
          ("learned scales beat TWN's", "TTQ", "ttq", "twn"),
          ("incremental beats one-shot", "INQ", "inq", "inq-oneshot"),
          ("5-bit matches full precision", "INQ", "inq", "fp32")]


def _diff(a: list[float], b: list[float]) -> tuple[float, float]:
    d = [x - y for x, y in zip(a, b)]
    return statistics.mean(d), statistics.stdev(d) if len(d) > 1 else 0.0


def run(dataset: str, seeds: int, epochs: int, keep_first_last: bool, init: str,
        quick: bool = False, channels: int | None = None) -> tuple[list[dict], list[dict]]:
    """Rows (one per method, compare's JSON fields) and the paired claims."""
    limits = {"limit_train": 256, "limit_test": 128} if quick else {}
    data = ttqlab.data.load(dataset, seed=0, **limits)
    name, kwargs = MODELS[dataset]
    if channels is not None and name == "cnn1d":
        kwargs = {"channels": channels}

    def build(s):
        return ttqlab.models.get(name, input_shape=data.input_shape,
                                 num_classes=data.num_classes, seed=s, **kwargs)

    seed_list = list(range(seeds))
    start = time.perf_counter()
    table, _ = compare(build, data, epochs=epochs, seeds=seed_list, init=init,
                       keep_first_last=keep_first_last)
    main_seconds = time.perf_counter() - start
    oneshot, _ = compare(build, data, epochs=epochs, seeds=seed_list, init=init,
                         methods=["fp32", "inq"], inq_schedule=(1.0,),
                         keep_first_last=keep_first_last)
    extra = {**oneshot.rows[1], "method": "inq-oneshot"}
    model = name + "".join(f" {k}={v}" for k, v in kwargs.items())
    rows = []
    for r in [*table.rows, extra]:
        rows.append({"dataset": dataset, "model": model, "train": len(data.train),
                     "test": len(data.test), "training": TRAINING, "init": init,
                     "layers": "all" if not keep_first_last else "inner",
                     "point per test image": 100 / len(data.test),
                     "compare seconds": main_seconds, **r})
    accs = {r["method"]: r["test_acc"] for r in rows}
    claims = []
    for claim, paper, better, worse in CLAIMS:
        m, s = _diff(accs[better], accs[worse])
        shows = (m > 2 * s and m > 0) if claim != "5-bit matches full precision" else (
            m > -max(2 * s, 100 / len(data.test)))
        claims.append({"dataset": dataset, "paper": paper, "claim": claim,
                       "comparison": f"{better} - {worse}", "diff mean": m, "diff std": s,
                       "seeds": seeds, "shows": bool(shows)})
    return rows, claims


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run for CI")
    ap.add_argument("--datasets", nargs="+", default=["mnist1d"], choices=sorted(MODELS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10, help="total per method (default 10)")
    ap.add_argument("--channels", type=int, default=None, help="cnn1d width (default 16)")
    ap.add_argument("--all-layers", action="store_true",
                    help="quantize the first and last layer too")
    ap.add_argument("--init", default="pretrained", choices=["pretrained", "scratch"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: fastest for these small models, and the "
                         "numbers do not depend on the machine's core count)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.seeds < 2 and not args.quick:
        ap.error("--seeds must be >= 2: a spread needs at least two seeds")
    torch.set_num_threads(args.threads)
    seeds, epochs = (2, 2) if args.quick else (args.seeds, args.epochs)
    rows, claims = [], []
    for ds in args.datasets:
        r, c = run(ds, seeds, epochs, not args.all_layers, args.init, args.quick,
                   args.channels)
        rows += r
        claims += c
    cols = ["dataset", "model", "method", "epochs", "test_acc_mean", "test_acc_std",
            "delta_vs_fp32_mean", "delta_vs_fp32_std", "sparsity", "seconds"]
    print(Table(rows, cols, title=f"test accuracy (%) over {seeds} seeds, equal budgets"))
    print(Table(claims, ["dataset", "paper", "claim", "comparison", "diff mean", "diff std",
                         "shows"], title="papers' claims: paired per-seed differences"))
    doc = write_results(args.out, "accuracy", rows, argv)
    if args.out is not None:  # the claims next to the rows
        import json

        doc["claims"] = claims
        args.out.write_text(json.dumps(doc, indent=1))
    return rows


if __name__ == "__main__":
    main()
