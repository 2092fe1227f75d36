"""Incremental Network Quantization (Zhou, Yao, Guo, Xu & Chen 2017): the levels, the
rounding and the parametrization that freezes quantized weights.

    P_l = {+-2^n1, ..., +-2^n2, 0},  n1 = floor(log2(4 s / 3)), s = max|W|   (Eq. 2-3)
                                    n2 = n1 + 1 - 2^(b-1) / 2
    W -> beta sgn(W)  if (alpha + beta) / 2 <= |W| < 3 beta / 2 (alpha < beta adjacent
         levels), else 0                                                       (Eq. 4)

Magnitudes above 2^n1 (possible after re-training, since n1 is fixed at the first freeze)
saturate at 2^n1. Which weights are frozen when (the partition and the accumulated
fractions) is ``ttqlab.inq.INQ``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..validation import is_int
from . import kernels, register
from .base import Option, Variant, WeightQuantizer, _check_finite

__all__ = ["INQWeight", "inq_exponent_range", "pow2_exponents", "pow2_from_codes",
           "pow2_levels", "quantize_pow2"]


def _check_bits(bits: int) -> None:
    if not is_int(bits) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer from 2 to 8 (2 = ternary, 5 = the INQ "
                         f"paper's default), got {bits!r}")


def _exponent_of_nearest_pow2(a: Tensor) -> Tensor:
    """For a > 0, the n for which 2^n is the nearest power of two, ties going up.

    2^n is nearest exactly when ``0.75 * 2^n <= a < 1.5 * 2^n``. Writing a = m * 2^e
    with m in [0.5, 1) (``frexp``, exact in floating point), that is n = e if m >= 0.75
    else e - 1. No logarithm, so no rounding error at the boundaries.
    """
    m, e = torch.frexp(a)
    return torch.where(m >= 0.75, e, e - 1)


def lowest_exponent(n1: int, bits: int) -> int:
    """INQ's smallest exponent (Zhou et al., Eq. 3): ``n2 = n1 + 1 - 2^(b-1) / 2``, so that
    ``b`` bits hold zero and ``2^(b-1) / 2`` magnitudes of either sign."""
    return n1 + 1 - 2 ** (bits - 1) // 2


def inq_exponent_range(w: Tensor, bits: int = 5) -> tuple[int, int]:
    """INQ's exponents (Zhou et al., Eq. 2-3): ``n1 = floor(log2(4 s / 3))``, s = max|W|,
    and ``n2 = n1 + 1 - 2^(b-1) / 2``. Returns ``(n1, n2)`` with n2 <= n1.

    ``floor(log2(4s/3))`` is the largest n with ``0.75 * 2^n <= s``, computed exactly.
    """
    _check_bits(bits)
    _check_finite(w)
    s = w.detach().abs().max() if w.numel() else w.new_zeros(())
    if float(s) == 0.0:
        raise ValueError("cannot choose power-of-two levels for an all-zero weight tensor "
                         "(max|W| = 0); train or initialise the layer first")
    # in the weight's own dtype: casting float64 to float32 first can round s up across
    # a 0.75 * 2^k boundary and give n1 one too large
    n1 = int(_exponent_of_nearest_pow2(s.reshape(1)).item())
    return n1, lowest_exponent(n1, bits)


def pow2_levels(w: Tensor, bits: int = 5, n1: int | None = None) -> Tensor:
    """INQ's level set ``P_l = {+-2^n1, ..., +-2^n2, 0}`` as a sorted 1-D tensor.

    n1 is computed from ``max|W|`` (:func:`inq_exponent_range`) unless given.
    b = 5 gives 8 exponents, 16 non-zero levels and zero; b = 2 gives {-2^n1, 0, 2^n1}.
    """
    _check_bits(bits)
    if n1 is None:
        n1, n2 = inq_exponent_range(w, bits)
    else:
        n2 = lowest_exponent(n1, bits)
    mags = [2.0**n for n in range(n2, n1 + 1)]
    levels = sorted([-m for m in mags] + [0.0] + mags)
    return torch.tensor(levels, dtype=w.dtype, device=w.device)


def pow2_exponents(w: Tensor, bits: int = 5, n1: int | None = None) -> Tensor:
    """Signed level index of every weight under INQ's rounding: 0 for zero, else
    ``sign(W) * (n - n2 + 1)`` where ``2^n`` is the chosen magnitude (int8).

    Used by :func:`quantize_pow2` and by ``ttqlab.extract`` to store INQ codes.
    """
    _check_bits(bits)
    _check_finite(w)
    if n1 is None:
        n1, n2 = inq_exponent_range(w, bits)
    else:
        n2 = lowest_exponent(n1, bits)
    a = w.detach().abs()
    n = _exponent_of_nearest_pow2(a).clamp(min=n2, max=n1)
    index = (n - n2 + 1).to(torch.int8)
    # Below (0 + 2^n2) / 2 = 2^(n2 - 1) the nearest level is 0 (ties go up, to 2^n2).
    index = torch.where(a >= math.ldexp(1.0, n2 - 1), index, torch.zeros_like(index))
    return torch.where(w.detach() < 0, -index, index)


def quantize_pow2(w: Tensor, bits: int = 5, n1: int | None = None) -> Tensor:
    """INQ rounding (Zhou et al., Eq. 4): with alpha < beta adjacent levels, W becomes
    ``beta * sgn(W)`` if ``(alpha + beta) / 2 <= |W| < 3 beta / 2``, else 0.

    For powers of two this is rounding |W| to the nearest level of
    :func:`pow2_levels` (ties go up), and everything below ``2^(n2-1)`` becomes 0.
    Magnitudes above 2^n1 (possible only when n1 is given) saturate at 2^n1.
    """
    codes = pow2_exponents(w, bits, n1)
    if n1 is None:
        n1, _ = inq_exponent_range(w, bits)
    return pow2_from_codes(codes, bits, n1).to(w.dtype)


def pow2_from_codes(codes: Tensor, bits: int, n1: int) -> Tensor:
    """Inverse of :func:`pow2_exponents`: ``sign(c) * 2^(n2 + |c| - 1)``, 0 for c = 0."""
    n2 = lowest_exponent(n1, bits)
    c = codes.to(torch.int32)
    mag = torch.ldexp(torch.ones_like(c, dtype=torch.float32), (c.abs() + n2 - 1))
    return torch.where(c == 0, 0.0, torch.where(c > 0, mag, -mag))


@register
class INQWeight(WeightQuantizer):
    """INQ: ``W = frozen`` where the mask says frozen, the latent weight elsewhere.

    Buffers (saved in ``state_dict``): ``frozen_mask`` (bool, True = quantized and frozen,
    the paper's T = 0), ``frozen_values`` (the power-of-two values) and ``n1`` (the
    largest exponent, fixed at the first freeze from max|W| as in the paper). Frozen
    weights get no gradient, and whatever an optimizer (momentum, weight decay, Adam)
    does to the latent tensor there, ``layer.weight`` keeps reading ``frozen_values``.
    ``ttqlab.INQ`` decides which weights to freeze and when.

    The forward pass is ``W = frozen_values + w * free`` with ``free = 1 - frozen_mask``
    as floats (a cached, non-persistent buffer): exact (a product by 1 or 0 plus a 0),
    and several times faster on a CPU than ``torch.where(frozen_mask, frozen_values, w)``.
    """

    method = "inq"
    OPTIONS_SPEC = (Option("bits", 5, "INQ bit width b, 2 to 8 (5 in the paper; 2 is "
                           "ternary)", _check_bits, int, required=True),)
    tag, color, order, finetune_lr = "INQ", "#2ca02c", 40, 1e-3
    #: INQ rounds a trained model, step by step (``ttqlab.inq``'s schedule)
    needs_trained = True
    trainer = "ttqlab.inq:train_incremental"
    #: the ablation of the increments: everything quantized in one step
    VARIANTS = (Variant("inq-oneshot", "INQ (one step)", "#98df8a", 3e-3,
                        {"schedule": (1.0,)}),)

    def __init__(self, weight: Tensor, bits: int = 5):
        super().__init__()
        self.check_options(bits=bits)
        self.bits = int(bits)
        w = weight.detach()
        self.register_buffer("frozen_mask", torch.zeros_like(w, dtype=torch.bool))
        self.register_buffer("frozen_values", torch.zeros_like(w))
        self.register_buffer("n1", torch.tensor(0, dtype=torch.int64, device=w.device))
        self.register_buffer("free", torch.ones_like(w), persistent=False)

    def options(self) -> dict:
        return {"bits": self.bits}

    def _refresh_free(self) -> None:
        self.free.copy_(~self.frozen_mask)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._refresh_free()

    @property
    def n2(self) -> int:
        return lowest_exponent(int(self.n1), self.bits)

    @property
    def fraction_frozen(self) -> float:
        n = self.frozen_mask.numel()
        return float(self.frozen_mask.sum()) / n if n else 1.0

    def forward(self, w: Tensor) -> Tensor:
        """``where(frozen_mask, frozen_values, w)``, as ``kernels.inq`` computes it."""
        return kernels.inq(self.frozen_values, w, self.free)

    @torch.no_grad()
    def freeze(self, w: Tensor, new: Tensor) -> None:
        """Quantize the latent weights selected by ``new`` to powers of two and freeze
        them. The first call fixes n1 from max|W| (Zhou et al., Eq. 2)."""
        if not bool(self.frozen_mask.any()):
            n1, _ = inq_exponent_range(w, self.bits)
            self.n1.fill_(n1)
        new = new & ~self.frozen_mask
        q = quantize_pow2(w, self.bits, int(self.n1))
        self.frozen_values.copy_(torch.where(new, q, self.frozen_values))
        self.frozen_mask |= new
        self._refresh_free()

    def codes(self, w: Tensor) -> Tensor:
        if not bool(self.frozen_mask.all()):
            raise ValueError(f"INQ has frozen only {self.fraction_frozen:.1%} of this layer; "
                             f"call inq.step() until it returns 1.0 before extracting codes")
        return pow2_exponents(self.frozen_values, self.bits, int(self.n1))

    def scales(self, w: Tensor) -> dict[str, Tensor]:
        return {"n1": self.n1.detach().clone(), "bits": torch.tensor(self.bits)}

    @staticmethod
    def dequantize(codes: Tensor, scales: dict[str, Tensor]) -> Tensor:
        return pow2_from_codes(codes, int(scales["bits"]), int(scales["n1"]))

    @classmethod
    def build(cls, weight: Tensor, **options) -> INQWeight:
        return cls(weight, **options)

    def stats_row(self, w: Tensor) -> dict[str, float]:
        return {"frozen": self.fraction_frozen}

    def scales_text(self, w: Tensor) -> str:
        return f"n1={int(self.n1)} frozen={self.fraction_frozen:.3g}"

    def history_codes(self, w: Tensor) -> Tensor | None:
        return None  # codes exist only once every weight is frozen

    @classmethod
    def scheme(cls, bits: int, packing: str) -> tuple[str, int | None]:
        """b = 2 is ternary ({-2^n1, 0, 2^n1}) and packs like TWN; else sign + index."""
        return (packing, None) if bits == 2 else ("pow2", bits)

    # ---- the manifest: n1 per layer (the levels 2^n2 .. 2^n1 of float32 must exist)

    @classmethod
    def manifest_fields(cls, qw) -> dict:
        n1 = int(qw.scales["n1"])
        if n1 > 127 or lowest_exponent(n1, qw.bits) < -126:
            raise ValueError(f"INQ's levels 2^n1 .. 2^n2 (n1 = {n1}) leave float32's range, so "
                             f"the file could not be loaded; the weights were far too large "
                             f"or too small when frozen")
        return {"n1": n1}

    @classmethod
    def read_manifest(cls, group, where: str) -> dict:
        n1, layers = group.get("n1"), group["layers"]
        if not isinstance(n1, dict) or set(n1) != set(layers):
            raise ValueError(f"{where}: 'n1' must give every INQ layer's largest exponent")
        bits = group["options"]["bits"]
        for name, v in n1.items():
            n2 = lowest_exponent(v, bits) if is_int(v) else None
            if n2 is None or v > 127 or n2 < -126:
                raise ValueError(f"layer {name!r}: n1 must be an integer with 2^n1 and 2^n2 in "
                                 f"float32's range, got {v!r}")
        return {name: {"n1": n1[name]} for name in layers}

    @classmethod
    def scales_from_manifest(cls, values, options, shape, fields) -> dict:
        return {"n1": torch.tensor(fields["n1"]), "bits": torch.tensor(options["bits"])}

    @classmethod
    def ops(cls, n: int, nonzero: int, outs: int, positions: int) -> dict[str, int]:
        """``x * 2^n`` is a shift (an add to the float's exponent), then an addition."""
        return {"mults": 0, "adds": nonzero * positions, "shifts": nonzero * positions}
