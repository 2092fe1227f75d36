"""The interface every quantization method implements, and the helpers they share.

A method is a ``torch.nn.utils.parametrize`` module: ``forward(latent) -> quantized
weight``. The rest of ttqlab (``convert``, ``stats``, ``train``, ``export``) only talks
to this interface, so a method lives in one file (``ttqlab/methods/<name>.py``):

* ``method``, ``OPTIONS``: its name and the options ``ttqlab.quantize`` accepts;
* ``build(weight, **options)``: the module for one layer;
* ``codes(w)`` (int8) and ``scales(w)`` (tensors), and the static ``dequantize(codes,
  scales)`` that rebuilds the weight from them bit for bit;
* ``stats_row(w)`` (the scale columns of ``ttqlab.fit``'s per-layer history) and
  ``scales_text(w)`` (the "scales" column of ``ttqlab.layer_report``);
* packing: ``bits``, ``scheme(bits, packing)`` (which ``ttqlab.packing`` scheme stores the
  codes), ``scale_names`` and ``n_scales(options, shape)`` (the float scales a file holds)
  and ``scales_from_file(values, options, shape)``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

__all__ = ["WeightQuantizer", "ste"]


# --------------------------------------------------------------------------- checks


def _check_finite(w: Tensor, name: str = "w") -> None:
    if not isinstance(w, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}; "
                        f"pass torch.as_tensor(...) instead")
    if not w.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {w.dtype}; "
                        f"pass {name}.float()")
    if w.numel() and not bool(torch.isfinite(w).all()):
        raise ValueError(f"{name} contains NaN or inf; quantizing it would give a NaN scale. "
                         f"Check the training run that produced these weights.")


def _check_unit_interval(value: float, name: str) -> None:
    if not (0.0 < float(value) < 1.0):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}; "
                         f"the papers use {name}=0.05 (TTQ t) or 0.5 (target sparsity)")


def _per_channel_view(w: Tensor) -> Tensor:
    """Rows = output channels (dim 0 of Conv*d and Linear weights)."""
    return w.reshape(w.shape[0], -1) if w.dim() > 1 else w.reshape(1, -1)


def _broadcast(v: Tensor, w: Tensor) -> Tensor:
    """Shape a per-channel vector so that it broadcasts against ``w``."""
    return v.reshape(-1, *([1] * (w.dim() - 1))) if w.dim() > 1 else v


# --------------------------------------------------------------------------- STE


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, q):
        return q

    @staticmethod
    def backward(ctx, g):
        return g, None


def ste(w: Tensor, q: Tensor) -> Tensor:
    """Straight-through estimator: forward ``q`` exactly, backward ``dL/dw = dL/dq``.

    This is the rule of BinaryConnect and TWN: "the gradient is applied unchanged to a
    full-precision latent copy". (The popular one-liner ``w + (q - w).detach()`` has the
    same gradient but its forward value is ``q`` only up to float round-off, so the
    "ternary" weights would not be exactly ternary.)
    """
    return _StraightThrough.apply(w, q.detach())


# --------------------------------------------------------------------------- interface


class WeightQuantizer(nn.Module):
    """Base class: ``forward(latent) -> quantized weight`` plus the code/scale view."""

    #: the name ``ttqlab.quantize(model, method)`` takes
    method: ClassVar[str] = ""
    #: the keyword options ``ttqlab.quantize`` accepts for this method
    OPTIONS: ClassVar[tuple[str, ...]] = ()
    #: the float scales a packed file stores, in order (see ``n_scales``)
    scale_names: ClassVar[tuple[str, ...]] = ()
    #: bits per weight in ttqlab's simple packing (2-bit codes for ternary)
    bits: int = 32

    @classmethod
    def build(cls, weight: Tensor, **options) -> WeightQuantizer:
        """The quantizer for one layer whose float weight is ``weight``."""
        return cls(**options)

    def codes(self, w: Tensor) -> Tensor:
        """Integer codes (int8) of the quantized weight computed from latent ``w``."""
        raise NotImplementedError

    def scales(self, w: Tensor) -> dict[str, Tensor]:
        """Float (or integer) scalars that, with the codes, give the quantized weight."""
        raise NotImplementedError

    @staticmethod
    def dequantize(codes: Tensor, scales: dict[str, Tensor]) -> Tensor:
        """Quantized weight from codes and scales; equals ``forward`` bit for bit."""
        raise NotImplementedError

    def options(self) -> dict:
        """The constructor options, for reports and for rebuilding the layer."""
        return {}

    # ---- reports and training history

    def stats_row(self, w: Tensor) -> dict[str, float]:
        """Scale columns for ``ttqlab.fit``'s per-layer history (floats). Default: the
        mean of each scale (``alpha`` of a per-channel layer is averaged)."""
        return {k: float(v.float().mean()) for k, v in self.scales(w).items()
                if v.is_floating_point()}

    def scales_text(self, w: Tensor) -> str:
        """The "scales" column of ``ttqlab.layer_report``."""
        parts = []
        for k, v in self.scales(w).items():
            text = f"{k}={float(v.float().mean()):.4g}"
            parts.append(text + (" (per channel)" if v.numel() > 1 else ""))
        return " ".join(parts)

    def history_codes(self, w: Tensor) -> Tensor | None:
        """Codes to count flips between epochs, or None where they do not exist yet."""
        return self.codes(w)

    @classmethod
    def ops(cls, n: int, nonzero: int, outs: int, positions: int) -> dict[str, int]:
        """Arithmetic of one inference of a layer with ``n`` weights (``nonzero`` of them
        non-zero) and ``outs`` output channels at ``positions`` output positions, for
        ``ttqlab.stats.op_counts``: ``{"mults", "adds", "shifts"}``. Default: a float
        layer, one multiply and one add per weight per position."""
        return {"mults": n * positions, "adds": n * positions, "shifts": 0}

    # ---- packing (``ttqlab.export``, ``ttqlab.stats.packed_nbytes``)

    @classmethod
    def scheme(cls, bits: int, packing: str) -> tuple[str, int | None]:
        """The ``ttqlab.packing`` scheme (and its bits) storing this method's codes;
        ``packing`` is the file's ternary packing ("2bit" or "base3")."""
        raise NotImplementedError

    @classmethod
    def n_scales(cls, options: dict, shape: list[int]) -> int:
        """How many float scales a packed file stores for one layer."""
        return len(cls.scale_names)

    @classmethod
    def scales_from_file(cls, values: Tensor, options: dict, shape: list[int]) -> dict:
        """The ``scales`` dict of :meth:`dequantize` from the floats a file stores."""
        return {k: values[j].clone() for j, k in enumerate(cls.scale_names)}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options().items())
