"""Exercises for coursework: write the function, and a check tells you what is wrong.

Each ``check_*`` takes a student's function and runs it on fixed cases (all-zero tensors,
ties at the threshold, one element, 4-D conv weights, ...) and seeded random ones. It
compares the result with ttqlab's reference and prints a short verdict to stdout: either
"✓ all cases passed", or the first case that fails, what was expected, what came back
and, for a known mistake, a hint. It returns True or False (for autograders) and never
raises because of the student's function::

    def twn_threshold(w, factor=0.7):
        return factor * w.abs().mean()

    ttqlab.exercises.check_twn_threshold(twn_threshold)    # ✓ ... -> True

Known mistakes are spotted by running each catalogued wrong variant on the failing case
and matching the student's output against it (``HINTS`` lists the messages). That is
more reliable than guessing from the numbers.

Return a ``torch.Tensor`` (NumPy arrays, numbers and lists of numbers are converted), or
a tuple where the task asks for one. A function that raises ``NotImplementedError``, the
notebooks' stub, gets a "not implemented yet" note and False.
``grade(namespace)`` runs the check of every exercise function that a module or dict defines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from . import quantizers as Q
from .checking import (
    Case,
    Exercise,
    Fail,
    as_tensor,
    check,
    fmt,
    judge_tensor,
    judge_tuple,
    one_number,
    shape_of,
    tensor_problem,
)
from .inq import INQ
from .packing import pack
from .ternary_matmul import ternary_matmul

__all__ = [
    "EXERCISES",
    "HINTS",
    "check_add_only_matmul",
    "check_binarize",
    "check_inq_partition",
    "check_optimal_ternary",
    "check_pack_2bit",
    "check_pow2_levels",
    "check_sparsity_threshold",
    "check_ste",
    "check_ttq_backward",
    "check_twn_scale",
    "check_twn_threshold",
    "grade",
]


# --------------------------------------------------------------------------- case helpers


def _t(values, dtype=torch.float32) -> Tensor:
    return torch.tensor(values, dtype=dtype)


def _randn(seed: int, *shape: int, scale: float = 1.0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _codes(seed: int, *shape: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-1, 2, shape, generator=g).to(torch.int8)


# =========================================================================== notebook 1: TWN


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


def _laplace(seed: int, n: int) -> Tensor:
    u = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) - 0.5
    return (-torch.sign(u) * torch.log1p(-2 * u.abs())).float() * 0.05


def _optimal_cases() -> list[Case]:
    return [
        Case("a small vector", (_t([1.0, -0.8, 0.6, -0.45, 0.4, 0.1, -0.05]),)),
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
                     ascending: bool = False, per_all: bool = False) -> Callable:
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


# =========================================================================== notebook 2: STE


def _binarize_cases() -> list[Case]:
    return [
        Case("a small vector (W = 0 becomes +α)", (_t([0.5, -1.0, 0.25, 0.0]),)),
        Case("all zeros", (torch.zeros(2, 2),)),
        Case("a single element", (_t([-0.3]),)),
        Case("a conv weight (4-D): one α for the whole layer",
             (_randn(31, 6, 3, 3, 3, scale=0.1),)),
        Case("random weights", (_randn(32, 500, scale=0.05),)),
    ]


BINARIZE = Exercise(
    name="binarize",
    signature="binarize(w)",
    cases=_binarize_cases,
    reference=lambda w: Q.binarize(w),
    judge=judge_tensor(),
    mistakes={
        "torch_sign": (lambda w: w.abs().mean() * torch.sign(w),
                       "torch.sign(0) is 0, but a binary weight is ±α: map W = 0 to +α "
                       "(e.g. torch.where(w >= 0, α, −α))."),
        "no_scale": (lambda w: torch.where(w >= 0, 1.0, -1.0),
                     "scale by α = E|W| (BWN / XNOR-Net): without it every weight is ±1."),
        "max_scale": (lambda w: torch.where(w >= 0, 1.0, -1.0) * w.abs().max(),
                      "α = E|W| is the mean magnitude, not the maximum."),
        "no_abs": (lambda w: torch.where(w >= 0, 1.0, -1.0) * w.mean(),
                   "α = E|W| averages the magnitudes |W_i| (w.abs().mean())."),
    },
)


def check_binarize(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``binarize(w)`` returns the binary-weight baseline (BWN / XNOR-Net)

        w_b = α · sign(W),  α = E|W|,  with sign(0) = +1

    (same shape as ``w``; all zeros stay zero).
    """
    return check(BINARIZE, fn, verbose)


class _STEVariant(torch.autograd.Function):
    """Forward q exactly; backward g times ``scale(w)``: the wrong-gradient variants."""

    @staticmethod
    def forward(ctx, w, q, clip):
        ctx.save_for_backward(w)
        ctx.clip = clip
        return q.clone()

    @staticmethod
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        return (torch.where(w.abs() <= 1, g, 0.0) if ctx.clip else g), None, None


