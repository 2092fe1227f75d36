"""The numbers behind every figure of the course, computed once for both drawing stacks.

``ttqlab.viz`` (matplotlib) and ``ttqlab.widgets`` (plotly + ipywidgets) draw what these
functions return and compute nothing of their own, so a figure's data is written once and
the static figure and the explorer show the same numbers. Everything here is plain data:
frozen dataclasses of numpy arrays, floats and ints, or dicts of them; no plotting library
is imported and no colour is chosen (colours: ``ttqlab.palette``).

    from ttqlab import figure_data as FD
    h = FD.ternary_histogram_data(layer.weight)       # bins, counts, the three regions
    h.regions["zero"].fraction, h.fit["alpha"]         # sparsity, TWN's scale
    h.at(1.2 * h.mean_abs)                             # same bins, another threshold
    FD.ternary_error_curve_data(layer.weight).marks["optimal"].factor
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import quantizers as Q
from .methods.inq import lowest_exponent

if TYPE_CHECKING:  # pragma: no cover
    from .train import History

__all__ = [
    "LABELS",
    "PERCENT",
    "ErrorCurve",
    "Histogram",
    "LearningSeries",
    "Mark",
    "PartitionData",
    "Pow2Levels",
    "Region",
    "TernaryHistogram",
    "axis_label",
    "check_rows",
    "error_curve",
    "flat",
    "histogram",
    "inq_partition_data",
    "layer_series",
    "learning_series",
    "log2_histogram",
    "pow2_levels_data",
    "scaled",
    "ternary_error_curve_data",
    "ternary_fit",
    "ternary_histogram_data",
    "ttq_layers",
]

#: axis label (with unit) of each quantity the figures plot
LABELS = {
    "test_acc": "test accuracy (%)",
    "val_acc": "validation accuracy (%)",
    "train_acc": "train accuracy (%)",
    "sparsity": "sparsity (% of weights that are zero)",
    "model bytes": "model size (bytes)",
    "energy (nJ)": "energy per inference (nJ, 45 nm estimate)",
    "bits/weight": "bits per weight",
    "t": "TTQ threshold factor t (fraction of max|w|)",
    "bits": "bit width b",
    "wp": "W_p (scale, weight units)",
    "wn": "W_n (scale, weight units)",
    "alpha": "α (scale, weight units)",
    "flips": "weights whose code changed (count)",
    "frozen": "weights frozen (%)",
    "scale": "value (weight units)",
    "entropy (bits/weight)": "entropy of the codes (bits per weight)",
    "entropy-coded bytes": "model size, codes entropy-coded (bytes)",
}
#: quantities stored as fractions (0..1) and plotted in percent
PERCENT = frozenset({"test_acc", "val_acc", "train_acc", "sparsity", "frozen"})


# --------------------------------------------------------------------------- basics


def flat(w) -> np.ndarray:
    """A 1-D float64 numpy copy of a tensor / array / sequence (non-empty, finite)."""
    if isinstance(w, torch.Tensor):
        w = w.detach().cpu().double().numpy()
    a = np.asarray(w, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError("got an empty weight tensor; pass a layer's weight, e.g. "
                         "model.conv2.weight")
    if not np.isfinite(a).all():
        raise ValueError("the weights contain NaN or inf; check the training run")
    return a


def axis_label(key: str) -> str:
    """The axis label of a quantity (:data:`LABELS`), else the key itself."""
    return LABELS.get(key, key)


def scaled(key: str, values) -> list[float]:
    """``values`` as floats, times 100 for the quantities in :data:`PERCENT`; None -> NaN."""
    f = 100.0 if key in PERCENT else 1.0
    return [math.nan if v is None else f * float(v) for v in values]


def check_rows(rows, keys) -> list:
    """``rows`` as a list, non-empty, each with every (non-empty) key of ``keys``."""
    rows = list(rows)
    if not rows:
        raise ValueError("no results to plot; pass a list of dicts such as "
                         "{'sparsity': 0.5, 'test_acc': 0.98}")
    missing = [k for k in keys if k and any(k not in r for r in rows)]
    if missing:
        raise KeyError(f"every row needs the keys {missing}; the rows have "
                       f"{sorted(rows[0])}")
    return rows


@dataclass(frozen=True)
class Histogram:
    """Counts over bins: ``counts[i]`` values in ``[edges[i], edges[i+1])`` (the last bin
    closed), as ``numpy.histogram`` counts them; ``centers`` and ``widths`` of the bins."""

    edges: np.ndarray
    counts: np.ndarray
    centers: np.ndarray
    widths: np.ndarray


def histogram(values, bins: int | np.ndarray = 80) -> Histogram:
    """``numpy.histogram`` of ``values`` with ``bins`` equal bins (or the given edges)."""
    counts, edges = np.histogram(np.asarray(values), bins=bins)
    return Histogram(edges, counts, (edges[:-1] + edges[1:]) / 2, np.diff(edges))


# --------------------------------------------------------------------------- ternary


def ternary_fit(w, delta: float) -> dict[str, float]:
    """Sparsity, L2-optimal scale and relative error of ternarizing ``w`` at ``delta``.

    ``alpha = mean of |W_i| over {|W_i| > delta}`` (TWN Eq. 8) and
    ``error = ||W - alpha T||^2 / ||W||^2``. Keys: ``delta``, ``alpha``, ``sparsity``
    (fraction with ``|W_i| <= delta``), ``error``, ``kept`` (count with ``|W_i| > delta``).
    """
    a = np.abs(flat(w))
    keep = a > delta
    k = int(keep.sum())
    s = float(a[keep].sum())
    total = float((a * a).sum())
    alpha = s / k if k else 0.0
    err = (total - (s * s / k if k else 0.0)) / total if total else 0.0
    return {"delta": float(delta), "alpha": alpha, "sparsity": 1.0 - k / a.size,
            "error": err, "kept": k}


def error_curve(w, deltas) -> tuple[np.ndarray, np.ndarray]:
    """Relative L2 error ``||W - alpha T||^2 / ||W||^2`` (best alpha for each threshold)
    and sparsity at each of ``deltas``: :func:`ternary_fit` for many thresholds at once
    (one sort, prefix sums)."""
    a = np.sort(np.abs(flat(w)))[::-1]
    cs = np.concatenate([[0.0], np.cumsum(a)])
    total = float((a * a).sum())
    k = np.searchsorted(-a, -np.asarray(deltas), side="left")  # count of |W| > delta
    s = cs[k]
    err = np.where(k > 0, (total - s * s / np.maximum(k, 1)) / total, 1.0)
    return err, 1.0 - k / a.size


#: the three regions of a ternary threshold: name, code T, legend label
_REGIONS = (("negative", -1, "T = -1"), ("zero", 0, "T = 0"), ("positive", 1, "T = +1"))


@dataclass(frozen=True)
class Region:
    """One region of a ternary threshold ``delta``: ``T = code`` for the weights in
    ``low < W < high`` (``negative``: ``(-inf, -delta)``), ``[-delta, delta]`` (``zero``,
    both ends included) or ``(delta, inf)`` (``positive``).

    ``bins``: which histogram bins the region colours (by bin centre); ``count`` /
    ``fraction``: the weights (not bins) in it."""

    name: str
    code: int
    label: str
    low: float
    high: float
    bins: np.ndarray
    count: int
    fraction: float


def _regions(a: np.ndarray, centers: np.ndarray, delta: float) -> dict[str, Region]:
    bounds = {"negative": (-math.inf, -delta), "zero": (-delta, delta),
              "positive": (delta, math.inf)}
    bins = {"negative": centers < -delta, "zero": np.abs(centers) <= delta,
            "positive": centers > delta}
    weights = {"negative": a < -delta, "zero": np.abs(a) <= delta, "positive": a > delta}
    out = {}
    for name, code, label in _REGIONS:
        n = int(weights[name].sum())
        out[name] = Region(name, code, label, *bounds[name], bins[name], n, n / a.size)
    return out


@dataclass(frozen=True)
class TernaryHistogram:
    """A weight histogram split by the ternary threshold ``delta`` (see
    :func:`ternary_histogram_data`). ``fit`` is :func:`ternary_fit` at ``delta``;
    ``regions`` maps ``"negative"`` / ``"zero"`` / ``"positive"`` to a :class:`Region`."""

    weights: np.ndarray
    delta: float
    mean_abs: float
    bins: Histogram
    regions: dict[str, Region]
    fit: dict[str, float]

    @property
    def factor(self) -> float:
        """``delta / E|W|``."""
        return self.delta / self.mean_abs if self.mean_abs else math.nan

    def at(self, delta: float) -> TernaryHistogram:
        """The same bins at another threshold (the explorer's slider)."""
        delta = float(delta)
        return replace(self, delta=delta, fit=ternary_fit(self.weights, delta),
                       regions=_regions(self.weights, self.bins.centers, delta))


def ternary_histogram_data(w, delta: float | None = None, *,
                           bins: int = 80) -> TernaryHistogram:
    """Histogram of ``w`` (``bins`` equal bins) with the three regions of the threshold
    ``delta``: ``T_i = -1`` where ``W_i < -delta``, ``0`` where ``|W_i| <= delta``, ``+1``
    where ``W_i > delta``. ``delta`` defaults to TWN's ``0.7 E|W|``."""
    a = flat(w)
    mean = float(np.abs(a).mean())
    if delta is None:
        delta = 0.7 * mean
    delta = float(delta)
    h = histogram(a, bins)
    return TernaryHistogram(a, delta, mean, h, _regions(a, h.centers, delta),
                            ternary_fit(a, delta))


@dataclass(frozen=True)
class Mark:
    """A named threshold on the error curve: ``delta = factor * E|W|`` and its error."""

    factor: float
    delta: float
    error: float


@dataclass(frozen=True)
class ErrorCurve:
    """:func:`error_curve` over ``factors`` (``delta / E|W|``), with the marks
    ``"twn"`` (0.7 E|W|, the authors' code), ``"twn_v2"`` (0.75 E|W|, the latest arXiv
    version) and ``"optimal"`` (the exact L2 optimum)."""

    mean_abs: float
    factors: np.ndarray
    error: np.ndarray
    sparsity: np.ndarray
    marks: dict[str, Mark]


def ternary_error_curve_data(w, *, max_factor: float = 2.5, num: int = 400) -> ErrorCurve:
    """The relative error and sparsity at ``num`` thresholds ``0 .. max_factor * E|W|``,
    and the marks of :class:`ErrorCurve` (optimum: ``quantizers.optimal_ternary_params``)."""
    a = flat(w)
    mean = float(np.abs(a).mean())
    factors = np.linspace(0.0, max_factor, num)
    err, sparsity = error_curve(a, factors * mean)
    d_opt, _, _ = Q.optimal_ternary_params(torch.as_tensor(a))
    marks = {}
    for name, f in (("twn", 0.7), ("twn_v2", 0.75), ("optimal", float(d_opt) / mean)):
        marks[name] = Mark(f, f * mean, float(error_curve(a, np.array([f * mean]))[0][0]))
    return ErrorCurve(mean, factors, err, sparsity, marks)


# --------------------------------------------------------------------------- INQ


@dataclass(frozen=True)
class Pow2Levels:
    """INQ's levels ``{+-2^n1, ..., +-2^n2, 0}`` at ``bits`` bits and the weights rounded
    to them (see :func:`pow2_levels_data`).

    ``codes``: each weight's signed level index (``quantizers.pow2_exponents``);
    ``quantized``: its value; ``per_level``: ``{index: count}`` for every index
    ``-(n1-n2+1) .. n1-n2+1``, empty levels included; ``level_values``: ``{index: value}``;
    ``error = ||W - Q(W)||^2 / ||W||^2``; ``zeroed``: fraction rounded to 0;
    ``zero_below = 2^(n2-1)``: magnitudes under it round to 0."""

    bits: int
    n1: int
    n2: int
    levels: np.ndarray
    codes: np.ndarray
    quantized: np.ndarray
    per_level: dict[int, int]
    level_values: dict[int, float]
    error: float
    zeroed: float
    zero_below: float


def pow2_levels_data(w, bits: int = 5, *, n1: int | None = None) -> Pow2Levels:
    """INQ's power-of-two levels for ``w``: ``n1 = floor(log2(4 max|W| / 3))`` unless
    given, ``n2 = n1 + 1 - 2^(b-1) / 2`` (Zhou et al., Eq. 2-4)."""
    t = torch.as_tensor(flat(w))
    if n1 is None:
        n1, n2 = Q.inq_exponent_range(t, bits)
    else:
        n2 = lowest_exponent(n1, bits)
    a = t.numpy()
    levels = Q.pow2_levels(t, bits, n1).numpy()
    codes = Q.pow2_exponents(t, bits, n1).numpy().astype(int)
    q = Q.pow2_from_codes(torch.as_tensor(codes), bits, n1).double().numpy()
    err = float(((a - q) ** 2).sum() / max(float((a * a).sum()), 1e-30))
    top = n1 - n2 + 1
    per_level = dict.fromkeys(range(-top, top + 1), 0)
    idx, counts = np.unique(codes, return_counts=True)
    per_level.update(zip(idx.tolist(), counts.tolist()))
    values = {i: 0.0 if i == 0 else math.copysign(2.0 ** (n2 + abs(i) - 1), i)
              for i in per_level}
    return Pow2Levels(bits, n1, n2, levels, codes, q, per_level, values, err,
                      float((codes == 0).mean()), 2.0 ** (n2 - 1))


def log2_histogram(w, levels: Pow2Levels, bins: int = 100) -> tuple[Histogram, float]:
    """Histogram of the non-zero ``|W|`` over ``bins - 1`` bins evenly spaced in log2, from
    ``lo = min(2^(n2-3), 1% quantile)`` to ``1.05 max(max|W|, 2^n1)``; magnitudes under
    ``lo`` are counted in the first bin. Returns ``(histogram, lo)``."""
    a = flat(w)
    nz = np.abs(a[a != 0])
    lo = min(2.0 ** (levels.n2 - 3), float(np.quantile(nz, 0.01)))
    nz = np.clip(nz, lo, None)
    edges = np.logspace(np.log2(lo), np.log2(max(float(nz.max()), 2.0**levels.n1) * 1.05),
                        bins, base=2)
    edges[0] = lo  # 2^log2(lo) can round above lo, and the clipped weights fall outside
    counts, edges = np.histogram(nz, bins=edges)
    return Histogram(edges, counts, np.sqrt(edges[:-1] * edges[1:]), np.diff(edges)), lo


@dataclass(frozen=True)
class PartitionData:
    """INQ's partition of one layer (see :func:`inq_partition_data`): the first rows and
    columns of the weight, mask and frozen-value maps (``[out, flattened in]``), the
    histograms of the free and the frozen weights over the same ``edges``, the frozen
    fraction and the mean ``|W|`` of each group (NaN for an empty group)."""

    weight_map: np.ndarray
    mask_map: np.ndarray
    value_map: np.ndarray
    free: Histogram
    frozen: Histogram
    frozen_fraction: float
    mean_abs_frozen: float
    mean_abs_free: float


def inq_partition_data(w, frozen_mask, *, frozen_values=None, max_rows: int = 32,
                       max_cols: int = 64, bins: int | np.ndarray = 60) -> PartitionData:
    """Which weights of ``w`` INQ has frozen (``frozen_mask``, same shape, True = frozen)
    and to what (``frozen_values``, default ``w``). ``bins``: a count (equal bins over
    ``w``'s range) or the edges to reuse."""
    w = torch.as_tensor(w).detach().cpu().float()
    mask = torch.as_tensor(frozen_mask).detach().cpu().bool()
    if mask.shape != w.shape:
        raise ValueError(f"frozen_mask has shape {tuple(mask.shape)} but the weight has "
                         f"{tuple(w.shape)}; pass the layer's quantizer.frozen_mask")
    flat(w)
    values = w if frozen_values is None else torch.as_tensor(frozen_values).detach().cpu().float()
    rows = w.shape[0] if w.dim() > 1 else 1

    def crop(t):
        return t.reshape(rows, -1)[:max_rows, :max_cols].numpy()

    flat_w, flat_m = w.flatten().numpy(), mask.flatten().numpy()
    edges = np.histogram_bin_edges(flat_w, bins=bins) if np.ndim(bins) == 0 else \
        np.asarray(bins)
    a = np.abs(flat_w)
    return PartitionData(
        crop(w), crop(mask), crop(values), histogram(flat_w[~flat_m], edges),
        histogram(flat_w[flat_m], edges), float(flat_m.mean()),
        float(a[flat_m].mean()) if flat_m.any() else math.nan,
        float(a[~flat_m].mean()) if (~flat_m).any() else math.nan)


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class LearningSeries:
    """A run's curves over epochs: losses (nats per sample) and accuracies (%) on the
    train split and the held-out one (``heldout``: ``"test"`` or ``"val"``). Missing
    values (epoch 0 has no train loss) are NaN."""

    epochs: list
    heldout: str
    train_loss: list[float]
    heldout_loss: list[float]
    train_acc: list[float]
    heldout_acc: list[float]


def learning_series(history: History) -> LearningSeries:
    """The loss and accuracy curves of a ``History`` (accuracies in %)."""
    held = history.heldout
    return LearningSeries(list(history["epoch"]), held, scaled("loss", history["train_loss"]),
                          scaled("loss", history[f"{held}_loss"]),
                          scaled("train_acc", history["train_acc"]),
                          scaled("test_acc", history[f"{held}_acc"]))


def layer_series(history: History, key: str = "sparsity", *,
                 layers: Sequence[str] | None = None) -> dict[str, tuple[list, list[float]]]:
    """``{layer: (epochs, values)}`` of one per-layer column (``"sparsity"`` in %,
    ``"flips"``, ``"alpha"``, ``"wp"``, ``"wn"``, ``"frozen"`` in %) in the model's order;
    ``layers`` restricts it to those names. A missing value is NaN."""
    names = history.layer_names if layers is None else list(layers)
    return {n: (history.layer(n, "epoch"), scaled(key, history.layer(n, key))) for n in names}


def ttq_layers(history: History) -> list[str]:
    """The layers of a ``History`` that have TTQ's learned scales (a ``wp`` column)."""
    return [n for n in history.layer_names if history.layer(n, "wp")[0] is not None]
