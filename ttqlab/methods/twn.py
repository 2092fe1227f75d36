"""Ternary Weight Networks (Li, Zhang & Liu 2016).

    W ~ alpha * T,  T_i = +1 if W_i > delta, 0 if |W_i| <= delta, -1 if W_i < -delta
    delta = 0.7 * E|W|                        (Eq. 9; 0.75 in the latest arXiv version)
    alpha = E_{i : |W_i| > delta} |W_i|       (Eq. 8, the L2-optimal scale for fixed T)

trained with the straight-through gradient to a float latent copy. Also here: the exact
L2-optimal ternary fit (Eq. 5-6, solved by sorting) and ``ternary_codes``, which TTQ
shares. The rule is written plainly here; the training step runs its fast forms (the same
numbers) from ``kernels.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..validation import check_bool
from . import kernels, register
from .base import (
    Option,
    WeightQuantizer,
    _broadcast,
    _check_finite,
    _check_number,
    _per_channel_view,
    ste,
)

__all__ = ["TWNWeight", "optimal_ternary_params", "ste_tern", "ternarize_optimal",
           "ternarize_twn", "ternary_codes", "twn_scale", "twn_threshold"]


# --------------------------------------------------------------------------- the rule


def twn_threshold(w: Tensor, factor: float = 0.7, per_channel: bool = False) -> Tensor:
    """TWN threshold: ``delta = factor * E|W|`` (Li et al., Eq. 9; factor 0.7 in the
    authors' code, 0.75 in the latest arXiv version).

    With ``per_channel=True`` one delta per output channel (dim 0), shaped to broadcast.
    """
    _check_finite(w)
    if factor <= 0:
        raise ValueError(f"factor must be positive (TWN uses 0.7), got {factor!r}")
    return _twn_params(w.detach(), factor, per_channel)[0]


def twn_scale(w: Tensor, delta: Tensor | float, per_channel: bool = False) -> Tensor:
    """TWN scale for a given threshold: ``alpha = mean of |W_i| over {i : |W_i| > delta}``
    (Li et al., Eq. 8), the L2-optimal scale once T is fixed.

    Returns 0 (not NaN) when no weight exceeds the threshold.
    """
    delta = torch.as_tensor(delta, dtype=w.dtype, device=w.device)
    if per_channel:
        delta = delta.reshape(-1, *([1] * (w.dim() - 1))) if w.dim() > 1 else delta
    return _twn_scale(w.detach().abs(), delta, per_channel)


def ternary_codes(w: Tensor, delta: Tensor | float) -> Tensor:
    """T_i = +1 if W_i > delta, 0 if |W_i| <= delta, -1 if W_i < -delta (as int8)."""
    return (w > delta).to(torch.int8) - (w < -delta).to(torch.int8)


def ternarize_twn(w: Tensor, factor: float = 0.7, per_channel: bool = False) -> Tensor:
    """Ternary Weight Networks: ``alpha * T`` with ``delta = factor * E|W|`` and
    ``alpha = E_{|W_i| > delta} |W_i|`` (per output channel when ``per_channel``).

    Forward only; use :func:`ste_tern` (or ``ttqlab.quantize(model, "twn")``) to train.
    """
    delta = twn_threshold(w, factor, per_channel)
    alpha = twn_scale(w, delta, per_channel)
    return ternary_codes(w.detach(), delta).to(w.dtype).mul_(alpha)


def _twn_delta(a: Tensor, factor: float, per_channel: bool) -> Tensor:
    """``delta = factor * E|W|`` from ``a = |W|`` (per output channel, shaped to broadcast)."""
    if per_channel:
        return _broadcast(factor * _per_channel_view(a).mean(dim=1), a)
    return factor * a.mean()


def _twn_scale(a: Tensor, delta: Tensor, per_channel: bool) -> Tensor:
    """``alpha = sum_{a_i > delta} a_i / |{i : a_i > delta}|`` from ``a = |W|`` (0 when
    nothing is kept)."""
    if not a.numel():
        return a.new_zeros(())
    kept = a > delta
    count = torch.float64 if a.dtype == torch.float64 else torch.float32  # exact counts
    if per_channel:
        total = _per_channel_view(a * kept).sum(dim=1)
        n = _per_channel_view(kept).sum(dim=1, dtype=count).clamp(min=1)
        return _broadcast((total / n).to(a.dtype), a)
    return ((a * kept).sum() / kept.sum(dtype=count).clamp(min=1)).to(a.dtype)


def _twn_params(w: Tensor, factor: float, per_channel: bool) -> tuple[Tensor, Tensor]:
    """(delta, alpha) of TWN without argument checks (0 and 0 for an empty tensor)."""
    if not w.numel():
        return w.new_zeros(()), w.new_zeros(())
    a = w.abs()
    delta = _twn_delta(a, factor, per_channel)
    return delta, _twn_scale(a, delta, per_channel)


def ste_tern(w: Tensor, factor: float = 0.7, per_channel: bool = False) -> Tensor:
    """:func:`ternarize_twn` with the straight-through gradient ``dL/dw = dL/dw_t``.

    Named after Larq's ``larq.quantizers.ste_tern``, but not the same function. Larq's
    returns the unscaled T (``+-1`` / 0, no alpha), uses a fixed threshold
    ``threshold_value=0.05`` unless ``ternary_weight_networks=True`` (then 0.7 E|W|,
    as here), maps a weight exactly at the threshold to +-1 (here: to 0, ``|W_i| <=
    delta``) and clips the gradient, ``dL/dw = dL/dw_t * [|w| <= 1]``. This one is TWN
    as the paper states it: alpha * T, and the gradient unchanged for every w.
    """
    return ste(w, ternarize_twn(w, factor, per_channel))


def optimal_ternary_params(w: Tensor) -> tuple[Tensor, Tensor, int]:
    """Exact L2-optimal ternary fit of a whole tensor: ``argmin ||W - alpha T||^2``.

    For a fixed support of size k the best alpha is the mean of the kept |W_i|, and the
    error is ``||W||^2 - (S_k)^2 / k`` where S_k is the sum of the k largest |W_i|. So
    sort |W| in decreasing order and take ``k* = argmax_k S_k^2 / k`` (Li et al., Eq. 5-6).

    Returns ``(delta, alpha, k)``: delta is the midpoint between the k-th and (k+1)-th
    largest |W_i| (any threshold in between gives the same T), alpha = S_k / k.
    """
    _check_finite(w)
    a = w.detach().abs().flatten()
    n = a.numel()
    if n == 0 or not bool(a.any()):
        return w.new_zeros(()), w.new_zeros(()), 0
    s, _ = torch.sort(a.double(), descending=True)
    cs = torch.cumsum(s, 0)
    k = int(torch.argmax(cs * cs / torch.arange(1, n + 1, dtype=cs.dtype, device=cs.device)))
    alpha = (cs[k] / (k + 1)).to(w.dtype)
    lower = s[k + 1] if k + 1 < n else s.new_zeros(())
    delta = ((s[k] + lower) / 2).to(w.dtype)
    return delta, alpha, k + 1


def ternarize_optimal(w: Tensor, per_channel: bool = False) -> Tensor:
    """The exact L2-optimal ``alpha * T`` (see :func:`optimal_ternary_params`).

    The k largest |W_i| get T = sign(W_i); ties are broken by position, so exactly k
    weights are non-zero. With ``per_channel`` each output channel gets its own fit.
    """
    _check_finite(w)
    if per_channel and w.dim() > 1:
        rows = [ternarize_optimal(r) for r in _per_channel_view(w)]
        return torch.stack(rows).reshape(w.shape) if rows else w.clone()
    _, alpha, k = optimal_ternary_params(w)
    flat = w.detach().flatten()
    out = torch.zeros_like(flat)
    if k:
        idx = torch.argsort(flat.abs(), descending=True, stable=True)[:k]
        out[idx] = alpha * torch.where(flat[idx] >= 0, 1.0, -1.0).to(w.dtype)
    return out.reshape(w.shape)


def _check_flag(value: bool) -> None:
    # a ValueError, as the file's and the command line's checks
    check_bool("per_channel", value, error=ValueError)


@register
class TWNWeight(WeightQuantizer):
    """TWN: ``alpha * T`` with ``delta = factor * E|w|`` (0.7 in the authors' code),
    straight-through gradient to the latent weight. ``per_channel`` gives one delta and
    alpha per output channel (the latest arXiv version of the paper)."""

    method = "twn"
    OPTIONS_SPEC = (
        Option("factor", 0.7, "TWN threshold factor: delta = factor * E|W|",
               lambda v: _check_number(v, "factor", "positive (TWN uses 0.7)", lambda x: x > 0)),
        Option("per_channel", False, "TWN: one delta and alpha per output channel",
               _check_flag, bool, required=True),
    )
    scale_names = ("alpha",)
    bits = 2
    tag, color, order, finetune_lr = "TWN", "#ff7f0e", 20, 3e-2

    def __init__(self, factor: float = 0.7, per_channel: bool = False):
        super().__init__()
        self.check_options(factor=factor, per_channel=per_channel)
        self.factor = float(factor)
        self.per_channel = bool(per_channel)

    def options(self) -> dict:
        return {"factor": self.factor, "per_channel": self.per_channel}

    def _delta_alpha(self, w: Tensor) -> tuple[Tensor, Tensor]:
        return _twn_params(w.detach(), self.factor, self.per_channel)

    def forward(self, w: Tensor) -> Tensor:
        """``alpha * T`` (the form of :func:`kernels.twn` for ``w``'s path), with the
        straight-through gradient."""
        return ste(w, kernels.twn(w.detach(), self.factor, self.per_channel))

    def codes(self, w: Tensor) -> Tensor:
        delta, _ = self._delta_alpha(w)
        return ternary_codes(w.detach(), delta)

    def scales(self, w: Tensor) -> dict[str, Tensor]:
        return {"alpha": self._delta_alpha(w)[1]}

    @staticmethod
    def dequantize(codes: Tensor, scales: dict[str, Tensor]) -> Tensor:
        alpha = scales["alpha"]
        return codes.to(alpha.dtype).mul_(alpha)

    @classmethod
    def scheme(cls, bits: int, packing: str) -> tuple[str, int | None]:
        return packing, None

    @classmethod
    def ops(cls, n: int, nonzero: int, outs: int, positions: int) -> dict[str, int]:
        """``alpha * (S+ - S-)``: an add per non-zero weight, a subtraction and one
        multiply per output."""
        return {"mults": outs * positions, "adds": nonzero * positions + outs * positions,
                "shifts": 0}

    @classmethod
    def n_scales(cls, options: dict, shape: list[int]) -> int:
        return shape[0] if options.get("per_channel") else 1

    @classmethod
    def scales_from_file(cls, values: Tensor, options: dict, shape: list[int]) -> dict:
        if options.get("per_channel"):  # shaped to broadcast
            return {"alpha": values.clone().reshape(-1, *[1] * (len(shape) - 1))}
        return {"alpha": values[0].clone()}