def _observe_ste(fn: Callable, case: Case, args: tuple, kwargs: dict) -> tuple:
    """(forward value, dL/dw) of ``fn(w, q)`` for the incoming gradient ``given['g']``."""
    w, q = args
    w = w.detach().requires_grad_(True)
    with torch.enable_grad():
        out = fn(w, q, **kwargs)
        grad = None
        if isinstance(out, Tensor) and out.requires_grad and out.shape == w.shape:
            out.backward(case.given["g"])
            grad = None if w.grad is None else w.grad.detach().clone()
    return (out.detach() if isinstance(out, Tensor) else out), grad


def _ste_cases() -> list[Case]:
    def case(name, w, q, seed):
        return Case(name, (w, q), given={"g": _randn(seed, *w.shape)})

    w1 = _t([-0.9, -0.2, 0.05, 0.3, 1.2])
    w2, w3, w4 = _randn(41, 1000), _randn(42, 4, 3, 3, 3, scale=0.1), _t([0.4])
    w5 = _randn(47, 1000, scale=0.05)  # small weights: w + (q - w) rounds away from q
    return [
        case("the notebook's example (TWN)", w1, Q.ternarize_twn(w1), 40),
        case("random weights, some |w| > 1", w2, Q.ternarize_twn(w2), 43),
        case("a conv weight (4-D)", w3, Q.ternarize_twn(w3), 44),
        case("binary q of small weights", w5, Q.binarize(w5), 45),
        case("a single element", w4, Q.binarize(w4), 46),
    ]


def _judge_ste(expected: tuple, got: tuple, case: Case) -> Fail | None:
    (q, g), (out, grad) = expected, got
    problem = tensor_problem(q, out, rtol=0.0, atol=0.0, name="forward value")
    if problem:
        return Fail(problem, 0)
    if grad is None:
        return Fail("no gradient reaches w: your output is cut off from w in the autograd graph "
                    "(the STE exists to pass dL/dq on to w)", 1)
    problem = tensor_problem(g, grad, rtol=1e-6, atol=0.0, name="dL/dw")
    return Fail(problem, 1) if problem else None


STE = Exercise(
    name="ste",
    signature="ste(w, q)",
    cases=_ste_cases,
    reference=lambda w, q: Q.ste(w, q),
    judge=_judge_ste,
    observe=_observe_ste,
    mistakes={
        "detached": (lambda w, q: q.detach(),
                     "returning q (or anything detached from w) cuts the graph: no gradient "
                     "reaches w. Write a torch.autograd.Function whose forward returns q and whose "
                     "backward returns the incoming gradient for w."),
        "one_liner": (lambda w, q: w + (q - w).detach(),
                      "w + (q − w).detach() equals q only up to float round-off (see the cell in "
                      "the notebook): write a torch.autograd.Function whose forward returns q "
                      "itself and whose backward returns the gradient unchanged."),
        "latent": (lambda w, q: w * 1.0,
                   "the forward pass must use the quantized q, not the latent w."),
        "clipped": (lambda w, q: _STEVariant.apply(w, q, True),
                    "you zeroed the gradient where |w| > 1 (BinaryNet's clipped STE); this "
                    "exercise asks for the plain STE: dL/dw = dL/dq everywhere."),
    },
)


