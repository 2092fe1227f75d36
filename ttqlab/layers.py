"""Weight quantizers as `torch.nn.utils.parametrize` modules.

A parametrized layer stays an ``nn.Conv2d`` / ``nn.Linear``; ``layer.weight`` is the
quantized weight, the latent float weight lives at
``layer.parametrizations.weight.original`` and is only ever changed by the optimizer.
(Several public re-implementations overwrite ``weight.data`` in ``forward`` and so lose
the latent weights; a parametrization cannot.)

Each quantizer also knows how to describe the weight it produces as integer ``codes``
plus ``scales`` (``ttqlab.extract``) and how to rebuild it from them (``dequantize``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import quantizers as Q

__all__ = ["BinaryWeight", "INQWeight", "TTQWeight", "TWNWeight", "WeightQuantizer"]


class WeightQuantizer(nn.Module):
    """Base class: ``forward(latent) -> quantized weight`` plus the code/scale view."""

    method: str = ""
    #: bits per weight in ttqlab's simple packing (2-bit codes for ternary)
    bits: int = 32

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

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options().items())


class BinaryWeight(WeightQuantizer):
    """``w_b = E|w| * sign(w)`` with the straight-through gradient (BWN-style baseline)."""

    method = "binary"
    bits = 1

    def forward(self, w: Tensor) -> Tensor:
        return Q.ste(w, Q._binarize(w.detach()))

    def codes(self, w: Tensor) -> Tensor:
        """+1 / -1 from the sign bit (0.0 -> +1, -0.0 -> -1), as ``binarize``."""
        return 1 - 2 * torch.signbit(w.detach()).to(torch.int8)

    def scales(self, w: Tensor) -> dict[str, Tensor]:
        return {"alpha": w.detach().abs().mean()}

    @staticmethod
    def dequantize(codes: Tensor, scales: dict[str, Tensor]) -> Tensor:
        return torch.copysign(scales["alpha"], codes.to(scales["alpha"].dtype))


class TWNWeight(WeightQuantizer):
    """TWN: ``alpha * T`` with ``delta = factor * E|w|`` (0.7 in the authors' code),
    straight-through gradient to the latent weight. ``per_channel`` gives one delta and
    alpha per output channel (the latest arXiv version of the paper)."""

    method = "twn"
    bits = 2

    def __init__(self, factor: float = 0.7, per_channel: bool = False):
        super().__init__()
        if not factor > 0:
            raise ValueError(f"factor must be positive (TWN uses 0.7), got {factor!r}")
        self.factor = float(factor)
        self.per_channel = bool(per_channel)

    def options(self) -> dict:
        return {"factor": self.factor, "per_channel": self.per_channel}

    def _delta_alpha(self, w: Tensor) -> tuple[Tensor, Tensor]:
        return Q._twn_params(w.detach(), self.factor, self.per_channel)

    def forward(self, w: Tensor) -> Tensor:
        delta, alpha = self._delta_alpha(w)
        return Q.ste(w, Q._signs(w.detach(), delta).mul_(alpha))

    def codes(self, w: Tensor) -> Tensor:
        delta, _ = self._delta_alpha(w)
        return Q.ternary_codes(w.detach(), delta)

    def scales(self, w: Tensor) -> dict[str, Tensor]:
        return {"alpha": self._delta_alpha(w)[1]}

    @staticmethod
    def dequantize(codes: Tensor, scales: dict[str, Tensor]) -> Tensor:
        alpha = scales["alpha"]
        return codes.to(alpha.dtype).mul_(alpha)


class TTQWeight(WeightQuantizer):
    """TTQ: ``+W_p`` / ``0`` / ``-W_n`` with ``delta = t * max|w|`` and two trained scales.

    ``wp`` and ``wn`` are ``nn.Parameter`` s of this module, so they appear in
    ``model.parameters()`` and any optimizer trains them; their gradients are TTQ's sums
    (``ttqlab.quantizers.ternarize_ttq``).

    Units. The ternary values are ``+-scale * wp`` / ``scale * wn``, where ``scale`` is a
    fixed buffer. ``init="mean"`` (ttqlab's default) sets ``scale`` to the mean |w| of the
    weights above the threshold and starts ``wp`` / ``wn`` near 1 (the mean of each side
    in those units), so the quantized layer starts at the float layer's scale: a model
    without BatchNorm trains, and the optimizer sees W_p, W_n at the magnitude the
    authors' code gives them (1.0). That matters: with the raw scale (~0.03 for a typical
    layer) the summed gradient makes plain SGD at the papers' lr = 0.1 throw W_n negative
    within an epoch. Behind BatchNorm the two parametrizations train identically (the
    loss does not depend on the layer's overall scale). ``init=c`` (a number; the
    authors' code uses 1.0) sets ``scale = 1`` and ``wp = wn = c``: the paper, literally.
    ``scales()`` and every report give the effective values ``scale * wp``, ``scale * wn``.
    """

    method = "ttq"
    bits = 2

    def __init__(
        self,
        weight: Tensor,
        t: float = 0.05,
        *,
        sparsity: float | None = None,
        reduce: str = "sum",
        init: str | float = "mean",
    ):
        super().__init__()
        if sparsity is None:
            Q._check_unit_interval(t, "t")
        else:
            Q._check_unit_interval(sparsity, "sparsity")
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' (the paper) or 'mean', got {reduce!r}")
        self.t = float(t)
        self.sparsity = None if sparsity is None else float(sparsity)
        self.reduce = reduce
        self.init = init
        w = weight.detach()
        if init == "mean":
            delta = Q.ttq_threshold(w, self.t, self.sparsity)
            a = w.abs()
            kept = a[a > delta]
            scale = float(kept.mean()) if kept.numel() else float(a.mean()) if a.numel() else 0.0
            scale = scale or 1.0  # an all-zero layer: any unit will do
            pos, neg = w[w > delta], w[w < -delta]
            wp = float(pos.mean()) / scale if pos.numel() else 1.0
            wn = float(-neg.mean()) / scale if neg.numel() else 1.0
        elif isinstance(init, (int, float)) and not isinstance(init, bool) and init > 0:
            scale, wp, wn = 1.0, float(init), float(init)
        else:
            raise ValueError(f"init must be 'mean' or a positive number (the authors' code "
                             f"uses 1.0), got {init!r}")
        self.register_buffer("scale", torch.tensor(scale, dtype=w.dtype, device=w.device))
        self.wp = nn.Parameter(torch.tensor(wp, dtype=w.dtype, device=w.device))
        self.wn = nn.Parameter(torch.tensor(wn, dtype=w.dtype, device=w.device))

    def options(self) -> dict:
        return {"t": self.t, "sparsity": self.sparsity, "reduce": self.reduce, "init": self.init}

    def threshold(self, w: Tensor) -> Tensor:
        return Q.ttq_threshold(w, self.t, self.sparsity)

    def forward(self, w: Tensor) -> Tensor:
        return Q._TTQFunction.apply(w, self.scale * self.wp, self.scale * self.wn,
                                    self.threshold(w), self.reduce)

    def codes(self, w: Tensor) -> Tensor:
        return Q.ternary_codes(w.detach(), self.threshold(w))

    def scales(self, w: Tensor | None = None) -> dict[str, Tensor]:
        """The effective W_p and W_n: ``scale * wp`` and ``scale * wn``."""
        return {"wp": (self.scale * self.wp).detach(), "wn": (self.scale * self.wn).detach()}

    @staticmethod
    def dequantize(codes: Tensor, scales: dict[str, Tensor]) -> Tensor:
        return Q._ternary(codes.to(scales["wp"].dtype), scales["wp"], scales["wn"])


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

    def __init__(self, weight: Tensor, bits: int = 5):
        super().__init__()
        Q._check_bits(bits)
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
        return int(self.n1) + 1 - 2 ** (self.bits - 1) // 2

    @property
    def fraction_frozen(self) -> float:
        n = self.frozen_mask.numel()
        return float(self.frozen_mask.sum()) / n if n else 1.0

    def forward(self, w: Tensor) -> Tensor:
        return torch.addcmul(self.frozen_values, w, self.free)

    @torch.no_grad()
    def freeze(self, w: Tensor, new: Tensor) -> None:
        """Quantize the latent weights selected by ``new`` to powers of two and freeze
        them. The first call fixes n1 from max|W| (Zhou et al., Eq. 2)."""
        if not bool(self.frozen_mask.any()):
            n1, _ = Q.inq_exponent_range(w, self.bits)
            self.n1.fill_(n1)
        new = new & ~self.frozen_mask
        q = Q.quantize_pow2(w, self.bits, int(self.n1))
        self.frozen_values.copy_(torch.where(new, q, self.frozen_values))
        self.frozen_mask |= new
        self._refresh_free()

    def codes(self, w: Tensor) -> Tensor:
        if not bool(self.frozen_mask.all()):
            raise ValueError(f"INQ has frozen only {self.fraction_frozen:.1%} of this layer; "
                             f"call inq.step() until it returns 1.0 before extracting codes")
        return Q.pow2_exponents(self.frozen_values, self.bits, int(self.n1))

    def scales(self, w: Tensor) -> dict[str, Tensor]:
        return {"n1": self.n1.detach().clone(), "bits": torch.tensor(self.bits)}

    @staticmethod
    def dequantize(codes: Tensor, scales: dict[str, Tensor]) -> Tensor:
        return Q.pow2_from_codes(codes, int(scales["bits"]), int(scales["n1"]))
