"""Notebooks 7 and 7b (the reviewers' questions): the L2-optimal scales of a ternary
assignment, and power-of-two activations, each with its catalogue of typical mistakes."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..checking import Case, Exercise, check, judge_tensor, judge_tuple
from ._cases import _codes, _randn, _t

# --------------------------------------------------------------------------- notebook 7


def _side_mean(values: Tensor) -> Tensor:
    return values.sum() / max(values.numel(), 1)


def _l2_scales(w: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
    """alpha_p = mean{w_i : T_i = +1}, alpha_n = mean{-w_i : T_i = -1}; 0 for an empty side."""
    return _side_mean(w[codes > 0]), _side_mean(-w[codes < 0])


def _l2_cases() -> list[Case]:
    rand = _randn(71, 400, scale=0.05)
    conv = _randn(72, 8, 4, 3, scale=0.1)
    return [
        Case("a small vector", (_t([0.9, -0.6, 0.2, -0.1, 0.5]), _t([1, -1, 0, 0, 1]))),
        Case("codes that disagree with the signs",
             (_t([0.4, -0.2, 0.3, 0.1]), _t([1, 1, -1, 0]))),
        Case("no negative code", (_t([0.3, 0.7, -0.1]), _t([1, 1, 0]))),
        Case("all zero codes", (_t([0.3, -0.7]), _t([0, 0]))),
        Case("a conv weight (3-D)", (conv, torch.sign(conv) * (conv.abs() > 0.08))),
        Case("random codes", (rand, _codes(73, 400).float())),
    ]


L2_SCALES = Exercise(
    name="l2_scales",
    signature="l2_scales(w, codes)",
    cases=_l2_cases,
    reference=_l2_scales,
    judge=judge_tuple(("alpha_p", "alpha_n"), rtol=1e-5, atol=1e-7),
    mistakes={
        "signed_n": (lambda w, c: (_side_mean(w[c > 0]), _side_mean(w[c < 0])),
                     "alpha_n is a magnitude: the negative level is -alpha_n, so average -w_i "
                     "over the negative codes (a positive number)."),
        "one_alpha": (lambda w, c: (_side_mean(w[c != 0].abs()),) * 2,
                      "that is TWN's single alpha (the mean |w| of every kept weight); TTQ's "
                      "two scales are fitted separately, each side its own mean."),
        "by_n": (lambda w, c: ((w * (c > 0)).sum() / w.numel(), (-w * (c < 0)).sum() / w.numel()),
                 "divide each side's sum by the number of weights on that side, not by all n."),
        "abs": (lambda w, c: (_side_mean(w[c > 0].abs()), _side_mean(w[c < 0].abs())),
                "minimise ||w - w_t||² for the given codes: a weight coded +1 that is negative "
                "pulls alpha_p down; average w_i (and -w_i), not |w_i|."),
        "by_sign": (lambda w, c: (_side_mean(w[w > 0]), _side_mean(-w[w < 0])),
                    "use the codes, not the signs of w: the assignment is given (it is what "
                    "TTQ learned), and a weight in the zero region is not in either side."),
    },
)


def check_l2_scales(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``l2_scales(w, codes)`` returns the pair ``(alpha_p, alpha_n)`` minimising
    ``||w - (alpha_p [codes = +1] - alpha_n [codes = -1])||²`` for a fixed ternary
    assignment ``codes`` (values -1, 0, +1, the shape of ``w``):

        alpha_p = mean{w_i : codes_i = +1},   alpha_n = mean{-w_i : codes_i = -1}

    each 0 when its side is empty.
    """
    return check(L2_SCALES, fn, verbose)


# --------------------------------------------------------------------------- notebook 7b


def _pow2_activation(x: Tensor, bits: int, kmax: int) -> Tensor:
    """0 or 2^k, k = round(log2 x) clamped to [kmax - 2^bits + 2, kmax]; 0 below 2^(kmin-1)."""
    kmin = kmax - (2 ** bits - 2)
    k = torch.round(torch.log2(x.clamp(min=1e-30))).clamp(kmin, kmax)
    return torch.where(x >= 2.0 ** (kmin - 1), 2.0 ** k, torch.zeros_like(x))


def _pow2_linear(x: Tensor, bits: int, kmax: int) -> Tensor:
    kmin = kmax - (2 ** bits - 2)
    levels = 2.0 ** torch.arange(kmin, kmax + 1, dtype=x.dtype)
    best = levels[(x[..., None] - levels).abs().argmin(-1)]
    return torch.where(x >= 2.0 ** (kmin - 1), best, torch.zeros_like(x))


def _pow2_cases() -> list[Case]:
    u = torch.rand(300, generator=torch.Generator().manual_seed(74)) * 3
    return [
        Case("a few values, 2 bits", (_t([0.0, 0.3, 0.5, 0.9, 1.2, 5.0]), 2, 1)),
        Case("exactly half the smallest level (kept, 3 bits)", (_t([2.0 ** -6, 2.0 ** -7]), 3, 0)),
        Case("above the largest level, 3 bits", (_t([4.0, 100.0]), 3, 1)),
        Case("random ReLU outputs, 4 bits", (u, 4, 2)),
        Case("a 2-D batch, 3 bits", (u.reshape(30, 10), 3, 1)),
    ]


POW2_ACTIVATION = Exercise(
    name="pow2_activation",
    signature="pow2_activation(x, bits, kmax)",
    cases=_pow2_cases,
    reference=_pow2_activation,
    judge=judge_tensor(rtol=1e-6, atol=0.0),
    mistakes={
        "no_zero": (lambda x, b, k: 2.0 ** torch.round(torch.log2(x.clamp(min=1e-30))).clamp(
                        k - (2 ** b - 2), k),
                    "values below half the smallest level become 0 (one of the 2^bits codes "
                    "is zero); you rounded them up to the smallest power of two."),
        "linear": (_pow2_linear,
                   "round in the log domain, k = round(log2 x): between 2^k and 2^(k+1) the "
                   "cut is at 2^(k+0.5), not at the midpoint 1.5 · 2^k."),
        "too_many": (lambda x, b, k: torch.where(
                         x >= 2.0 ** (k - 2 ** b), 2.0 ** torch.round(torch.log2(
                             x.clamp(min=1e-30))).clamp(k - (2 ** b - 1), k), torch.zeros_like(x)),
                     "b bits give 2^b codes, and one is zero: 2^b - 1 exponents, "
                     "kmin = kmax - 2^b + 2."),
        "floor": (lambda x, b, k: torch.where(
                      x >= 2.0 ** (k - 2 ** b + 1),
                      2.0 ** torch.floor(torch.log2(x.clamp(min=1e-30))).clamp(k - 2 ** b + 2, k),
                      torch.zeros_like(x)),
                  "round to the nearest exponent, not down (floor)."),
    },
)


def check_pow2_activation(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``pow2_activation(x, bits, kmax)`` quantizes non-negative activations to
    ``0`` or ``2^k`` with ``bits`` bits: one code for zero and ``2^bits - 1`` exponents
    ``k in [kmin, kmax]``, ``kmin = kmax - 2^bits + 2``; ``k = round(log2 x)`` clamped to
    that range, and 0 for ``x < 2^(kmin - 1)`` (half the smallest level).
    """
    return check(POW2_ACTIVATION, fn, verbose)
