"""Whole experiments in one call: train one method, or compare all of them.

``train_method`` is what ``ttqlab train`` runs; ``compare`` is ``ttqlab compare``: full
precision, binary, TWN, TTQ and INQ on the same model and data, one table.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

from torch import nn

from .convert import quantize
from .inq import INQ, SCHEDULES
from .stats import Table, layer_report
from .train import History, fit

__all__ = ["ALL_METHODS", "Result", "compare", "summarize", "train_method"]

ALL_METHODS = ("fp32", "binary", "twn", "ttq", "inq")


@dataclass
class Result:
    """A trained model, its history and its one-line summary."""

    method: str
    model: nn.Module
    history: History
    seconds: float
    init: str

    @property
    def summary(self) -> dict:
        return summarize(self.model, self.method, self.history, self.seconds, self.init)


def summarize(model: nn.Module, method: str, history: History, seconds: float = math.nan,
              init: str = "") -> dict:
    """test accuracy, sparsity and bits of the quantized layers, whole-model bytes."""
    report = layer_report(model)
    qrows = [r for r in report.rows if r.get("method") not in ("fp32", None)]
    n = sum(r["params"] for r in qrows)
    total = report.rows[-1]
    q_fp32 = sum(r["fp32 bytes"] for r in qrows)
    q_packed = sum(r["packed bytes"] for r in qrows)
    return {
        "method": method, "init": init,
        "test_acc": history.last["test_acc"],
        "sparsity": sum(r["sparsity"] * r["params"] for r in qrows) / n if n else 0.0,
        "bits/weight": sum(r["bits/weight"] * r["params"] for r in qrows) / n if n else 32.0,
        "quantized ratio": q_fp32 / q_packed if q_packed else 1.0,
        "model bytes": total["packed bytes"],
        "model ratio": total["ratio"],
        "seconds": seconds,
    }


def train_method(
    model: nn.Module,
    method: str,
    data,
    *,
    epochs: int = 10,
    init: str = "scratch",
    options: dict | None = None,
    inq_schedule=SCHEDULES["default"],
    keep_first_last: bool = True,
    progress: bool = False,
    **fit_kwargs,
) -> Result:
    """Quantize ``model`` with ``method`` (``"fp32"`` leaves it float) and train it.

    For ``"inq"`` the model should be pre-trained; each step of ``inq_schedule`` freezes
    the next portion and is followed by ``ceil(epochs / len(schedule))`` epochs.
    ``init`` is only a label for the summary ("scratch" or "pretrained").
    """
    options = dict(options or {})
    start = time.perf_counter()
    if method == "fp32":
        history = fit(model, data, epochs=epochs, progress=progress, **fit_kwargs)
    elif method == "inq":
        inq = INQ(model, schedule=inq_schedule, keep_first_last=keep_first_last, **options)
        per_step = max(1, math.ceil(epochs / len(inq.schedule)))
        history = History()
        while not inq.done:
            inq.step()
            h = fit(model, data, epochs=per_step, progress=progress, **fit_kwargs)
            offset = history.epochs[-1]["epoch"] if history.epochs else 0
            for row in h.epochs if not history.epochs else h.epochs[1:]:
                history.epochs.append({**row, "epoch": row["epoch"] + offset,
                                       "inq_fraction": inq.fraction})
            history.layers += [{**r, "epoch": r["epoch"] + offset} for r in h.layers
                               if not history.layers or r["epoch"] > 0]
    elif method in ("binary", "twn", "ttq"):
        quantize(model, method, keep_first_last=keep_first_last, **options)
        history = fit(model, data, epochs=epochs, progress=progress, **fit_kwargs)
    else:
        raise ValueError(f"unknown method {method!r}; choose from {ALL_METHODS}")
    return Result(method, model, history, time.perf_counter() - start, init)


def compare(
    build,
    data,
    *,
    epochs: int = 10,
    methods=ALL_METHODS,
    init: str = "pretrained",
    seed: int = 0,
    keep_first_last: bool = True,
    progress: bool = False,
    **fit_kwargs,
) -> tuple[Table, dict[str, Result]]:
    """Train every method on the same model and data; return a table and the results.

    Args:
        build: ``build(seed) -> nn.Module``, a fresh float model (same seed, same model).
        data: a ``ttqlab.data.Data`` (or anything ``fit`` accepts as ``train``).
        init: ``"pretrained"`` (the papers' TTQ / INQ practice: every quantized method
            starts from the trained full-precision model and trains ``epochs`` more) or
            ``"scratch"`` (binary, TWN, TTQ from the same random init; INQ always needs
            the pre-trained model).
    """
    if init not in ("pretrained", "scratch"):
        raise ValueError(f"init must be 'pretrained' or 'scratch', got {init!r}")
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {ALL_METHODS}")
    results: dict[str, Result] = {}
    fp = train_method(build(seed), "fp32", data, epochs=epochs, seed=seed, progress=progress,
                      **fit_kwargs)
    if "fp32" in methods:
        results["fp32"] = fp
    for method in methods:
        if method == "fp32":
            continue
        start_from = "pretrained" if (init == "pretrained" or method == "inq") else "scratch"
        model = copy.deepcopy(fp.model) if start_from == "pretrained" else build(seed)
        results[method] = train_method(model, method, data, epochs=epochs, init=start_from,
                                       keep_first_last=keep_first_last, seed=seed,
                                       progress=progress, **fit_kwargs)
    rows = [r.summary for r in results.values()]
    base = fp.history.last["test_acc"]
    for r in rows:
        r["vs fp32"] = r["test_acc"] - base
    cols = ["method", "init", "test_acc", "vs fp32", "sparsity", "bits/weight",
            "quantized ratio", "model bytes", "model ratio", "seconds"]
    return Table(rows, cols, title=f"compare ({epochs} epochs each, seed {seed})"), results

