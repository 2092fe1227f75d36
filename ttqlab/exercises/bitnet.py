"""Notebook 8 (beyond CNNs): BitNet b1.58's absmean rule and its catalogue of typical
mistakes."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import quantizers as Q
from ..checking import Case, Exercise, check, judge_tensor
from ._cases import _randn, _t


def _absmean_cases() -> list[Case]:
    return [
        Case("a small vector", (_t([0.9, -0.2, 0.05, -1.3, 0.4, 0.0]),)),
        Case("ties: W / gamma = 0.5, 1.5 and 2.5 (eps=0)",
             (_t([0.5, -0.5, 1.5, -1.5, 0.5, 2.5, -0.5, 0.5]),), {"eps": 0.0}),
        Case("all zeros", (torch.zeros(3, 4),)),
        Case("a single element", (_t([-0.7]),)),
        Case("a conv weight (4-D): one gamma for the whole tensor",
             (_randn(81, 8, 4, 3, 3, scale=0.1),)),
        Case("random weights", (_randn(82, 64, 32, scale=0.05),)),
    ]


def _gamma(w: Tensor) -> Tensor:
    return w.abs().mean() if w.numel() else w.new_zeros(())


def _round_half_up(w: Tensor, eps: float = 1e-5) -> Tensor:
    g = _gamma(w)
    x = w / (g + eps)
    return (torch.sign(x) * torch.floor(x.abs() + 0.5)).clamp(-1, 1) * g


def _per_channel(w: Tensor, eps: float = 1e-5) -> Tensor:
    if w.dim() < 2:
        return Q.ternarize_absmean(w, eps)
    g = w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)
    return torch.round(w / (g + eps)).clamp(-1, 1) * g


ABSMEAN = Exercise(
    name="ternarize_absmean",
    signature="ternarize_absmean(w, eps=1e-5)",
    cases=_absmean_cases,
    reference=lambda w, eps=1e-5: Q.ternarize_absmean(w, eps),
    judge=judge_tensor(),
    mistakes={
        "half_up": (_round_half_up,
                    "W / (γ + ε) exactly 0.5 must give 0: torch.round rounds half to even "
                    "(0.5 → 0, 1.5 → 2, 2.5 → 2); rounding half away from zero keeps it."),
        "no_clip": (lambda w, eps=1e-5: torch.round(w / (_gamma(w) + eps)) * _gamma(w),
                    "RoundClip clips to [−1, 1]: a weight above 1.5 γ rounds to 2 and must "
                    "become +1 (.clamp(-1, 1))."),
        "no_scale": (lambda w, eps=1e-5: torch.round(w / (_gamma(w) + eps)).clamp(-1, 1),
                     "return γ · W~, the weight the layer computes with, not the codes W~ "
                     "alone."),
        "max_scale": (lambda w, eps=1e-5: torch.round(w / (w.abs().max() + eps)).clamp(-1, 1)
                      * w.abs().max() if w.numel() else w.clone(),
                      "γ = E|W| is the mean magnitude (absmean), not the maximum (absmax is "
                      "BitNet's rule for activations)."),
        "per_channel": (_per_channel,
                        "one γ for the whole weight tensor (BitNet: per weight matrix), not "
                        "one per output channel."),
        "twn": (lambda w, eps=1e-5: Q.ternarize_twn(w) if w.numel() else w.clone(),
                "that is TWN (threshold 0.7 E|W|, α = mean of the kept |W|); absmean "
                "rounds W / (γ + ε), i.e. threshold 0.5 γ, and scales by γ = E|W| itself."),
    },
)


def check_ternarize_absmean(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``ternarize_absmean(w, eps=1e-5)`` returns BitNet b1.58's absmean ternary weight

        γ = E|W|,   W~ = RoundClip(W / (γ + ε), −1, 1),   result γ · W~

    with ``RoundClip(x, a, b) = max(a, min(b, round(x)))`` and ``torch.round`` (ties to
    even), one γ for the whole tensor (same shape as ``w``; all zeros stay zero).
    """
    return check(ABSMEAN, fn, verbose)
