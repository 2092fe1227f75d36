"""BitNet b1.58 (Ma et al. 2024, arXiv 2402.17764) as a ttqlab method, ``"bitnet"``.

Absmean ternarization per weight matrix, TWN's descendant in ternary LLMs:

    gamma = E|W|,   W~ = RoundClip(W / (gamma + eps), -1, 1),   W_q = gamma * W~

with ``RoundClip(x, a, b) = max(a, min(b, round(x)))`` and the straight-through gradient
``dL/dW = dL/dW_q`` to the latent float weight. The codes are ternary, so
``ttqlab.export`` packs them like TWN's (base 3: 1.6 bits per weight, or 2 bits); the
one float scale per layer is ``gamma``.

BitNet's other half, 8-bit absmax activations per token, is ``ttqlab.activations``
(``ttqlab.quantize(model, "bitnet", act_bits=8)``).

The pure rule (:func:`absmean_codes`, :func:`ternarize_absmean`, :func:`ste_absmean`;
re-exported by ``ttqlab.quantizers``) and the parametrization (:class:`BitNetWeight`)
live here, one file per method.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..validation import is_number
from . import register
from .base import Option, WeightQuantizer, _check_finite, ste

__all__ = ["BitNetWeight", "absmean_codes", "ste_absmean", "ternarize_absmean"]


# --------------------------------------------------------------------------- the rule


def _check_eps(eps: float) -> None:
    if not is_number(eps) or not 0 <= eps < 1:
        raise ValueError(f"eps must be a small non-negative number (BitNet uses 1e-5), "
                         f"got {eps!r}")


def absmean_codes(w: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """BitNet b1.58's absmean rule as ``(codes, gamma)``: ``gamma = E|W|`` (one scalar
    per weight matrix) and ``codes = RoundClip(W / (gamma + eps), -1, 1)`` (int8, in
    {-1, 0, +1}), with ``RoundClip(x, a, b) = max(a, min(b, round(x)))``.

    ``round`` is ``torch.round``: ties go to the even integer, so ``W / (gamma + eps)``
    exactly 0.5 gives 0 and exactly 1.5 gives 2, clipped to 1. The effective threshold is
    ``0.5 * (gamma + eps)`` (TWN: ``0.7 * E|W|``).
    """
    _check_finite(w)
    _check_eps(eps)
    codes, gamma = _absmean(w.detach(), eps)
    return codes.to(torch.int8), gamma


def _absmean(w: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """:func:`absmean_codes` without the input checks, codes in ``w``'s dtype: the
    training step's path (a NaN check there would be a host synchronisation on a GPU and
    a graph break under ``torch.compile``; a NaN weight shows up in the loss instead)."""
    gamma = w.abs().mean() if w.numel() else w.new_zeros(())
    return torch.round(w / (gamma + eps)).clamp_(-1, 1), gamma


def ternarize_absmean(w: Tensor, eps: float = 1e-5) -> Tensor:
    """BitNet b1.58: ``gamma * RoundClip(W / (gamma + eps), -1, 1)`` with ``gamma = E|W|``
    (see :func:`absmean_codes`). Like ``ternarize_twn`` it returns the quantized weight
    itself; forward only, use :func:`ste_absmean` (or ``ttqlab.quantize(model,
    "bitnet")``) to train.

    Lineage: TWN keeps ``|W| > 0.7 E|W|`` and scales by the mean of the kept ``|W|``;
    absmean keeps ``|W| > 0.5 (E|W| + eps)`` and scales by ``E|W|`` itself.
    """
    codes, gamma = absmean_codes(w, eps)
    return codes.to(w.dtype).mul_(gamma)


def ste_absmean(w: Tensor, eps: float = 1e-5) -> Tensor:
    """:func:`ternarize_absmean` with the straight-through gradient ``dL/dW = dL/dW_q``
    (BitNet trains its latent weights this way)."""
    return ste(w, ternarize_absmean(w, eps))


# --------------------------------------------------------------------------- the method


@register
class BitNetWeight(WeightQuantizer):
    """``gamma * RoundClip(W / (gamma + eps), -1, 1)``, ``gamma = E|W|``, with the
    straight-through gradient (:func:`ternarize_absmean`)."""

    method = "bitnet"
    # eps stays off the command line: ``--eps`` beside ``--epochs`` invites typos
    OPTIONS_SPEC = (Option("eps", 1e-5, "BitNet's eps in W / (gamma + eps)", _check_eps,
                           cli=False),)
    scale_names = ("gamma",)
    bits = 2
    tag, color, order, finetune_lr = "BitNet", "#8c564b", 50, 3e-2

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.check_options(eps=eps)
        self.eps = float(eps)

    def options(self) -> dict:
        return {"eps": self.eps}

    def forward(self, w: Tensor) -> Tensor:
        codes, gamma = _absmean(w.detach(), self.eps)
        return ste(w, codes.mul_(gamma))

    def codes(self, w: Tensor) -> Tensor:
        return absmean_codes(w.detach(), self.eps)[0]

    def scales(self, w: Tensor) -> dict[str, Tensor]:
        return {"gamma": absmean_codes(w.detach(), self.eps)[1]}

    @staticmethod
    def dequantize(codes: Tensor, scales: dict[str, Tensor]) -> Tensor:
        gamma = scales["gamma"]
        return codes.to(gamma.dtype).mul_(gamma)

    # the packing / op-count interface of the methods registry (ttqlab/methods/base.py)

    @classmethod
    def scheme(cls, bits: int, packing: str) -> tuple[str, int | None]:
        return packing, None  # ternary codes: the file's "base3" or "2bit"

    @classmethod
    def ops(cls, n: int, nonzero: int, outs: int, positions: int) -> dict[str, int]:
        """``gamma * (S+ - S-)``: an add per non-zero weight, a subtraction and one
        multiply per output (as TWN)."""
        return {"mults": outs * positions, "adds": nonzero * positions + outs * positions,
                "shifts": 0}
