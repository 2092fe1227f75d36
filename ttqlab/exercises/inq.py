"""Notebook 5 (INQ): the power-of-two levels and the partition, each with its catalogue of
typical mistakes."""

from __future__ import annotations

import math
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
    shape_of,
)
from ..inq import INQ
from ._cases import _randn, _t


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
