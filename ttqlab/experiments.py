"""Whole experiments in one call: train one method, or compare all of them.

``train_method`` is what ``ttqlab train`` runs; ``compare`` is ``ttqlab compare``, in the
papers' regime: every method (full precision included, as the control) fine-tunes the same
converged full-precision start (`ttqlab.starts.pretrain`, cached) for the same epochs with
a decaying learning rate; everything is chosen on a validation split; test accuracy is
measured once per run, at the end; each paper's claim is judged by the 95% interval of its
paired per-seed difference (`ttqlab.evidence`).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import math
import pickle
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from . import evidence
from . import methods as _methods
from .convert import quantize
from .inq import SCHEDULES, spread_epochs
from .starts import Recipe, pretrain
from .stats import FLOAT, Table, layer_report
from .train import History, evaluate, fit
from .validation import check_choice, check_int, check_number, check_seeds

__all__ = ["ALL_METHODS", "CLAIMS", "CONTROL", "DEFAULT_METHODS", "DEFAULT_SEEDS",
           "FINETUNE_LRS", "FINETUNE_SEED_OFFSET", "MATCH_MARGIN", "Comparison", "Result",
           "check_seeds", "compare", "method_names", "spread_epochs", "summarize",
           "train_method"]

#: the control row: the model left in full precision (not a method), trained the same way
CONTROL = FLOAT
#: the control's fine-tuning learning rate from a start (see `FINETUNE_LRS`)
CONTROL_LR = 3e-2


def method_names() -> tuple[str, ...]:
    """Every row ``train_method`` and ``compare`` train: the control, then each registered
    method and its variants (``ttqlab.methods.rows``), e.g. "inq-oneshot", INQ with the
    one-step schedule (1.0,): everything quantized at once, the ablation of INQ's
    increments. A method registered later is a row too."""
    return (CONTROL, *(r.name for r in _methods.rows()))


def _finetune_lrs() -> dict[str, float]:
    return {CONTROL: CONTROL_LR, **{r.name: r.finetune_lr for r in _methods.rows()
                                    if r.finetune_lr is not None}}


#: the rows of `method_names` when this module was imported (`method_names()` is live)
ALL_METHODS = method_names()
#: ``compare``'s default rows: the papers' methods, their control and INQ's ablation
DEFAULT_METHODS = ("fp32", "binary", "twn", "ttq", "inq", "inq-oneshot")
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
#: each row's fine-tuning learning rate (Adam, cosine decay to 0) from a start, chosen on
#: the validation split by ``python -m benchmarks.accuracy`` for cnn1d(32) on MNIST-1D
#: (README, "Accuracy"): every method at its own best (its class's ``finetune_lr``), the
#: fp32 control included
FINETUNE_LRS = _finetune_lrs()
#: fine-tuning shuffles with seed + this offset: its batch order is not the pre-training's
FINETUNE_SEED_OFFSET = 1_000_000
#: "matches" means a loss smaller than this many points (or one test image, if larger)
MATCH_MARGIN = 0.5
#: (paper, claim, better, worse, kind): the paper says ``better`` - ``worse`` is > 0
#: ("beats") or > -margin ("matches"), judged by `ttqlab.evidence.verdict`
CLAIMS = (("TWN", "ternary beats binary", "twn", "binary", "beats"),
          ("TTQ", "ternary beats binary", "ttq", "binary", "beats"),
          ("TTQ", "learned scales beat TWN's", "ttq", "twn", "beats"),
          ("INQ", "incremental beats one step", "inq", "inq-oneshot", "beats"),
          ("INQ", "5-bit matches full precision", "inq", "fp32", "matches"))


@dataclass
class Result:
    """A trained model, its history and its one-line summary. ``test_acc`` (0..1) is the
    one evaluation on the test split at the end (None when the data has no test split)."""

    method: str
    model: nn.Module
    history: History
    seconds: float
    init: str
    test_acc: float | None = None

    @property
    def summary(self) -> dict:
        return summarize(self.model, self.method, self.history, self.seconds, self.init,
                         test_acc=self.test_acc)


def summarize(model: nn.Module, method: str, history: History, seconds: float = math.nan,
              init: str = "", *, test_acc: float | None = None) -> dict:
    """test accuracy, sparsity and bits of the quantized layers, whole-model bytes.

    ``test_acc`` (0..1) defaults to the history's last ``test_acc``; a history measured on
    a validation split has none, so pass the final test evaluation."""
    report = layer_report(model)
    qrows = [r for r in report.rows if r.get("method") not in (FLOAT, None)]
    n = sum(r["params"] for r in qrows)
    total = report.rows[-1]
    q_fp32 = sum(r["fp32 bytes"] for r in qrows)
    q_packed = sum(r["packed bytes"] for r in qrows)
    if test_acc is None:
        test_acc = history.last.get("test_acc", math.nan)
    return {
        "method": method, "init": init,
        "test_acc": test_acc,
        "val_acc": history.last.get("val_acc"),
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
    """Quantize ``model`` with ``method`` (a row of `method_names`; the control
    ``"fp32"`` leaves it float) and train it ``epochs`` epochs in total.

    A method without a ``trainer`` is ``quantize(model, method, **options)`` (plus its
    variant's options) and ``fit``; one with a trainer runs it (``ttqlab.methods.base``):
    for ``"inq"`` (``ttqlab.inq.train_incremental``) the model should be pre-trained; each
    step of ``inq_schedule`` freezes the next portion and is followed by its share of the
    ``epochs`` re-training epochs (``spread_epochs(epochs, len(schedule))``: they add up
    to ``epochs``); ``"inq-oneshot"`` is INQ with the schedule ``(1.0,)``.
    ``init`` is only a label for the summary ("scratch" or "pretrained").
    When ``data`` has a validation split the epochs are evaluated on it and the test
    split once, at the end (``Result.test_acc``).
    """
    options = dict(options or {})
    rows = {r.name: r for r in _methods.rows()}
    if method != CONTROL and method not in rows:
        raise ValueError(f"unknown method {method!r}; choose from {method_names()}")
    start = time.perf_counter()
    row = rows.get(method)
    if row is None:
        history = fit(model, data, epochs=epochs, progress=progress, **fit_kwargs)
    elif row.cls.trainer is None:
        quantize(model, row.cls.method, keep_first_last=keep_first_last,
                 **{**row.driver, **options})
        history = fit(model, data, epochs=epochs, progress=progress, **fit_kwargs)
    else:
        history = _driver(row.cls.trainer)(
            model, data, epochs=epochs, options=options, keep_first_last=keep_first_last,
            progress=progress, fit_kwargs=fit_kwargs,
            **{"schedule": inq_schedule, **row.driver})
    seconds = time.perf_counter() - start
    test_acc = history.last.get("test_acc")
    if getattr(data, "val", None) is not None and getattr(data, "test", None) is not None:
        test_acc = evaluate(model, data.test, device=fit_kwargs.get("device"))[1]
    return Result(method, model, history, seconds, init, test_acc)


def _driver(spec: str | Callable[..., History]) -> Callable[..., History]:
    """A method's ``trainer``: the function itself, or the one named ``"module:function"``
    (a method file names its driver so: the driver lives above it, in ``ttqlab.inq``)."""
    if callable(spec):
        return spec
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = list(values)
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


COLUMNS = ["method", "epochs", "val_acc_mean", "test_acc_mean", "test_acc_std",
           "delta_vs_fp32_mean", "delta_vs_fp32_low", "delta_vs_fp32_high", "sparsity",
           "bits_per_weight", "model_bytes", "seconds"]


class Comparison(Table):
    """``compare``'s table: one row per method, numbers as the JSON has them (accuracy in
    percent, Δ in points), printed readably with the protocol, a legend and the verdicts."""

    def __init__(self, rows, *, caption: str, notes: Sequence[str], meta: dict):
        super().__init__(rows, COLUMNS, title=caption)
        self.notes = list(notes)
        self.meta = meta

    @property
    def claims(self) -> list[dict]:
        """One dict per paper's claim that the rows can judge: ``paper``, ``claim``,
        ``comparison``, ``kind``, ``margin``, ``interval`` (`evidence.Interval.to_dict`) and
        ``verdict``."""
        return list(self.meta.get("claims", []))

    def to_dict(self) -> dict:
        """What ``ttqlab compare --json`` writes: ``{"rows": [...], **meta}``."""
        return {"rows": self.rows, "caption": self.title, "notes": self.notes, **self.meta}

    def text_rows(self) -> tuple[list[str], list[list[str]]]:
        has_delta = any(r["delta_vs_fp32_mean"] is not None for r in self.rows)
        has_val = any(r.get("val_acc_mean") is not None for r in self.rows)
        n = len(self.meta.get("seeds", [])) or 1
        head = ["method", "epochs"] + (["val acc (%)"] if has_val else [])
        head += ["test accuracy (%)"]
        head += [("Δ vs fp32, 95% CI (points)" if n > 1 else "Δ vs fp32 (points)")
                 ] if has_delta else []
        head += ["zeros (%)", "bits/weight", "size (KiB)", "lr", "time (s/seed)"]
        cells = []
        for r in self.rows:
            row = [r["method"], str(r["epochs"])]
            if has_val:
                v = r.get("val_acc_mean")
                row.append("–" if v is None else f"{v:.2f}")
            row.append(_pm(r["test_acc_mean"], r["test_acc_std"], n))
            if has_delta:
                row.append("reference" if r["method"] == CONTROL else _ci(r, n))
            row += [f"{100 * r['sparsity']:.1f}", f"{r['bits_per_weight']:g}",
                    f"{r['model_bytes'] / 1024:.1f}", f"{r.get('lr', math.nan):g}",
                    f"{r['seconds']:.1f}"]
            cells.append(row)
        return head, cells

    def __str__(self) -> str:
        import textwrap

        head, cells = self.text_rows()
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
        line = "  ".join(h.rjust(w) for h, w in zip(head, widths))
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


def _ci(row: dict, n: int) -> str:
    m = row["delta_vs_fp32_mean"]
    if n < 2 or row.get("delta_vs_fp32_low") is None:
        return f"{m:+.2f}"
    return f"{m:+.2f} [{row['delta_vs_fp32_low']:+.2f}, {row['delta_vs_fp32_high']:+.2f}]"


LEGEND = ("epochs: fine-tuning epochs of every row from the same full-precision start, the "
          "fp32 control included; val acc: mean over seeds on the validation split (what "
          "was chosen on); test accuracy: mean ± std over seeds, measured once per run at "
          "the end; Δ: mean of the per-seed differences to fp32 in percentage points and "
          "its 95% confidence interval (Student's t); zeros: fraction of quantized weights "
          "that are 0 (TTQ's threshold t * max|w| zeroes fewer than TWN's 0.7 E|w|); "
          "bits/weight: of the quantized layers; size: whole model packed as ttqlab.export "
          "writes it; lr: the row's fine-tuning learning rate; time: fine-tuning per seed "
          "(the start's training is reported above).")


def compare(
    build: Callable[[int], nn.Module],
    data,
    *,
    epochs: int = 10,
    methods: Sequence[str] = DEFAULT_METHODS,
    init: str = "pretrained",
    seeds: Sequence[int] | None = None,
    seed: int | None = None,
    recipe: Recipe | None = None,
    pretrain_epochs: int | None = None,
    lr: float | Mapping[str, float] | None = None,
    lr_schedule="cosine",
    val_fraction: float = 0.1,
    val_seed: int = 0,
    cache: bool = True,
    cache_root=None,
    keep_first_last: bool = True,
    inq_schedule: Sequence[float] = SCHEDULES["default"],
    progress: bool = False,
    workers: int = 1,
    **fit_kwargs,
) -> tuple[Comparison, dict[str, Result]]:
    """Every method from the same converged start, under the same budget, over seeds.

    The protocol (the TTQ and INQ papers' practice):

    1. ``data`` gets a validation split (``data.split_validation(val_fraction,
       val_seed)``) unless it has one; every per-epoch number is measured on it.
    2. ``init="pretrained"``: for each seed a full-precision start is trained to its
       plateau by ``recipe`` (default `Recipe()`; ``pretrain_epochs`` overrides its
       epochs) and cached (`ttqlab.starts.pretrain`; ``cache=False`` retrains).
       ``init="scratch"``: rows start from ``build(seed)`` instead (INQ, which quantizes a
       trained model, is then refused).
    3. Every row, the fp32 control included, trains ``epochs`` epochs from a copy of that
       start with ``lr_schedule`` (cosine decay by default) at learning rate ``lr``: one
       number for every row, a ``{method: lr}`` dict, or None for each method's own,
       chosen on validation (`FINETUNE_LRS` from a start, the recipe's lr from scratch).
       INQ's re-training epochs over its steps add up to the same ``epochs``. Batches are
       shuffled with ``seed + FINETUNE_SEED_OFFSET``.
    4. Each trained row is evaluated on the test split once.
    5. Each paper's claim in `CLAIMS` whose two methods were trained is judged from the
       95% interval of its paired per-seed test differences (`ttqlab.evidence.verdict`):
       "beats" with a margin of one test image, "matches" with `MATCH_MARGIN` points.

    Args:
        build: ``build(seed) -> nn.Module``, a fresh float model (same seed, same model).
        data: a ``ttqlab.data.Data``.
        seeds: the seeds (default ``DEFAULT_SEEDS``), each seeding the model's init, the
            start's training and the fine-tuning order; ``seed=N`` is ``seeds=[N]``.
        workers: processes that train seeds at once (default 1: this one). With more, this
            process trains every ``workers``-th seed and spawned processes the others, each
            with this process's torch thread count; the numbers are the same. ``build``
            must then be picklable (a module-level function or a ``functools.partial``).

    Returns:
        ``(table, results)``: ``table`` (a :class:`Comparison`) has one row per method
        with ``method``, ``epochs``, ``seeds``, ``val_acc_mean`` / ``val_acc`` and
        ``test_acc_mean`` / ``test_acc_std`` / ``test_acc`` (percent; lists per seed),
        ``delta_vs_fp32_mean`` / ``_std`` / ``_low`` / ``_high`` (points: the per-seed
        differences' mean, std and 95% interval; None without fp32), ``sparsity``,
        ``bits_per_weight``, ``model_bytes`` and ``seconds`` (fine-tuning per seed);
        ``table.claims`` the verdicts; ``table.to_dict()`` (what ``--json`` writes) adds
        the whole protocol. ``results[method]`` is the first seed's trained model.
    """
    methods = _check_rows(methods, init)
    if seeds is not None and seed is not None:
        raise ValueError("pass seeds=[...] or seed=N, not both")
    workers = _check_workers(workers, build)
    seeds = check_seeds([seed] if seed is not None else (
        DEFAULT_SEEDS if seeds is None else seeds))
    epochs = check_int("epochs", epochs, low=1, hint="fine-tuning epochs of every row")
    recipe = _check_recipe(recipe, pretrain_epochs)
    lrs = _row_lrs(lr, methods, _finetune_lrs() if init == "pretrained" else None, recipe.lr)
    data = _with_validation(data, val_fraction, val_seed)
    job = dict(build=build, data=data, init=init, recipe=recipe, cache=cache,
               cache_root=cache_root, methods=methods, epochs=epochs,
               keep_first_last=keep_first_last, inq_schedule=inq_schedule, lrs=lrs,
               lr_schedule=lr_schedule, fit_kwargs=fit_kwargs)
    done = _run_seeds(seeds, job, workers, progress)
    per_seed = {m: [done[s][1][m] for s in seeds] for m in methods}
    starts = [done[s][0] for s in seeds if done[s][0] is not None]
    rows = _rows(per_seed, seeds, epochs)
    for row in rows:
        row["lr"] = lrs[row["method"]]
    one_image = 100 / len(data.test)
    claims = _claims(rows, one_image)
    finetune = _finetune(epochs, lrs, lr_schedule, inq_schedule, fit_kwargs)
    caption = _caption(methods, data, init, recipe, starts, finetune, lr, seeds)
    notes = _notes(methods, seeds, len(data.test), one_image, claims)
    meta = {"protocol": "converged-start" if init == "pretrained" else "scratch",
            "init": init, "epochs": epochs, "seeds": seeds, "dataset": data.name,
            "train": len(data.train), "val": len(data.val), "test_images": len(data.test),
            "val_split": data.val_split, "point_per_test_image": one_image,
            "recipe": dataclasses.asdict(recipe) if init == "pretrained" else None,
            "starts": starts, "finetune": finetune, "keep_first_last": keep_first_last,
            "match_margin": max(MATCH_MARGIN, one_image), "claims": claims}
    return (Comparison(rows, caption=caption, notes=notes, meta=meta),
            {m: rs[0] for m, rs in per_seed.items()})


# --------------------------------------------------------------------------- compare's steps


def _check_rows(methods: Sequence[str], init: str) -> list[str]:
    """``methods`` as a list of distinct rows of `method_names`, each one that ``init`` can
    start (a method that quantizes a trained model needs ``init="pretrained"``)."""
    check_choice("init", init, ("pretrained", "scratch"),
                 hint="'pretrained' fine-tunes a converged fp32 start, 'scratch' a random init")
    methods = list(methods)
    known = method_names()
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise ValueError(f"unknown methods {unknown or methods}; choose from {known}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods {methods} repeat a method; list each once")
    trained = [r for r in _methods.rows() if r.needs_trained and r.name in methods]
    if init == "scratch" and trained:
        tags = " and ".join(dict.fromkeys(r.cls.tag for r in trained))
        raise ValueError(f"{tags} quantizes a trained model: with init='scratch' drop "
                         f"{' and '.join(repr(r.name) for r in trained)} from methods, or "
                         f"use init='pretrained'")
    return methods


def _check_workers(workers: int, build: Callable[[int], nn.Module]) -> int:
    """``workers`` as an int >= 1; with more than one, ``build`` must pickle (it is sent to
    spawned processes)."""
    workers = check_int("workers", workers, low=1,
                        hint="processes that train seeds at once; 1 trains them all here")
    if workers > 1:
        try:
            pickle.dumps(build)
        except Exception as err:
            raise ValueError(f"workers={workers} sends build to other processes, but it cannot "
                             f"be pickled ({err}); pass a module-level function or a "
                             f"functools.partial of one, or workers=1") from None
    return workers


def _check_recipe(recipe: Recipe | None, pretrain_epochs: int | None) -> Recipe:
    """The start's recipe (default `Recipe()`), with ``pretrain_epochs`` if given."""
    recipe = Recipe() if recipe is None else recipe
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a ttqlab.starts.Recipe, got {type(recipe).__name__}")
    if pretrain_epochs is not None:
        recipe = dataclasses.replace(recipe, epochs=pretrain_epochs)
    return recipe


def _with_validation(data, val_fraction: float, val_seed: int):
    """``data`` itself if it has a validation split, else ``data.split_validation(...)``."""
    if getattr(data, "val", None) is not None:
        return data
    if not hasattr(data, "split_validation"):
        raise TypeError(f"data must be a ttqlab.data.Data (ttqlab.data.load(...)), got "
                        f"{type(data).__name__}")
    return data.split_validation(val_fraction, seed=val_seed)


def _finetune(epochs: int, lrs: dict[str, float], lr_schedule, inq_schedule: Sequence[float],
              fit_kwargs: dict) -> dict:
    """The fine-tuning protocol as ``--json`` records it (``fit``'s defaults filled in)."""
    return {"epochs": epochs, "lr": lrs, "lr_schedule": lr_schedule,
            "optimizer": fit_kwargs.get("optimizer", "adam"),
            "batch_size": fit_kwargs.get("batch_size", 64),
            "weight_decay": fit_kwargs.get("weight_decay", 0.0),
            "seed_offset": FINETUNE_SEED_OFFSET,
            "inq_schedule": list(inq_schedule)}


def _caption(methods: list[str], data, init: str, recipe: Recipe, starts: list[dict],
             finetune: dict, lr, seeds: list[int]) -> str:
    """The table's title: the rows, the data, the start, the fine-tuning and the seeds."""
    lr_schedule = finetune["lr_schedule"]
    sched = "cosine decay" if lr_schedule == "cosine" else (
        "constant lr" if lr_schedule is None else f"lr schedule {lr_schedule}")
    if init == "pretrained":
        final = [st["final"] for st in starts]
        start_text = (f"start: fp32 trained {recipe} (validation accuracy at the end "
                      f"{statistics.mean(final):.2f}%, "
                      f"{statistics.mean(st['gain_last_quarter'] for st in starts):+.2f} "
                      f"points over its last quarter; {_cached(starts)}); then ")
    else:
        start_text = "from the same random init per seed, "
    return (f"compare: {', '.join(methods)} on {data.name}; {start_text}every row, fp32 "
            f"control included, trains {finetune['epochs']} epochs ({finetune['optimizer']}, "
            f"{sched}, lr {_lr_text(finetune['lr'], lr)}); per-epoch numbers on "
            f"{len(data.val)} validation samples, test ({len(data.test)} samples) once at "
            f"the end; seeds {', '.join(map(str, seeds))}")


def _notes(methods: list[str], seeds: list[int], n_test: int, one_image: float,
           claims: list[dict]) -> list[str]:
    """The lines under the table: the legend, the noise level, each claim's verdict."""
    notes = [f"Columns: {LEGEND}"]
    if CONTROL not in methods:
        notes.append("No Δ column: fp32 is not among the methods (add it to compare "
                     "against full precision).")
    notes.append(f"Noise: one test image = {one_image:.2f} points here ({n_test} test "
                 f"images)." + (" With one seed there is no interval and no verdict: pass "
                                "5 or more seeds." if len(seeds) < 2 else ""))
    for c in claims:
        notes.append(f"{c['paper']}: {c['claim']} ({c['comparison']}): "
                     f"{evidence.Interval(**c['interval'])} points: {c['verdict']}"
                     + (f" (margin {c['margin']:.2f} points)." if c["kind"] == "matches"
                        else "."))
    notes.append("Next: `ttqlab course my-course` copies the course notebooks, which show "
                 "where these differences come from.")
    return notes


def _row_lrs(lr, methods: list[str], defaults: Mapping[str, float] | None,
             fallback: float) -> dict[str, float]:
    """Each method's learning rate: ``lr`` for all, ``lr[method]``, or the defaults."""
    if lr is None:
        return {m: (defaults or {}).get(m, fallback) for m in methods}
    if isinstance(lr, Mapping):
        missing = [m for m in methods if m not in lr]
        if missing:
            raise ValueError(f"lr has no learning rate for {missing}: give every method "
                             f"one, e.g. lr={{{', '.join(f'{m!r}: 1e-3' for m in methods)}}}")
        lrs = {m: lr[m] for m in methods}
    else:
        lrs = dict.fromkeys(methods, lr)
    return {m: check_number(f"the learning rate of {m}", v, low=0, low_open=True,
                            hint="e.g. lr=1e-3") for m, v in lrs.items()}


def _lr_text(lrs: dict[str, float], given) -> str:
    if len(set(lrs.values())) == 1:
        return f"{next(iter(lrs.values())):g} for every row"
    how = "given" if given is not None else "each method's own, chosen on validation"
    return f"{how}: " + ", ".join(f"{m} {v:g}" for m, v in lrs.items())


@dataclass
class _Measured:
    """What a row needs of one trained run (a worker's result: models stay there)."""

    summary: dict
    seconds: float
    init: str


def _one_seed(seed: int, *, build, data, init, recipe, cache, cache_root, methods, epochs,
              keep_first_last, inq_schedule, lrs, lr_schedule, fit_kwargs, progress=False,
              light=False) -> tuple[dict | None, dict]:
    """(the start's record or None, {method: Result, or _Measured when ``light``})."""
    start, record = None, None
    if init == "pretrained":
        start = pretrain(build, data, seed, recipe, cache=cache, root=cache_root,
                         progress=progress, device=fit_kwargs.get("device"))
        record = {"seed": seed, "cached": start.cached, "seconds": start.seconds,
                  "key": start.key, **start.plateau}
    results = {}
    for method in methods:
        model = copy.deepcopy(start.model) if start is not None else build(seed)
        r = train_method(model, method, data, epochs=epochs, init=init,
                         keep_first_last=keep_first_last, inq_schedule=inq_schedule,
                         seed=seed + FINETUNE_SEED_OFFSET, lr=lrs[method],
                         lr_schedule=lr_schedule, progress=progress, **fit_kwargs)
        results[method] = _Measured(r.summary, r.seconds, r.init) if light else r
    return record, results


def _run_seeds(seeds: list[int], job: dict, workers: int, progress: bool) -> dict:
    """``_one_seed`` for every seed: here, or spread over ``workers`` processes."""
    if workers == 1 or len(seeds) == 1:
        return {s: _one_seed(s, progress=progress, **job) for s in seeds}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    workers = min(workers, len(seeds))
    mine = seeds[::workers]
    ctx = multiprocessing.get_context("spawn")  # fork and torch's thread pools do not mix
    with ProcessPoolExecutor(workers - 1, mp_context=ctx, initializer=torch.set_num_threads,
                             initargs=(torch.get_num_threads(),)) as pool:
        futures = {s: pool.submit(_one_seed, s, light=True, **job) for s in seeds
                   if s not in mine}
        done = {s: _one_seed(s, light=s != seeds[0], progress=progress, **job) for s in mine}
        done.update({s: f.result() for s, f in futures.items()})
    return done


def _cached(starts: list[dict]) -> str:
    n = sum(st["cached"] for st in starts)
    trained = [st["seconds"] for st in starts if not st["cached"]]
    if not trained:
        return f"all {n} read from the cache"
    return (f"{len(trained)} trained now, {statistics.mean(trained):.1f} s each"
            + (f", {n} from the cache" if n else ""))


def _rows(per_seed: dict[str, list[Result]], seeds: list[int], epochs: int) -> list[dict]:
    base = [100 * r.summary["test_acc"] for r in per_seed.get(CONTROL, [])]
    rows = []
    for method, results in per_seed.items():
        summaries = [r.summary for r in results]
        accs = [100 * s["test_acc"] for s in summaries]
        vals = [100 * s["val_acc"] for s in summaries if s["val_acc"] is not None]
        mean, std = _mean_std(accs)
        d = {"delta_vs_fp32_mean": None, "delta_vs_fp32_std": None,
             "delta_vs_fp32_low": None, "delta_vs_fp32_high": None}
        if base:
            iv = evidence.paired_interval(accs, base)
            d = {"delta_vs_fp32_mean": iv.mean, "delta_vs_fp32_std": 0.0 if iv.n < 2 else
                 iv.std, "delta_vs_fp32_low": None if iv.n < 2 else iv.low,
                 "delta_vs_fp32_high": None if iv.n < 2 else iv.high}
        rows.append({
            "method": method, "init": results[0].init, "epochs": epochs, "seeds": seeds,
            "val_acc_mean": statistics.mean(vals) if vals else None, "val_acc": vals,
            "test_acc_mean": mean, "test_acc_std": std, "test_acc": accs, **d,
            "sparsity": statistics.mean(s["sparsity"] for s in summaries),
            "bits_per_weight": summaries[0]["bits/weight"],
            "model_bytes": summaries[0]["model bytes"],
            "seconds": statistics.mean(r.seconds for r in results),
        })
    return rows


def _claims(rows: list[dict], one_image: float) -> list[dict]:
    """The verdict on each claim of `CLAIMS` whose two methods are among ``rows``."""
    accs = {r["method"]: r["test_acc"] for r in rows}
    out = []
    for paper, claim, better, worse, kind in CLAIMS:
        if better not in accs or worse not in accs:
            continue
        iv = evidence.paired_interval(accs[better], accs[worse])
        margin = one_image if kind == "beats" else max(MATCH_MARGIN, one_image)
        out.append({"paper": paper, "claim": claim, "comparison": f"{better} − {worse}",
                    "better": better, "worse": worse, "kind": kind, "margin": margin,
                    "interval": iv.to_dict(),
                    "verdict": evidence.verdict(iv, kind, margin=margin)})
    return out
