"""Notebook 1 (TWN): the threshold, the scale and the exact optimum, each with its catalogue
of typical mistakes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import quantizers as Q
from ..checking import (
    Case,
    Exercise,
    Fail,
    as_tensor,
    check,
    fmt,
    judge_tensor,
    tensor_problem,
)
from ._cases import _laplace, _randn, _t


def _twn_threshold_cases() -> list[Case]:
    return [
        Case("a small vector", (_t([0.5, -1.0, 0.25, -0.25]),)),
        Case("all zeros", (torch.zeros(3, 4),)),
        Case("a single element", (_t([-2.0]),)),
        Case("a conv weight (4-D): one Δ for the whole layer", (_randn(1, 8, 3, 3, 3, scale=0.1),)),
        Case("random weights", (_randn(2, 1000, scale=0.05),)),
        Case("a random linear weight", (_randn(3, 64, 32, scale=0.02),)),
        Case("factor=0.75", (_randn(4, 500, scale=0.05),), {"factor": 0.75}),
    ]


def _per_row_mean(w: Tensor, factor: float = 0.7) -> Tensor:
    return factor * (w.abs().reshape(w.shape[0], -1).mean(1) if w.dim() > 1 else w.abs().mean())


TWN_THRESHOLD = Exercise(
    name="twn_threshold",
    signature="twn_threshold(w, factor=0.7)",
    cases=_twn_threshold_cases,
    reference=lambda w, factor=0.7: Q.twn_threshold(w, factor),
    judge=judge_tensor(),
    mistakes={
        "no_abs": (lambda w, factor=0.7: factor * w.mean(),
                   "take absolute values: Δ = factor · E|W| averages |W_i|, so negative weights "
                   "count by their magnitude (w.abs().mean())."),
        "max": (lambda w, factor=0.7: factor * w.abs().max(),
                "E|W| is the mean of |W|, not its maximum (t · max|w| is TTQ's threshold)."),
        "std": (lambda w, factor=0.7: factor * w.std(),
                "E|W| is the mean magnitude, not the standard deviation."),
        "sum": (lambda w, factor=0.7: factor * w.abs().sum(),
                "E|W| is a mean: divide the sum of |W_i| by the number of weights."),
        "per_channel": (_per_row_mean,
                        "one Δ for the whole layer: average |W| over all of its weights "
                        "(w.abs().mean()), not per output channel."),
        "factor_075": (lambda w, factor=0.75: factor * w.abs().mean(),
                       "your default factor is 0.75 (the latest arXiv version of the paper); "
                       "the authors' code, ttqlab and this exercise use factor=0.7."),
        "ignores_factor": (lambda w, factor=0.7: 0.7 * w.abs().mean(),
                           "you ignored the `factor` argument: Δ = factor · E|W|."),
    },
)


def check_twn_threshold(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``twn_threshold(w, factor=0.7)`` returns TWN's threshold (Li et al., Eq. 9)

        Δ = factor · E|W| = factor / n · Σ_i |W_i|

    over all n weights of ``w`` (any shape) as one number (a 0-d tensor); 0 for all zeros.
    """
    return check(TWN_THRESHOLD, fn, verbose)


def _twn_scale_cases() -> list[Case]:
    conv = _randn(11, 6, 4, 3, 3, scale=0.1)
    rand = _randn(12, 800, scale=0.05)
    return [
        Case("a small vector", (_t([0.9, -0.6, 0.2, -0.1, 0.5]), _t(0.3))),
        Case("ties: |W_i| = Δ counts as zero", (_t([0.5, -0.5, 0.25, 1.0, -1.5]), _t(0.5))),
        Case("all zeros", (torch.zeros(2, 3), _t(0.0))),
        Case("no weight above Δ", (_t([0.1, -0.2, 0.05]), _t(0.5))),
        Case("a single element", (_t([-0.8]), _t(0.3))),
        Case("a conv weight (4-D)", (conv, 0.7 * conv.abs().mean())),
        Case("random weights", (rand, 0.7 * rand.abs().mean())),
    ]


def _kept_mean_or_nan(w: Tensor, delta) -> Tensor:
    return w.abs()[w.abs() > delta].mean()


def _kept_mean_ge(w: Tensor, delta) -> Tensor:
    kept = w.abs()[w.abs() >= delta]
    return kept.sum() / max(kept.numel(), 1)


