"""Reasoning exercises: the student predicts a number before seeing it, and the check
compares (notebooks 1 and 5). The expected values are measured or found numerically here,
never stored as constants, so they cannot drift from ttqlab's rules.

* ``check_inq_sparsity(answer, w=None, bits=2)``: the fraction of a layer's weights that
  INQ's ``bits``-bit power-of-two quantizer sets to zero (Zhou et al., Eq. 2-4).
* ``check_laplace_threshold(answer)``: TWN's optimal threshold Δ* for Laplace-distributed
  weights, in units of E|W| (Li et al., Eq. 7 with a Laplace density).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .. import quantizers as Q
from ..checking import check_number


def inq_sparsity_layer(seed: int = 0) -> Tensor:
    """The layer the INQ prediction is about by default: a 64 x 32 linear weight with
    Gaussian entries (std 0.05), like a trained fully-connected layer."""
    return torch.randn(64, 32, generator=torch.Generator().manual_seed(seed)) * 0.05


def _inq_sparsity(w: Tensor, bits: int) -> float:
    return float((Q.quantize_pow2(w, bits) == 0).double().mean())


def check_inq_sparsity(answer: Any, w: Tensor | None = None, *, bits: int = 2,
                       tol: float = 0.02, verbose: bool = True) -> bool:
    """Task: predict the fraction (0..1) of ``w``'s weights that become 0 when INQ
    quantizes the whole layer to ``bits`` bits (default: ``inq_sparsity_layer()``).

    INQ's levels are {±2^n1, ..., ±2^n2, 0} with n1 = floor(log2(4 s / 3)), s = max|W|,
    and n2 = n1 + 1 − 2^(b−1)/2; a weight rounds to the nearest level, and to 0 below half
    the smallest magnitude 2^n2. At b = 2 the only magnitude is 2^n1, so every |W| below
    2^(n1−1) becomes 0.
    """
    w = inq_sparsity_layer() if w is None else w.detach().float().cpu()
    expected = _inq_sparsity(w, bits)
    a = w.abs()
    mistakes = {
        "none": (0.0, "INQ at 2 bits has one magnitude, 2^n1, and zero: every |W| below "
                      "2^(n1−1) (half of 2^n1) becomes 0, and that is most of a Gaussian "
                      "layer."),
        "twn": (float((a <= 0.7 * a.mean()).double().mean()),
                "that is the fraction below TWN's threshold 0.7·E|W|; INQ's cut-off is "
                "2^(n1−1), half of its one level 2^n1 = 2^floor(log2(4 max|W| / 3))."),
        "half_max": (float((a < a.max() / 2).double().mean()),
                     "the cut-off is not max|W| / 2 but 2^(n1−1) with "
                     "n1 = floor(log2(4 max|W| / 3)): a power of two between max|W|/3 and "
                     "2 max|W|/3."),
        "nonzero": (1.0 - expected, "you gave the fraction that stays non-zero; the "
                                    "question asks for the zeros (the sparsity)."),
    }
    return check_number(f"check_inq_sparsity ({bits}-bit)", answer, expected, tol=tol,
                        low=0.0, high=1.0, what="a fraction between 0 and 1 (0.42, not 42)",
                        mistakes=mistakes, verbose=verbose)


def _optimal_threshold_ratio(abs_cdf_tail, abs_tail_mass, mean_abs: float) -> float:
    """argmax_Δ (E[|W|; |W| > Δ])² / P(|W| > Δ), in units of E|W| (TWN's Eq. 7 for a
    continuous distribution), by a grid search refined twice."""
    lo, hi = 0.0, 6.0 * mean_abs
    for _ in range(3):
        grid = torch.linspace(lo, hi, 4001, dtype=torch.float64)
        score = abs_tail_mass(grid) ** 2 / abs_cdf_tail(grid)
        i = int(torch.argmax(score))
        step = float(grid[1] - grid[0])
        lo, hi = max(0.0, float(grid[i]) - step), float(grid[i]) + step
    return (lo + hi) / 2 / mean_abs


def laplace_optimal_ratio() -> float:
    """Δ* / E|W| for Laplace weights (scale b = 1, so E|W| = 1): P(|W| > Δ) = e^(−Δ),
    E[|W|; |W| > Δ] = (Δ + 1) e^(−Δ)."""
    return _optimal_threshold_ratio(lambda d: torch.exp(-d), lambda d: (d + 1) * torch.exp(-d),
                                    1.0)


def _gaussian_optimal_ratio() -> float:
    """Δ* / E|W| for Gaussian weights (σ = 1, E|W| = √(2/π))."""
    def tail(d):
        return torch.special.erfc(d / math.sqrt(2))

    def mass(d):
        return 2 * torch.exp(-d * d / 2) / math.sqrt(2 * math.pi)

    return _optimal_threshold_ratio(tail, mass, math.sqrt(2 / math.pi))


def check_laplace_threshold(answer: Any, *, tol: float = 0.02, verbose: bool = True) -> bool:
    """Task: for weights with a Laplace density p(w) = e^(−|w|/b) / 2b, derive TWN's
    optimal threshold Δ* = argmax_Δ (E[|W|; |W| > Δ])² / P(|W| > Δ) and give Δ* / E|W|.
    """
    expected = laplace_optimal_ratio()
    mistakes = {
        "twn_rule": (0.7, "0.7 is TWN's rule of thumb (between the uniform and Gaussian "
                          "optima); for Laplace weights write P(|W| > Δ) = e^(−Δ/b) and "
                          "E[|W|; |W| > Δ] = (Δ + b) e^(−Δ/b), then maximise."),
        "gaussian": (_gaussian_optimal_ratio(),
                     "that is the optimum for Gaussian weights; Laplace weights have heavier "
                     "tails: redo it with P(|W| > Δ) = e^(−Δ/b)."),
        "median": (math.log(2), "ln 2 is the median of |W| / E|W|, not the optimal "
                                "threshold: maximise (Δ + b)² e^(−Δ/b) over Δ."),
    }
    return check_number("check_laplace_threshold", answer, expected, tol=tol, low=0.0,
                        what="a positive number, Δ* divided by E|W|", mistakes=mistakes,
                        verbose=verbose)
