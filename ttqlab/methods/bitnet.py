"""BitNet b1.58 (Ma et al. 2024, arXiv 2402.17764) as a ttqlab method, ``"bitnet"``.

Absmean ternarization per weight matrix, TWN's descendant in ternary LLMs:

    gamma = E|W|,   W~ = RoundClip(W / (gamma + eps), -1, 1),   W_q = gamma * W~

and the straight-through gradient ``dL/dW = dL/dW_q`` to the latent float weight. The
codes are ternary, so ``ttqlab.export`` packs them like TWN's (base 3: 1.6 bits per
weight, or 2 bits); the one float scale per layer is ``gamma``.

BitNet's other half, 8-bit absmax activations per token, is ``ttqlab.activations``
(``ttqlab.quantize(model, "bitnet", act_bits=8)``).

Written against ``ttqlab.layers.WeightQuantizer`` (forward, codes, scales, dequantize,
options); ``NAME``, ``OPTIONS`` and ``build`` are what a method registry needs.
"""

from __future__ import annotations

from torch import Tensor

from .. import quantizers as Q
from ..layers import WeightQuantizer

__all__ = ["NAME", "OPTIONS", "BitNetWeight", "build"]

#: the method's name in ``ttqlab.quantize(model, NAME)``
NAME = "bitnet"
#: the options ``quantize`` accepts for it
OPTIONS: tuple[str, ...] = ("eps",)


class BitNetWeight(WeightQuantizer):
    """``gamma * RoundClip(W / (gamma + eps), -1, 1)``, ``gamma = E|W|``, with the
    straight-through gradient (``ttqlab.quantizers.ternarize_absmean``)."""

    method = NAME
    bits = 2

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        Q._check_eps(eps)
        self.eps = float(eps)

    def options(self) -> dict:
        return {"eps": self.eps}

    def forward(self, w: Tensor) -> Tensor:
        codes, gamma = Q.absmean_codes(w.detach(), self.eps)
        return Q.ste(w, codes.to(w.dtype).mul_(gamma))

    def codes(self, w: Tensor) -> Tensor:
        return Q.absmean_codes(w.detach(), self.eps)[0]

    def scales(self, w: Tensor) -> dict[str, Tensor]:
        return {"gamma": Q.absmean_codes(w.detach(), self.eps)[1]}

    @staticmethod
    def dequantize(codes: Tensor, scales: dict[str, Tensor]) -> Tensor:
        gamma = scales["gamma"]
        return codes.to(gamma.dtype).mul_(gamma)


def build(weight: Tensor, **options) -> BitNetWeight:
    """The quantizer for one weight (``weight`` is unused: absmean has no state)."""
    return BitNetWeight(**options)
