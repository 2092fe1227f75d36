"""Notebook 4 (sparsity): the threshold for a target sparsity and its catalogue of typical
mistakes."""

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
    check,
    fmt,
    one_number,
)
from ._cases import _randn, _t


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