TWN_SCALE = Exercise(
    name="twn_scale",
    signature="twn_scale(w, delta)",
    cases=_twn_scale_cases,
    reference=lambda w, delta: Q.twn_scale(w, delta),
    judge=judge_tensor(),
    mistakes={
        "mean_all": (lambda w, delta: w.abs().mean(),
                     "α averages only the kept weights, I_Δ = {i : |W_i| > Δ}; you averaged all "
                     "of them."),
        "ge": (_kept_mean_ge,
               "|W_i| = Δ is set to zero (T_i = 0 if |W_i| ≤ Δ), so it is not kept: use >, "
               "not >=."),
        "no_abs": (lambda w, delta: w[w.abs() > delta].mean(),
                   "average the magnitudes |W_i| of the kept weights: negative weights count "
                   "positively."),
        "positive_only": (lambda w, delta: w[w > delta].mean(),
                          "keep both signs: I_Δ = {i : |W_i| > Δ} includes the weights below −Δ."),
        "masked_mean": (lambda w, delta: (w.abs() * (w.abs() > delta)).mean(),
                        "(|W| · (|W| > Δ)).mean() divides the kept magnitudes by all n weights: "
                        "α divides by the number kept, |I_Δ|. Use .sum() / the count of kept "
                        "weights (at least 1)."),
        "sum": (lambda w, delta: w.abs()[w.abs() > delta].sum(),
                "α is the mean of the kept magnitudes, not their sum."),
        "nan": (_kept_mean_or_nan,
                "when no weight exceeds Δ the mean is 0/0 = NaN: return 0 then (divide the sum by "
                "max(count, 1))."),
    },
)


