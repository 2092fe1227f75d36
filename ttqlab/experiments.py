"""Whole experiments in one call: train one method, or compare all of them.

``train_method`` is what ``ttqlab train`` runs; ``compare`` is ``ttqlab compare``: full
precision, binary, TWN, TTQ and INQ on the same model and data, one table, under an equal
training budget and over several seeds (mean +- standard deviation).
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from .convert import quantize
from .inq import INQ, SCHEDULES
from .stats import Table, layer_report
from .train import History, evaluate, fit

__all__ = ["ALL_METHODS", "DEFAULT_SEEDS", "Comparison", "Result", "check_seeds", "compare",
           "spread_epochs", "summarize", "train_method"]

ALL_METHODS = ("fp32", "binary", "twn", "ttq", "inq")
DEFAULT_SEEDS = (0, 1, 2)


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



def spread_epochs(epochs: int, steps: int) -> list[int]:
    """``epochs`` re-training epochs spread over ``steps`` INQ steps, earlier steps first:
    ``spread_epochs(6, 4) == [2, 2, 1, 1]``; the list always sums to ``epochs`` (no hidden
    extra epochs; with fewer epochs than steps the last steps get 0)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    return [epochs // steps + (1 if i < epochs % steps else 0) for i in range(steps)]


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
    """Quantize ``model`` with ``method`` (``"fp32"`` leaves it float) and train it
    ``epochs`` epochs in total.

    For ``"inq"`` the model should be pre-trained; each step of ``inq_schedule`` freezes
    the next portion and is followed by its share of the ``epochs`` re-training epochs
    (``spread_epochs(epochs, len(schedule))``: they add up to ``epochs``).
    ``init`` is only a label for the summary ("scratch" or "pretrained").
    """
    options = dict(options or {})
    start = time.perf_counter()
    if method == "fp32":
        history = fit(model, data, epochs=epochs, progress=progress, **fit_kwargs)
    elif method == "inq":
        inq = INQ(model, schedule=inq_schedule, keep_first_last=keep_first_last, **options)
        history = _train_inq(model, inq, data, epochs, progress, fit_kwargs)
    elif method in ("binary", "twn", "ttq"):
        quantize(model, method, keep_first_last=keep_first_last, **options)
        history = fit(model, data, epochs=epochs, progress=progress, **fit_kwargs)
    else:
        raise ValueError(f"unknown method {method!r}; choose from {ALL_METHODS}")
    return Result(method, model, history, time.perf_counter() - start, init)


def _train_inq(model, inq, data, epochs, progress, fit_kwargs) -> History:
    history = History()
    for step_epochs in spread_epochs(epochs, len(inq.schedule)):
        inq.step()
        if step_epochs == 0 and history.epochs:
            # no epochs left for this step: freeze, and re-evaluate the last epoch's model
            loss, acc = evaluate(model, data.test if hasattr(data, "test") else data)
            history.epochs[-1] = {**history.epochs[-1], "test_loss": loss, "test_acc": acc,
                                  "inq_fraction": inq.fraction}
            continue
        h = fit(model, data, epochs=step_epochs, progress=progress, **fit_kwargs)
        offset = history.epochs[-1]["epoch"] if history.epochs else 0
        for row in h.epochs if not history.epochs else h.epochs[1:]:
            history.epochs.append({**row, "epoch": row["epoch"] + offset,
                                   "inq_fraction": inq.fraction})
        history.layers += [{**r, "epoch": r["epoch"] + offset} for r in h.layers
                           if not history.layers or r["epoch"] > 0]
    return history


def check_seeds(seeds) -> list[int]:
    """``seeds`` as a list of distinct ints >= 0, or a ValueError saying what to pass."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        raise ValueError(f"seeds must be a list of seeds such as [0, 1, 2], got the int "
                         f"{seeds}; for N seeds pass list(range(N))")
    try:
        seeds = list(seeds)
    except TypeError:
        raise ValueError(f"seeds must be a list of ints such as [0, 1, 2], got {seeds!r}") \
            from None
    if not seeds:
        raise ValueError("seeds is empty; pass at least one seed, e.g. seeds=[0, 1, 2]")
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        raise ValueError(f"seeds must be ints >= 0, got {bad}; e.g. seeds=[0, 1, 2]")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"seeds {repeated} are repeated; a repeated seed repeats the same "
                         f"run and understates the spread: pass distinct seeds")
    return seeds


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = list(values)
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


class Comparison(Table):
    """``compare``'s table: one row per method, numbers as the JSON has them (accuracy in
    percent, Δ in points), printed readably with a legend and a noise note."""

    def __init__(self, rows, *, caption: str, notes: Sequence[str], meta: dict):
        super().__init__(rows, ["method", "epochs", "test_acc_mean", "test_acc_std",
                                "delta_vs_fp32_mean", "delta_vs_fp32_std", "sparsity",
                                "bits_per_weight", "model_bytes", "seconds"], title=caption)
        self.notes = list(notes)
        self.meta = meta

    def to_dict(self) -> dict:
        """What ``ttqlab compare --json`` writes: ``{"rows": [...], **meta}``."""
        return {"rows": self.rows, "caption": self.title, "notes": self.notes, **self.meta}

    def text_rows(self) -> tuple[list[str], list[list[str]]]:
        has_delta = any(r["delta_vs_fp32_mean"] is not None for r in self.rows)
        head = ["method", "epochs", "test accuracy (%)"]
        head += ["Δ vs fp32 (points)"] if has_delta else []
        head += ["zeros (%)", "bits/weight", "size (KiB)", "time (s/seed)"]
        n = len(self.meta.get("seeds", [])) or 1
        cells = []
        for r in self.rows:
            row = [r["method"], str(r["epochs"]), _pm(r["test_acc_mean"], r["test_acc_std"], n)]
            if has_delta:
                row.append("reference" if r["method"] == "fp32" else _pm(
                    r["delta_vs_fp32_mean"], r["delta_vs_fp32_std"], n, sign=True))
            row += [f"{100 * r['sparsity']:.1f}", f"{r['bits_per_weight']:g}",
                    f"{r['model_bytes'] / 1024:.1f}", f"{r['seconds']:.1f}"]
            cells.append(row)
        return head, cells

    def __str__(self) -> str:
        head, cells = self.text_rows()
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
        line = "  ".join(h.rjust(w) for h, w in zip(head, widths))
        import textwrap

        width = max(len(line), 88)
        out = [textwrap.fill(self.title, width), line, "-" * len(line)]
        out += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join([*out, "", *(textwrap.fill(n, width) for n in self.notes)])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        import html
        head, cells = self.text_rows()
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                       for row in cells)
        notes = "".join(f"<p>{html.escape(n)}</p>" for n in self.notes)
        return (f"<table><caption>{html.escape(self.title)}</caption><thead><tr>{th}</tr>"
                f"</thead><tbody>{body}</tbody></table>{notes}")

    def to_markdown(self) -> str:
        head, cells = self.text_rows()
        out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(out)


def _pm(mean: float, std: float, n: int, sign: bool = False) -> str:
    m = f"{mean:+.2f}" if sign else f"{mean:.2f}"
    return m if n < 2 else f"{m} ± {std:.2f}"


LEGEND = ("epochs: all the training the model got, pre-training included; test accuracy: "
          "mean ± std over seeds; Δ: mean ± std of the per-seed differences to fp32, in "
          "percentage points; zeros: fraction of quantized weights that are 0 (TTQ's "
          "threshold t * max|w| zeroes fewer than TWN's 0.7 E|w|); bits/weight: of the "
          "quantized layers; size: whole model packed as ttqlab.export writes it; time: "
          "all of the method's training per seed, pre-training included (shared, so "
          "counted in each row that starts from it).")


def compare(
    build: Callable[[int], nn.Module],
    data,
    *,
    epochs: int = 10,
    pretrain_epochs: int | None = None,
    methods: Sequence[str] = ALL_METHODS,
    init: str = "pretrained",
    seeds: Sequence[int] | None = None,
    seed: int | None = None,
    keep_first_last: bool = True,
    inq_schedule: Sequence[float] = SCHEDULES["default"],
    progress: bool = False,
    **fit_kwargs,
) -> tuple[Comparison, dict[str, Result]]:
    """Train every method on the same model and data under an equal budget, over seeds.

    Every row trains ``epochs`` epochs in total, pre-training included:

    * ``init="pretrained"`` (the TTQ / INQ papers' practice): a full-precision model
      pre-trains ``pretrain_epochs`` (default ``epochs // 2``); binary, TWN and TTQ
      fine-tune it for the remaining ``epochs - pretrain_epochs``; INQ's re-training
      epochs, spread over its steps, add up to the same remainder; the fp32 row trains the
      same pre-trained model on, unquantized, for the remainder (the control).
    * ``init="scratch"``: fp32, binary, TWN and TTQ train ``epochs`` from the same random
      init; INQ, which needs a trained model, pre-trains and re-trains as above.

    Args:
        build: ``build(seed) -> nn.Module``, a fresh float model (same seed, same model).
        data: a ``ttqlab.data.Data``.
        seeds: the seeds (default ``DEFAULT_SEEDS`` = 0, 1, 2), each seeding the model's
            init and the shuffling; ``seed=N`` is shorthand for ``seeds=[N]``.

    Returns:
        ``(table, results)``: ``table`` (a :class:`Comparison`, a ``Table``) has one row
        per method with ``method``, ``epochs``, ``seeds``, ``test_acc_mean`` /
        ``test_acc_std`` (percent), ``delta_vs_fp32_mean`` / ``delta_vs_fp32_std`` (points,
        mean and std of the per-seed differences; None without fp32), ``sparsity``,
        ``bits_per_weight``, ``model_bytes``, ``seconds`` and ``test_acc`` (per seed);
        ``table.to_dict()`` is what ``--json`` writes. ``results[method]`` is the trained
        model and history of the first seed.
    """
    if init not in ("pretrained", "scratch"):
        raise ValueError(f"init must be 'pretrained' or 'scratch', got {init!r}")
    methods = list(methods)
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown methods {unknown or methods}; choose from {ALL_METHODS}")
    if seeds is not None and seed is not None:
        raise ValueError("pass seeds=[...] or seed=N, not both")
    seeds = check_seeds([seed] if seed is not None else (
        DEFAULT_SEEDS if seeds is None else seeds))
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 2:
        raise ValueError(f"epochs must be an int >= 2 (pre-training plus fine-tuning), "
                         f"got {epochs!r}")
    pre = epochs // 2 if pretrain_epochs is None else pretrain_epochs
    if isinstance(pre, bool) or not isinstance(pre, int) or not 1 <= pre < epochs:
        raise ValueError(f"pretrain_epochs must be an int in [1, epochs - 1] = [1, "
                         f"{epochs - 1}], got {pretrain_epochs!r}")
    rest = epochs - pre
    per_seed: dict[str, list[Result]] = {m: [] for m in methods}
    for s in seeds:
        needs_pre = init == "pretrained" or "inq" in methods
        pre_result = (train_method(build(s), "fp32", data, epochs=pre, seed=s,
                                   progress=progress, **fit_kwargs) if needs_pre else None)
        for method in methods:
            from_pre = init == "pretrained" or method == "inq"
            kw = dict(keep_first_last=keep_first_last, seed=s, progress=progress,
                      **fit_kwargs)
            if method == "inq":
                kw["inq_schedule"] = inq_schedule
            if from_pre:
                r = train_method(copy.deepcopy(pre_result.model), method, data, epochs=rest,
                                 init="pretrained", **kw)
                r.seconds += pre_result.seconds
                r.history = _concat(pre_result.history, r.history)
            else:
                r = train_method(build(s), method, data, epochs=epochs, init="scratch", **kw)
            per_seed[method].append(r)
    rows = _rows(per_seed, seeds, epochs)
    protocol = (f"every method trained {epochs} epochs in total: " + (
        f"{pre} full-precision pre-training + {rest} fine-tuning (fp32 trains on "
        f"unquantized; INQ's re-training epochs over its {len(inq_schedule)} steps add up "
        f"to {rest})" if init == "pretrained" else
        f"from the same random init (INQ: {pre} full-precision pre-training + {rest} "
        f"re-training over its {len(inq_schedule)} steps)"))
    n_test = len(data.test) if hasattr(data, "test") else None
    notes = [f"Columns: {LEGEND}"]
    if "fp32" not in methods:
        notes.append("No Δ column: fp32 is not among the methods (add it to compare "
                     "against full precision).")
    if n_test:
        notes.append(f"Noise: one test image = {100 / n_test:.2f} points here "
                     f"({n_test} test images); differences within about two standard "
                     f"deviations are not evidence.")
    notes.append("Next: open the course (notebooks/01_why_ternary.ipynb) to see why these "
                 "differences arise.")
    caption = (f"compare: {', '.join(methods)}; {protocol}; init={init}; seeds "
               f"{', '.join(map(str, seeds))}")
    meta = {"epochs": epochs, "pretrain_epochs": pre if (init == "pretrained" or "inq" in
                                                          methods) else 0,
            "init": init, "seeds": seeds, "test_images": n_test,
            "point_per_test_image": 100 / n_test if n_test else None}
    return (Comparison(rows, caption=caption, notes=notes, meta=meta),
            {m: rs[0] for m, rs in per_seed.items()})


def _concat(first: History, second: History) -> History:
    """``second`` appended to ``first`` (epoch numbers continue; ``second``'s epoch 0,
    the same model as ``first``'s last epoch, is dropped)."""
    out = History(epochs=list(first.epochs), layers=list(first.layers))
    offset = first.epochs[-1]["epoch"] if first.epochs else 0
    out.epochs += [{**r, "epoch": r["epoch"] + offset} for r in second.epochs[1:]]
    out.layers += [{**r, "epoch": r["epoch"] + offset} for r in second.layers]
    return out


def _rows(per_seed: dict[str, list[Result]], seeds: list[int], epochs: int) -> list[dict]:
    base = [100 * r.history.last["test_acc"] for r in per_seed.get("fp32", [])]
    rows = []
    for method, results in per_seed.items():
        summaries = [r.summary for r in results]
        accs = [100 * s["test_acc"] for s in summaries]
        mean, std = _mean_std(accs)
        d_mean = d_std = None
        if base:
            d_mean, d_std = _mean_std([a - b for a, b in zip(accs, base)])
        rows.append({
            "method": method, "init": results[0].init, "epochs": epochs, "seeds": seeds,
            "test_acc_mean": mean, "test_acc_std": std, "test_acc": accs,
            "delta_vs_fp32_mean": d_mean, "delta_vs_fp32_std": d_std,
            "sparsity": statistics.mean(s["sparsity"] for s in summaries),
            "bits_per_weight": summaries[0]["bits/weight"],
            "model_bytes": summaries[0]["model bytes"],
            "seconds": statistics.mean(r.seconds for r in results),
        })
    return rows