def check_ste(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``ste(w, q)``, the straight-through estimator (Bengio et al. 2013):

        forward: exactly q (the quantized weights);   backward: dL/dw = dL/dq

    ``w`` requires grad, ``q`` is detached. The check back-propagates a random gradient.
    """
    return check(STE, fn, verbose)


# =========================================================================== notebook 3: TTQ


def _ttq_reference(w: Tensor, wp: Tensor, wn: Tensor, delta: Tensor, g: Tensor) -> tuple:
    """ttqlab's autograd Function for TTQ, differentiated for the incoming gradient g."""
    w, wp, wn = (v.detach().clone().requires_grad_(True) for v in (w, wp, wn))
    with torch.enable_grad():
        Q._TTQFunction.apply(w, wp, wn, delta, "sum").backward(g)
    return w.grad, wp.grad, wn.grad


def _ttq_cases() -> list[Case]:
    conv, rand = _randn(51, 4, 3, 3, 3, scale=0.1), _randn(52, 500, scale=0.05)
    return [
        Case("the notebook's example", (_t([-0.8, -0.3, -0.01, 0.02, 0.4, 0.9]), _t(0.7),
                                        _t(0.5), _t(0.045), _t([1.0, -2.0, 3.0, 4.0, -5.0, 2.0]))),
        Case("ties: |w| = Δ is in the zero region", (_t([0.5, -0.5, 0.25, 1.0, -1.0, -0.75]),
             _t(1.5), _t(0.5), _t(0.5), _t([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))),
        Case("every weight in the zero region", (_t([0.1, -0.2, 0.05]), _t(1.0), _t(1.0),
                                                 _t(0.5), _t([1.0, -1.0, 2.0]))),
        Case("a single element", (_t([-0.7]), _t(1.2), _t(0.8), _t(0.1), _t([2.0]))),
        Case("a conv weight (4-D)", (conv, _t(1.3), _t(0.6), 0.05 * conv.abs().max(),
                                     _randn(53, *conv.shape))),
        Case("random weights", (rand, _t(0.04), _t(0.03), 0.05 * rand.abs().max(),
                                _randn(54, 500))),
    ]


def _ttq_variant(sign: float = -1.0, reduce: str = "sum", latent: str = "scaled",
                 ge: bool = False, region_only: bool = True) -> Callable:
    def grads(w, wp, wn, delta, g):
        pos, neg = (w >= delta, w <= -delta) if ge else (w > delta, w < -delta)
        gp = g[pos].sum() if region_only else g.sum()
        gn = sign * g[neg].sum()
        if reduce == "mean":
            gp, gn = gp / pos.sum().clamp(min=1), gn / neg.sum().clamp(min=1)
        scale_p, scale_n, middle = {"scaled": (wp, wn, 1.0), "plain": (1.0, 1.0, 1.0),
                                    "swapped": (wn, wp, 1.0), "cut": (wp, wn, 0.0),
                                    "minus": (wp, -wn, 1.0)}[latent]
        gw = torch.where(pos, scale_p * g, torch.where(neg, scale_n * g, middle * g))
        return gw, gp, gn

    return grads


TTQ_BACKWARD = Exercise(
    name="ttq_backward",
    signature="ttq_backward(w, wp, wn, delta, g)",
    cases=_ttq_cases,
    reference=_ttq_reference,
    judge=judge_tuple(("dL/dw", "dL/dW_p", "dL/dW_n"), rtol=1e-4, atol=1e-6),
    mistakes={
        "no_minus": (_ttq_variant(sign=1.0),
                     "your W_n gradient has the wrong sign: w_t = −W_n where w < −Δ, so "
                     "dL/dW_n = −Σ g_i over that region (the paper's Eq. 7 drops this minus; "
                     "the chain rule needs it)."),
        "mean": (_ttq_variant(reduce="mean"),
                 "you averaged instead of summing: dL/dW_p = Σ_{w_i > Δ} g_i and dL/dW_n = "
                 "−Σ_{w_i < −Δ} g_i are sums over each region, as in the authors' code."),
        "all_weights": (_ttq_variant(region_only=False),
                        "dL/dW_p sums g only over the positive region {i : w_i > Δ}, not over "
                        "all weights."),
        "plain_ste": (_ttq_variant(latent="plain"),
                      "you passed g through unchanged: TTQ scales the latent gradient by W_p "
                      "where w > Δ and by W_n where w < −Δ (by 1 in between)."),
        "swapped": (_ttq_variant(latent="swapped"),
                    "you swapped the scales: W_p multiplies the gradient where w > Δ, W_n where "
                    "w < −Δ."),
        "cut_middle": (_ttq_variant(latent="cut"),
                       "the zero region |w| ≤ Δ passes the gradient unchanged (factor 1); you "
                       "set it to 0."),
        "minus_wn": (_ttq_variant(latent="minus"),
                     "the latent gradient where w < −Δ is W_n · g_i, a positive multiplier, "
                     "not −W_n · g_i."),
        "ge": (_ttq_variant(ge=True),
               "|w| = Δ belongs to the zero region: use w > Δ and w < −Δ, not >= and <=."),
    },
)


def check_ttq_backward(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``ttq_backward(w, wp, wn, delta, g)`` returns TTQ's gradients (Zhu et al.,
    authors' code) as a tuple ``(dL/dw, dL/dW_p, dL/dW_n)``, given the latent weights w,
    the scales W_p, W_n and the threshold Δ (0-d tensors), and g = dL/dw_t:

        dL/dW_p =  Σ_{i: w_i > Δ} g_i,     dL/dW_n = −Σ_{i: w_i < −Δ} g_i,
        dL/dw_i = W_p g_i (w_i > Δ),  g_i (|w_i| ≤ Δ),  W_n g_i (w_i < −Δ).
    """
    return check(TTQ_BACKWARD, fn, verbose)


# =========================================================================== notebook 4: sparsity


def _sparsity_cases() -> list[Case]:
    return [
        Case("half of ten weights", (_t([0.9, -0.1, 0.5, -0.7, 0.3, 0.2, -0.4, 0.05, 0.6, -0.8]),
                                     0.5)),
        Case("90% of a random layer", (_randn(61, 1000, scale=0.05), 0.9)),
        Case("a conv weight (4-D), 75%", (_randn(62, 8, 4, 3, 3), 0.75)),
        Case("a single weight, 90%", (_t([-0.3]), 0.9)),
        Case("25% of a random layer", (_randn(63, 40, 10), 0.25)),
    ]


def _judge_sparsity(expected: Tensor, got: Any, case: Case) -> Fail | None:
    """Passes if the same weights end up zero (|w| ≤ Δ) as with the reference Δ."""
    d, why = one_number(got)
    if d is None:
        return Fail(why)
    w = case.args[0]
    a = w.abs().double()
    mine, want = a <= d, a <= expected.double()
    if torch.equal(mine, want):
        return None
    n, k = w.numel(), int(want.sum())
    return Fail(f"your Δ = {fmt(d.item())} sets {int(mine.sum())} of {n} weights to zero "
                f"({int(mine.sum()) / n:.1%}); expected {k} (Δ = {fmt(expected.item())}, the "
                f"k-th smallest |w| with k = round(p·n) = {k})")


def _zero_set(obs: Any, case: Case) -> Any:
    d, _ = one_number(obs)
    return obs if d is None else case.args[0].abs().double() <= d


def _kth_abs(w: Tensor, k: int) -> Tensor:
    return w.abs().flatten().kthvalue(max(1, min(w.numel(), k))).values


SPARSITY_THRESHOLD = Exercise(
    name="sparsity_threshold",
    signature="sparsity_threshold(w, sparsity)",
    cases=_sparsity_cases,
    reference=lambda w, sparsity: Q.ttq_threshold(w, sparsity=sparsity),
    judge=_judge_sparsity,
    key=_zero_set,
    mistakes={
        "off_by_one": (lambda w, p: _kth_abs(w, round(p * w.numel()) + 1),
                       "off by one: exactly k = round(p·n) weights must satisfy |w| ≤ Δ, so Δ is "
                       "the k-th smallest |w| (index k − 1 of the sorted magnitudes)."),
        "signed": (lambda w, p: w.flatten().kthvalue(max(1, round(p * w.numel()))).values,
                   "rank the magnitudes |w|, not the signed values."),
        "fraction_kept": (lambda w, p: _kth_abs(w, w.numel() - round(p * w.numel())),
                          "p is the fraction of zeros (|w| ≤ Δ), not the fraction kept."),
        "t_max": (lambda w, p: p * w.abs().max(),
                  "p is a fraction of the weights, not of max|w|: Δ = t·max|w| is TTQ's "
                  "other threshold. Sort |w| and take the k-th smallest, k = round(p·n)."),
    },
)


def check_sparsity_threshold(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``sparsity_threshold(w, sparsity)`` returns TTQ's fixed-sparsity threshold
    (authors' code, Section 5): the Δ that sets a fraction p of the weights to zero,

        Δ = the k-th smallest |w_i|,  k = round(p · n),  so that #{i : |w_i| ≤ Δ} = k

    (one number). Any Δ that zeroes the same weights passes.
    """
    return check(SPARSITY_THRESHOLD, fn, verbose)


# =========================================================================== notebook 5: INQ


def _pow2_cases() -> list[Case]:
    return [
        Case("bits=5, max|W| = 0.9", (_t([0.9, -0.3, 0.05, 0.2]), 5)),
        Case("the largest weight is negative", (_t([0.1, -0.6, 0.2]), 5)),
        Case("log2(4s/3) = 0.6", (_t([1.1371, -0.5, 0.01]), 5)),
        Case("log2(4s/3) = -1.7", (_t([0.1, 0.2309, -0.05]), 4)),
        Case("bits=2: ternary", (_randn(71, 50, scale=0.05), 2)),
        Case("bits=3", (_randn(72, 50, scale=0.05), 3)),
        Case("max|W| = 0.75·2^n exactly", (_t([0.375, -0.1]), 5)),
        Case("a single element", (_t([-0.02]), 4)),
        Case("a conv weight (4-D)", (_randn(73, 4, 3, 3, 3, scale=0.1), 5)),
        Case("random weights", (_randn(74, 1000, scale=0.05), 5)),
    ]


def _pow2_variant(n1_of: Callable[[float], int] = lambda s: math.floor(math.log2(4 * s / 3)),
                  n2_shift: int = 0, half: bool = True, use_abs: bool = True,
                  zero: bool = True, negative: bool = True, order: bool = True) -> Callable:
    def levels(w: Tensor, bits: int) -> Tensor:
        s = float(w.abs().max() if use_abs else w.max())
        n1 = n1_of(s)
        n2 = n1 + 1 - (2 ** (bits - 1) // 2 if half else 2 ** (bits - 1)) + n2_shift
        mags = [2.0**n for n in range(n2, n1 + 1)]
        values = sorted(([-m for m in mags] if negative else []) + ([0.0] if zero else []) + mags)
        return torch.tensor(values if order else values[::-1])

    return levels


def _sorted_values(obs: Any, case: Case) -> Any:
    t, _ = as_tensor(obs)
    return obs if t is None or t.dtype == torch.bool else torch.sort(t.flatten().double()).values


POW2_LEVELS = Exercise(
    name="pow2_levels",
    signature="pow2_levels(w, bits)",
    cases=_pow2_cases,
    reference=lambda w, bits: Q.pow2_levels(w, bits),
    judge=judge_tensor(rtol=1e-6, atol=0.0),
    key=_sorted_values,  # any order of the right levels matches the "unsorted" mistake
    mistakes={
        "round": (_pow2_variant(lambda s: round(math.log2(4 * s / 3))),
                  "n1 = ⌊log2(4s/3)⌋ rounds down (floor), not to the nearest integer."),
        "trunc": (_pow2_variant(lambda s: int(math.log2(4 * s / 3))),
                  "int() truncates towards zero, which for a negative logarithm (s < 0.75) is "
                  "one too high: use math.floor."),
        "ceil": (_pow2_variant(lambda s: math.ceil(math.log2(4 * s / 3))),
                 "n1 = ⌊log2(4s/3)⌋ rounds down: use math.floor, not math.ceil."),
        "no_4_3": (_pow2_variant(lambda s: math.floor(math.log2(s))),
                   "n1 = ⌊log2(4s/3)⌋, not ⌊log2 s⌋: the factor 4/3 makes the largest weight "
                   "round to 2^n1 and never above it."),
        "no_abs": (_pow2_variant(use_abs=False),
                   "s = max|W|: take absolute values (the largest weight may be negative)."),
        "n2_low": (_pow2_variant(n2_shift=-1),
                   "one exponent too many: n2 = n1 + 1 − 2^(b−1)/2, so b bits give 2^(b−2) "
                   "exponents (8 for b = 5)."),
        "n2_high": (_pow2_variant(n2_shift=1),
                    "one exponent too few: n2 = n1 + 1 − 2^(b−1)/2, so b bits give 2^(b−2) "
                    "exponents (8 for b = 5)."),
        "no_half": (_pow2_variant(half=False),
                    "n2 = n1 + 1 − 2^(b−1)/2: you forgot the /2 (one bit goes to the sign, and "
                    "one code to zero)."),
        "no_zero": (_pow2_variant(zero=False),
                    "0 is a level too: P_l = {±2^n1, ..., ±2^n2, 0}."),
        "no_negative": (_pow2_variant(negative=False),
                        "P_l has negative levels too: ±2^n for every n from n2 to n1."),
        "unsorted": (_pow2_variant(order=False),
                     "return the levels sorted in increasing order (torch.sort(...).values)."),
    },
)


def check_pow2_levels(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``pow2_levels(w, bits)`` returns INQ's levels (Zhou et al., Eq. 2-3) as a
    sorted 1-D float tensor:

        P_l = {±2^n1, ..., ±2^n2, 0},  n1 = ⌊log2(4s/3)⌋,  s = max|W|,
        n2 = n1 + 1 − 2^(b−1)/2

    (b = 5: 8 exponents, 17 levels; b = 2: {−2^n1, 0, 2^n1}).
    """
    return check(POW2_LEVELS, fn, verbose)


def _partition_reference(w: Tensor, frozen: Tensor, fraction: float) -> Tensor:
    """ttqlab.INQ's magnitude partition for one layer and step."""
    n = w.numel()
    count = (n if fraction == 1.0 else round(fraction * n)) - int(frozen.sum())
    strategy = type("Magnitude", (), {"strategy": "magnitude"})()
    return INQ._partition(strategy, w, ~frozen, max(count, 0), 0)


def _partition_cases() -> list[Case]:
    w8 = _t([0.1, -0.9, 0.4, -0.3, 0.7, 0.2, -0.05, 0.6])
    none = torch.zeros(8, dtype=torch.bool)
    half = _t([0, 1, 1, 0, 1, 0, 0, 1], torch.bool)
    most = _t([0, 1, 1, 1, 1, 1, 0, 1], torch.bool)
    scattered = _t([0, 1, 0, 0, 0, 1, 1, 0], torch.bool)
    big = _randn(82, 40, 10)
    top = big.abs() >= big.abs().flatten().kthvalue(201).values
    return [
        Case("first step: 50% of nothing frozen", (w8, none, 0.5)),
        Case("second step: 75% in all", (w8, half, 0.75)),
        Case("last step: fraction 1.0 freezes the rest", (w8, most, 1.0)),
        Case("after a random partition: choose among the free weights", (w8, scattered, 0.75)),
        Case("a single weight", (_t([0.3]), torch.zeros(1, dtype=torch.bool), 1.0)),
        Case("a conv weight (4-D), first step", (_randn(81, 4, 2, 3, 3),
                                                  torch.zeros(4, 2, 3, 3, dtype=torch.bool), 0.5)),
        Case("a random layer, third step (87.5%)", (big, top, 0.875)),
    ]


def _positions(mask: Tensor) -> str:
    return str(mask.flatten().nonzero().flatten().tolist())


def _judge_partition(expected: Tensor, got: Any, case: Case) -> Fail | None:
    w, frozen, fraction = case.args
    t, why = as_tensor(got)
    if t is None:
        return Fail(why)
    if t.dtype != torch.bool:
        return Fail(f"expected a bool mask (True = freeze in this step), got dtype {t.dtype}; "
                    f"build it with comparisons or convert with mask.bool()")
    if t.shape != w.shape:
        return Fail(f"expected a mask of the weights' shape {shape_of(w)}, got shape {shape_of(t)}")
    small = w.numel() <= 16
    detail = (f" (expected positions {_positions(expected)}, you chose {_positions(t)})"
              if small else "")
    again = t & frozen
    if bool(again.any()):
        return Fail(f"you chose {int(again.sum())} weight(s) that are already frozen; choose "
                    f"among the free ones (frozen == False){detail}")
    if int(t.sum()) != int(expected.sum()):
        return Fail(f"you chose {int(t.sum())} weights; expected round({fraction}·{w.numel()}) "
                    f"− {int(frozen.sum())} already frozen = {int(expected.sum())}{detail}")
    a, left = w.abs(), ~frozen & ~t
    if bool(t.any()) and bool(left.any()) and float(a[t].min()) < float(a[left].max()):
        return Fail(f"you froze a weight with |w| = {fmt(float(a[t].min()))} while one with "
                    f"|w| = {fmt(float(a[left].max()))} stays free{detail}")
    return None


def _partition_variant(score_of: Callable[[Tensor], Tensor] = lambda w: w.abs(),
                       among_free: bool = True, accumulated: bool = True,
                       cumulative: bool = False) -> Callable:
    def partition(w: Tensor, frozen: Tensor, fraction: float) -> Tensor:
        n = w.numel()
        count = round(fraction * n) - (int(frozen.sum()) if accumulated else 0)
        pool = (~frozen).flatten().nonzero().flatten() if among_free else torch.arange(n)
        top = torch.topk(score_of(w).flatten()[pool], max(0, min(count, pool.numel())))
        new = torch.zeros(n, dtype=torch.bool)
        new[pool[top.indices]] = True
        return new.reshape(w.shape) | frozen if cumulative else new.reshape(w.shape)

    return partition


INQ_PARTITION = Exercise(
    name="inq_partition",
    signature="inq_partition(w, frozen, fraction)",
    cases=_partition_cases,
    reference=_partition_reference,
    judge=_judge_partition,
    mistakes={
        "smallest": (_partition_variant(lambda w: -w.abs()),
                     "you froze the smallest weights instead of the largest: INQ's "
                     "pruning-inspired partition freezes the largest |W| first (sort in "
                     "decreasing order)."),
        "signed": (_partition_variant(lambda w: w),
                   "rank by magnitude |W|: a large negative weight matters as much as a large "
                   "positive one."),
        "ignore_frozen": (_partition_variant(among_free=False),
                          "choose among the weights that are still free (frozen == False); you "
                          "picked some that are already frozen."),
        "not_accumulated": (_partition_variant(accumulated=False),
                            "fraction is the accumulated fraction: freeze round(fraction·n) − "
                            "(already frozen) more weights in this step."),
        "cumulative": (_partition_variant(cumulative=True),
                       "return only the weights to freeze in this step, not those frozen before."),
    },
)


def check_inq_partition(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``inq_partition(w, frozen, fraction)`` returns the bool mask of the weights
    INQ freezes in this step (Zhou et al., pruning-inspired partition): among the free
    weights (``frozen == False``) the

        m = round(fraction · n) − #frozen

    with the largest |W| (``fraction`` is the accumulated fraction, e.g. 0.5, 0.75, 0.875, 1).
    """
    return check(INQ_PARTITION, fn, verbose)


# =========================================================================== notebook 6: deployment


def _pack_cases() -> list[Case]:
    return [
        Case("the packing docstring's example", (_t([1, -1, 0, 1, -1], torch.int8),)),
        Case("four +1 codes fill one byte", (_t([1, 1, 1, 1], torch.int8),)),
        Case("eight −1 codes", (_t([-1] * 8, torch.int8),)),
        Case("all zeros", (torch.zeros(7, dtype=torch.int8),)),
        Case("a single code", (_t([-1], torch.int8),)),
        Case("no codes at all", (torch.zeros(0, dtype=torch.int8),)),
        Case("2-D codes are read row by row", (_codes(91, 3, 5),)),
        Case("a conv weight's codes (4-D)", (_codes(92, 4, 3, 3, 3),)),
        Case("random codes", (_codes(93, 1001),)),
    ]


def _pack_variant(digit: Callable[[Tensor], Tensor] = lambda c: c % 3, msb_first: bool = False,
                  pad: bool = True, per_row: bool = False, columns: bool = False) -> Callable:
    def pack_2bit(codes: Tensor) -> Tensor:
        if per_row and codes.dim() > 1:
            return torch.cat([pack_2bit(row) for row in codes.reshape(codes.shape[0], -1)])
        c = codes.t() if columns and codes.dim() == 2 else codes
        d = digit(c.flatten().long())
        d = torch.cat([d, d.new_zeros((-d.numel()) % 4)]) if pad else d[: d.numel() // 4 * 4]
        shifts = torch.tensor([6, 4, 2, 0] if msb_first else [0, 2, 4, 6])
        return (d.reshape(-1, 4) << shifts).sum(1).to(torch.uint8)

    return pack_2bit


PACK_2BIT = Exercise(
    name="pack_2bit",
    signature="pack_2bit(codes)",
    cases=_pack_cases,
    reference=lambda codes: pack(codes, "2bit"),
    judge=judge_tensor(),
    mistakes={
        "msb_first": (_pack_variant(msb_first=True),
                      "the first code goes in the lowest two bits: byte = d0 | d1 << 2 | d2 << 4 | "
                      "d3 << 6."),
        "twos_complement": (_pack_variant(digit=lambda c: c & 3),
                            "−1 is stored as the digit 2 (d = T mod 3: 0 → 0, +1 → 1, −1 → 2); "
                            "the 2-bit value 3 is invalid."),
        "offset": (_pack_variant(digit=lambda c: c + 1),
                   "store d = T mod 3 (0 → 0, +1 → 1, −1 → 2), so that a zero weight is zero "
                   "bits; you stored T + 1."),
        "no_padding": (_pack_variant(pad=False),
                       "pad the last byte: ceil(n / 4) bytes, the unused 2-bit fields set to 0; "
                       "you dropped the last codes."),
        "per_row": (_pack_variant(per_row=True),
                    "flatten the codes first (codes.flatten(), row-major) and pad only once, "
                    "at the very end, not after every row."),
        "column_major": (_pack_variant(columns=True),
                         "read the codes row by row (codes.flatten(), row-major order), not "
                         "column by column."),
    },
)


def check_pack_2bit(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``pack_2bit(codes)`` packs ternary codes T ∈ {−1, 0, +1} (int8, any shape,
    read row-major) into a 1-D uint8 tensor of ceil(n/4) bytes, the layout of
    ``ttqlab.packing.pack(codes, "2bit")``:

        d = T mod 3  (0 → 0, +1 → 1, −1 → 2),   byte = d0 | d1 << 2 | d2 << 4 | d3 << 6

    the first code in the lowest bits, the last byte padded with zero digits.
    """
    return check(PACK_2BIT, fn, verbose)


class _OpCounter(TorchFunctionMode):
    """Records the torch calls a function makes: dense products and multiplications."""

    DENSE = frozenset({"matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "mv", "dot", "vdot",
                       "inner", "einsum", "tensordot", "linear", "bilinear", "addmm", "addmv",
                       "addbmm", "baddbmm", "conv1d", "conv2d", "chain_matmul", "multi_dot"})
    MULTIPLY = frozenset({"mul", "mul_", "multiply", "__mul__", "__rmul__", "__imul__", "outer",
                          "kron", "addcmul", "prod"})

    def __init__(self):
        super().__init__()
        self.dense: set[str] = set()
        self.multiplications = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name in self.DENSE:
            self.dense.add(name.strip("_"))
        elif name in self.MULTIPLY and isinstance(out, Tensor):
            self.multiplications += out.numel()
        return out


def _observe_add_only(fn: Callable, case: Case, args: tuple, kwargs: dict) -> tuple:
    """(y, the dense products used, whether it multiplied more than twice per output)."""
    x, codes = args[0], args[1]
    with _OpCounter() as ops:
        y = fn(*args, **kwargs)
    outputs = (x.shape[0] if x.dim() == 2 else 1) * codes.shape[0]
    return y, sorted(ops.dense), ops.multiplications > 2 * outputs


def _judge_add_only(expected: tuple, got: tuple, case: Case) -> Fail | None:
    problem = tensor_problem(expected[0], got[0], rtol=1e-4, atol=1e-5)
    if problem:
        return Fail(problem, 0)
    if got[1]:
        return Fail(f"the values are right, but you computed them with {', '.join(got[1])}, a "
                    f"dense product that multiplies every weight", 1)
    if got[2]:
        return Fail("the values are right, but your code multiplies more than twice per output "
                    "(W_p·S₊ and W_n·S₋ are all you need)", 2)
    return None


def _add_only_variant(kind: str) -> Callable:
    def matmul(x, codes, wp, wn):
        pos, neg = (codes == 1).to(x.dtype), (codes == -1).to(x.dtype)
        if kind == "dense":
            return x @ (wp * pos - wn * neg).T
        if kind == "mask_multiply":
            return (wp * (x[:, None, :] * pos).sum(-1) - wn * (x[:, None, :] * neg).sum(-1))
        s_pos = torch.stack([x[:, row == 1].sum(1) for row in codes], dim=1)
        s_neg = torch.stack([x[:, row == -1].sum(1) for row in codes], dim=1)
        return {"plus": lambda: wp * s_pos + wn * s_neg,
                "swapped": lambda: wn * s_pos - wp * s_neg,
                "no_scales": lambda: s_pos - s_neg,
                "transposed": lambda: (wp * s_pos - wn * s_neg).T}[kind]()

    return matmul


def _add_only_cases() -> list[Case]:
    return [
        Case("two inputs, three outputs",
             (_t([[1.0, 2.0, 3.0, 4.0, 5.0], [-1.0, 0.5, 2.0, 0.0, 1.0]]),
              _t([[1, 0, -1, 0, 1], [0, 0, 0, 0, 0], [-1, -1, 1, 1, 0]], torch.int8), 0.7, 0.5)),
        Case("all-zero codes", (_randn(101, 3, 6), torch.zeros(4, 6, dtype=torch.int8), 1.2, 0.8)),
        Case("a single input (B = 1)", (_randn(102, 1, 8), _codes(103, 2, 8), 0.3, 0.9)),
        Case("one output (N = 1)", (_randn(104, 5, 7), _codes(105, 1, 7), 1.0, 2.0)),
        Case("a random layer", (_randn(106, 4, 64), _codes(107, 16, 64), 0.05, 0.03)),
    ]


ADD_ONLY_MATMUL = Exercise(
    name="add_only_matmul",
    signature="add_only_matmul(x, codes, wp, wn)",
    cases=_add_only_cases,
    reference=lambda x, codes, wp, wn: ternary_matmul(x, codes, {"wp": wp, "wn": wn})[0],
    judge=_judge_add_only,
    observe=_observe_add_only,
    key=lambda obs, case: (obs[0], bool(obs[1]), obs[2]),
    mistakes={
        "dense": (_add_only_variant("dense"),
                  "use only additions and subtractions inside the sums: for each output n, add "
                  "up the inputs where T[n] = +1 and where T[n] = −1 (x[:, codes[n] == 1].sum(1)), "
                  "then multiply by W_p and W_n once."),
        "mask_multiply": (_add_only_variant("mask_multiply"),
                          "multiplying by a 0/1 mask is still one multiplication per weight: "
                          "select the inputs instead (x[:, codes[n] == 1]) and add them."),
        "plus": (_add_only_variant("plus"), "the −1 codes subtract: y = W_p·S₊ − W_n·S₋."),
        "swapped": (_add_only_variant("swapped"),
                    "W_p goes with the +1 codes (S₊) and W_n with the −1 codes (S₋)."),
        "no_scales": (_add_only_variant("no_scales"),
                      "multiply the two sums by the scales: y = W_p·S₊ − W_n·S₋."),
        "transposed": (_add_only_variant("transposed"),
                       "y = x Wᵀ has shape (B, N): one row per input, one column per output."),
    },
)


def check_add_only_matmul(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``add_only_matmul(x, codes, wp, wn)`` returns y = x Wᵀ, shape (B, N), for the
    ternary weights W = W_p·[T = +1] − W_n·[T = −1] (x: (B, K) floats, codes T: (N, K)
    int8, W_p and W_n numbers) using only additions and subtractions inside the sums:

        y[b, n] = W_p · Σ_{k: T[n,k] = +1} x[b, k]  −  W_n · Σ_{k: T[n,k] = −1} x[b, k]

    The check counts the torch operations: no matrix product, at most 2 multiplications per
    output.
    """
    return check(ADD_ONLY_MATMUL, fn, verbose)


# --------------------------------------------------------------------------- catalogue, grading

_ALL = (TWN_THRESHOLD, TWN_SCALE, OPTIMAL_TERNARY, BINARIZE, STE, TTQ_BACKWARD,
        SPARSITY_THRESHOLD, POW2_LEVELS, INQ_PARTITION, PACK_2BIT, ADD_ONLY_MATMUL)

#: exercise (the student's function name) -> its check
EXERCISES: dict[str, Callable[..., bool]] = {
    "twn_threshold": check_twn_threshold,
    "twn_scale": check_twn_scale,
    "optimal_ternary": check_optimal_ternary,
    "binarize": check_binarize,
    "ste": check_ste,
    "ttq_backward": check_ttq_backward,
    "sparsity_threshold": check_sparsity_threshold,
    "pow2_levels": check_pow2_levels,
    "inq_partition": check_inq_partition,
    "pack_2bit": check_pack_2bit,
    "add_only_matmul": check_add_only_matmul,
}

#: exercise -> {mistake: the hint printed when a student's result reproduces it}
HINTS: dict[str, dict[str, str]] = {ex.name: {m: h for m, (_, h) in ex.mistakes.items()}
                                    for ex in _ALL}


def grade(namespace: Any, names: list[str] | None = None, *,
          verbose: bool = False) -> dict[str, bool]:
    """Run the check of every exercise function in ``namespace`` (a module, ``globals()``
    or any dict of functions) and return ``{exercise: passed}``.

    With ``names``, grade exactly those exercises (a missing function counts as failed).
    """
    found = namespace if isinstance(namespace, Mapping) else vars(namespace)
    names = [n for n in EXERCISES if n in found] if names is None else list(names)
    unknown = [n for n in names if n not in EXERCISES]
    if unknown:
        raise ValueError(f"unknown exercises {unknown}; pass names from {sorted(EXERCISES)}")
    results = {}
    for name in names:
        if name in found:
            results[name] = EXERCISES[name](found[name], verbose=verbose)
        else:
            results[name] = False
            if verbose:
                print(f"✗ {name}: no function of that name was found")
    return results