def check_twn_scale(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``twn_scale(w, delta)`` returns TWN's L2-optimal scale for a threshold Δ
    (Li et al., Eq. 8)

        α = (1 / |I_Δ|) · Σ_{i ∈ I_Δ} |W_i|,   I_Δ = {i : |W_i| > Δ}

    as one number; 0 (not NaN) when no weight exceeds Δ. ``delta`` is a 0-d tensor.
    """
    return check(TWN_SCALE, fn, verbose)


def _optimal_cases() -> list[Case]:
    return [
        Case("a small vector", (_t([1.0, -0.8, 0.6, -0.45, 0.4, 0.1, -0.05]),)),
        Case("the same, shuffled", (_t([0.1, -0.8, 0.4, 1.0, -0.05, 0.6, -0.45]),)),
        Case("equal magnitudes: keep them all", (_t([0.5, -0.5, 0.5, -0.5]),)),
        Case("all zeros", (torch.zeros(6),)),
        Case("a single element", (_t([-0.3]),)),
        Case("a conv weight (4-D): one α for the whole layer", (_randn(21, 4, 3, 3, 3),)),
        Case("heavy-tailed weights (Laplace)", (_laplace(22, 300),)),
        Case("random weights", (_randn(23, 400, scale=0.05),)),
    ]


def _judge_optimal(expected: Tensor, got: Any, case: Case) -> Fail | None:
    """Any α·T with the least L2 error passes (ties in |W| allow several)."""
    problem = tensor_problem(expected, got, values=False)
    if problem:
        return Fail(problem)
    w = case.args[0].double()
    t = as_tensor(got)[0].double().reshape(w.shape)
    mags = t.abs()[t != 0]
    if mags.numel() and float(mags.max() - mags.min()) > 1e-6 * float(mags.max()):
        return Fail(f"your result is not ternary: it has non-zero magnitudes from "
                    f"{fmt(float(mags.min()))} to {fmt(float(mags.max()))}, but α·T takes "
                    f"the values −α, 0 and +α only")
    err, best = float(((w - t) ** 2).sum()), float(((w - expected.double()) ** 2).sum())
    if err <= best + 1e-6 * float((w**2).sum()) + 1e-12:
        return None
    kept, alpha = int((expected != 0).sum()), float(expected.abs().max())
    yours = f"you kept {mags.numel()}"
    if mags.numel():
        yours += f" with α = {fmt(float(mags[0]))}"
    return Fail(f"not the optimum: ||W − αT||² = {fmt(err)}, the best is {fmt(best)} "
                f"(keep {kept} of {w.numel()} weights, α = {fmt(alpha)}); {yours}")


def _ternary_top_k(w: Tensor, k: int, alpha: Tensor, signed: bool = True) -> Tensor:
    flat = w.flatten()
    out = torch.zeros_like(flat)
    idx = torch.argsort(flat.abs(), descending=True, stable=True)[:k]
    out[idx] = alpha.to(w.dtype) * (torch.where(flat[idx] >= 0, 1.0, -1.0) if signed else 1.0)
    return out.reshape(w.shape)


def _optimal_variant(objective: str = "S2/k", shift: int = 0, signed: bool = True,
                     ascending: bool = False, per_all: bool = False,
                     unsort: bool = True) -> Callable:
    """A wrong way to compute the exact optimum (for the hint catalogue)."""

    def fit(w: Tensor) -> Tensor:
        s = torch.sort(w.abs().flatten().double(), descending=not ascending).values
        if not s.numel() or not bool(s.any()):
            return torch.zeros_like(w)
        cs, k = torch.cumsum(s, 0), torch.arange(1, s.numel() + 1, dtype=torch.float64)
        best = int(torch.argmax(cs * cs / k if objective == "S2/k" else cs / k)) + 1 + shift
        best = max(0, min(best, s.numel()))
        if not best:
            return torch.zeros_like(w)
        alpha = cs[best - 1] / (s.numel() if per_all else best)
        if not unsort:  # the right values, left in the sorted order
            flat = w.flatten()
            order = torch.argsort(flat.abs(), descending=True, stable=True)[:best]
            out = torch.zeros_like(flat)
            out[:best] = alpha.to(w.dtype) * torch.where(flat[order] >= 0, 1.0, -1.0)
            return out.reshape(w.shape)
        if ascending:  # keeps the k smallest magnitudes
            flat, out = w.flatten(), torch.zeros_like(w.flatten())
            idx = torch.argsort(flat.abs(), stable=True)[:best]
            out[idx] = alpha.to(w.dtype) * torch.where(flat[idx] >= 0, 1.0, -1.0)
            return out.reshape(w.shape)
        return _ternary_top_k(w, best, alpha, signed)

    return fit


OPTIMAL_TERNARY = Exercise(
    name="optimal_ternary",
    signature="optimal_ternary(w)",
    cases=_optimal_cases,
    reference=lambda w: Q.ternarize_optimal(w),
    judge=_judge_optimal,
    mistakes={
        "twn": (lambda w: Q.ternarize_twn(w),
                "that is TWN's shortcut Δ = 0.7·E|W|: close, but not the optimum. Sort |W| in "
                "decreasing order and keep the k that maximises S_k² / k."),
        "off_by_one": (_optimal_variant(shift=-1),
                       "off by one: argmax returns an index i counted from 0, so keep k = i + 1 "
                       "weights."),
        "mean_objective": (_optimal_variant(objective="S/k"),
                           "you maximised the mean S_k / k (which always picks k = 1); the error "
                           "||W||² − S_k²/k is smallest where S_k² / k is largest."),
        "no_sign": (_optimal_variant(signed=False),
                    "T_i = sign(W_i): the kept negative weights become −α."),
        "ascending": (_optimal_variant(ascending=True),
                      "sort |W| in decreasing order: a support of size k should hold the k "
                      "largest magnitudes."),
        "not_unsorted": (_optimal_variant(unsort=False),
                         "you returned the ternary values in sorted order: put each back at "
                         "its weight's position (T[order[:k]] = sign(W)[order[:k]], with "
                         "order the argsort of |W|)."),
        "alpha_over_n": (_optimal_variant(per_all=True),
                         "α = S_k / k, the mean of the kept magnitudes (not divided by all n)."),
    },
)


def check_optimal_ternary(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``optimal_ternary(w)`` returns the exact L2-optimal ternary fit α·T of ``w``
    (same shape, one α for the whole tensor):

        sort |W| decreasing, S_k = Σ_{j ≤ k} |W|_(j),  k* = argmax_k S_k² / k,
        α = S_k* / k*,  T_i = sign(W_i) on the k* largest |W_i|, 0 elsewhere.

    Any α·T with the least error ||W − αT||² passes (with ties, several do).
    """
    return check(OPTIMAL_TERNARY, fn, verbose)
