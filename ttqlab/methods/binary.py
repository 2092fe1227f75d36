"""Binary weights: BinaryConnect (Courbariaux et al. 2015) and BWN / XNOR-Net (Rastegari
et al. 2016), the 1-bit baselines the ternary papers compare against.

    w_b = alpha * sign(w),   alpha = E|w|  (one per layer, or one per output channel)

trained with the straight-through gradient ``dL/dw = dL/dw_b``. The three choices of
alpha (``scale=``):

* ``"layer"`` (ttqlab's default): one ``alpha = E|W|`` for the whole layer.
* ``"channel"``: one ``alpha = E|W_c|`` per output channel: BWN ("Binary-Weight-Networks")
  of XNOR-Net, the binary row of TTQ's and INQ's ImageNet comparisons.
* ``"none"``: ``alpha = 1``, the unscaled sign of BinaryConnect: the "BPWN" / binary
  counterpart in TWN's tables (the TWN authors' binary baseline has no trained scale).

The sign is the float's sign bit, so 0.0 gives +alpha (and -0.0 gives -alpha): every
weight is +-alpha.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import register
from .base import Option, WeightQuantizer, _broadcast, _check_finite, _per_channel_view, ste

__all__ = ["BINARY_SCALES", "BinaryWeight", "binarize", "ste_sign"]

#: the choices of ``scale=``
BINARY_SCALES = ("layer", "channel", "none")


def _check_scale(scale: str) -> None:
    if scale not in BINARY_SCALES:
        raise ValueError(f"scale must be 'layer' (one E|W| per layer), 'channel' (one per "
                         f"output channel, BWN / XNOR-Net) or 'none' (BinaryConnect's "
                         f"unscaled sign), got {scale!r}")


def _alpha(w: Tensor, scale: str) -> Tensor:
    """alpha = E|W| (layer), E|W_c| per output channel (channel, shaped to broadcast), 1."""
    if scale == "none":
        return w.new_ones(())
    if not w.numel():
        return w.new_zeros(())
    if scale == "channel":
        return _broadcast(_per_channel_view(w.abs()).mean(dim=1), w)
    return w.abs().mean()


def _binarize(w: Tensor, scale: str = "layer") -> Tensor:
    return torch.copysign(_alpha(w, scale), w)


def binarize(w: Tensor, scale: str = "layer") -> Tensor:
    """``alpha * sign(w)`` with alpha = E|w| (``scale="layer"``), E|w| per output channel
    (``"channel"``, BWN) or 1 (``"none"``, BinaryConnect). An all-zero tensor stays zero
    (except with ``"none"``, where it becomes all +1).
    """
    _check_finite(w)
    _check_scale(scale)
    return _binarize(w.detach(), scale)


def ste_sign(w: Tensor, scale: str = "layer") -> Tensor:
    """:func:`binarize` with the straight-through gradient ``dL/dw = dL/dw_b`` everywhere.

    Named after Larq's ``larq.quantizers.ste_sign``, but not the same function: Larq's
    returns the unscaled ``sign(w)`` (``+-1``, i.e. ``scale="none"`` here) and its
    gradient is clipped, ``dL/dw = dL/dw_b * [|w| <= 1]`` (``clip_value=1``); this one
    scales by E|w| by default and passes the gradient unchanged for every w (the
    BinaryConnect / TWN rule). Both map 0.0 to +1.
    """
    return ste(w, binarize(w, scale))


@register
class BinaryWeight(WeightQuantizer):
    """``w_b = alpha * sign(w)`` with the straight-through gradient; alpha per ``scale``
    (see the module docstring: layer, channel = BWN, none = BinaryConnect)."""

    method = "binary"
    OPTIONS_SPEC = (Option("scale", "layer", "binary alpha: one E|W| per 'layer', per output "
                           "'channel' (BWN) or 'none' (BinaryConnect)", _check_scale, str,
                           BINARY_SCALES),)
    scale_names = ("alpha",)
    bits = 1
    tag, color, order, finetune_lr = "binary", "#9467bd", 10, 3e-2

    def __init__(self, scale: str = "layer"):
        super().__init__()
        self.check_options(scale=scale)
        self.scale = scale

    def options(self) -> dict:
        return {"scale": self.scale}

    def forward(self, w: Tensor) -> Tensor:
        return ste(w, _binarize(w.detach(), self.scale))

    def codes(self, w: Tensor) -> Tensor:
        """+1 / -1 from the sign bit (0.0 -> +1, -0.0 -> -1), as ``binarize``."""
        return 1 - 2 * torch.signbit(w.detach()).to(torch.int8)

    def scales(self, w: Tensor) -> dict[str, Tensor]:
        w = w.detach()
        return {"alpha": _alpha(w, self.scale).to(w.dtype)}

    @staticmethod
    def dequantize(codes: Tensor, scales: dict[str, Tensor]) -> Tensor:
        return torch.copysign(scales["alpha"], codes.to(scales["alpha"].dtype))

    @classmethod
    def scheme(cls, bits: int, packing: str) -> tuple[str, int | None]:
        return "binary", None

    @classmethod
    def ops(cls, n: int, nonzero: int, outs: int, positions: int) -> dict[str, int]:
        """Every weight adds or subtracts an input, then one multiply by alpha per output."""
        return {"mults": outs * positions, "adds": n * positions + outs * positions,
                "shifts": 0}

    @classmethod
    def n_scales(cls, options: dict, shape: list[int]) -> int:
        return shape[0] if options.get("scale") == "channel" else 1

    @classmethod
    def scales_from_file(cls, values: Tensor, options: dict, shape: list[int]) -> dict:
        if options.get("scale") == "channel":
            return {"alpha": values.clone().reshape(-1, *[1] * (len(shape) - 1))}
        return {"alpha": values[0].clone()}
