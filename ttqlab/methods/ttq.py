"""Trained Ternary Quantization (Zhu, Han, Mao & Dally 2017).

    delta = t * max|w|                                      (Eq. 8, t = 0.05)
    w_t   = +W_p if w > delta,  0 if |w| <= delta,  -W_n if w < -delta

with two trained scales per layer and the paper's gradients (the authors' code):

    dL/dW_p =  sum_{i: w_i >  delta} dL/dw_t(i)
    dL/dW_n = -sum_{i: w_i < -delta} dL/dw_t(i)    (the paper's Eq. 7 drops the minus)
    dL/dw_i = W_p g_i,  g_i,  W_n g_i   in the positive, zero, negative region

(the scales act as per-region learning-rate multipliers on the latent weights).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import kernels, register
from .base import Option, WeightQuantizer, _check_finite, _check_number, _check_unit_interval
from .twn import ternary_codes

__all__ = ["TTQWeight", "ternarize_ttq", "ttq_threshold"]


# --------------------------------------------------------------------------- the rule


def ttq_threshold(w: Tensor, t: float = 0.05, sparsity: float | None = None) -> Tensor:
    """TTQ threshold (Zhu et al., Eq. 8): ``delta = t * max|w|``.

    With ``sparsity=p`` (ttqlab's fixed-sparsity mode) delta is instead the |w| quantile
    that sets a fraction p of the weights to zero, recomputed every step, and ``t`` is
    ignored. This is ttqlab's own mode, inspired by but not the authors' ``p_ternarize``
    (which thresholds tanh(w), outputs +-1 without trained scales, uses the gradient
    1 - tanh^2 and refreshes the threshold once per epoch). No gradient flows through delta.
    """
    w = w.detach()
    if sparsity is not None:
        _check_unit_interval(sparsity, "sparsity")
        n = w.numel()
        if not n:
            return w.new_zeros(())
        k = max(1, min(n, round(sparsity * n)))
        return w.abs().flatten().kthvalue(k).values
    _check_unit_interval(t, "t")
    if not w.numel():
        return w.new_zeros(())
    return t * kernels.max_abs(w)  # max|w|, in one pass on a CPU


def _ttq_rule(w: Tensor, wp: Tensor, wn: Tensor, delta: Tensor) -> Tensor:
    """The reference forward: ``w_t = +W_p if w > delta, 0 if |w| <= delta, -W_n if
    w < -delta``."""
    zero = torch.zeros((), dtype=w.dtype, device=w.device)
    return torch.where(w > delta, wp, torch.where(w < -delta, -wn, zero))


def _ttq_gradients(g: Tensor, w: Tensor, wp: Tensor, wn: Tensor, delta: Tensor,
                   unit: Tensor | float = 1.0,
                   reduce: str = "sum") -> tuple[Tensor, Tensor, Tensor]:
    """The reference backward of Zhu et al. (the authors' code), ``(dL/dw, dL/dW_p,
    dL/dW_n)`` for the output gradient ``g``:

    * ``dL/dW_p =  sum_{i: w_i >  delta} g_i``
    * ``dL/dW_n = -sum_{i: w_i < -delta} g_i``   (the paper's Eq. 7 drops the minus)
    * ``dL/dw_i = W_p g_i``, ``u g_i`` or ``W_n g_i`` in the positive, zero, negative
      region, ``u = unit`` (1 in the paper);

    ``reduce="mean"`` divides the scale gradients by the region sizes."""
    p, n = w > delta, w < -delta
    grad_wp, grad_wn = g[p].sum(), -g[n].sum()
    if reduce == "mean":
        grad_wp, grad_wn = grad_wp / p.sum().clamp(min=1), grad_wn / n.sum().clamp(min=1)
    unit = torch.as_tensor(unit, dtype=w.dtype, device=w.device)
    return torch.where(p, wp, torch.where(n, wn, unit)) * g, grad_wp, grad_wn


class _TTQFunction(torch.autograd.Function):
    """:func:`_ttq_rule` forward and :func:`_ttq_gradients` backward (the scales act as
    per-region learning-rate multipliers on the latent weight), computed by
    ``kernels.ttq_forward`` / ``kernels.ttq_backward`` in the form of the path the forward
    took (saved on ``ctx.path``: the backward uses the regions that forward saved).
    ``unit`` is ``TTQWeight``'s ``scale`` (None: 1), so that the three multipliers keep the
    paper's proportions in the units of the trained parameters.

    ``reduce="mean"`` divides the scale gradients by the region sizes, the variant several
    re-implementations use (it is not what the authors' code does).
    """

    @staticmethod
    def forward(ctx, w, wp, wn, delta, reduce, unit=None):
        ctx.reduce, ctx.path = reduce, kernels.path(w)
        out, (p, n) = kernels.ttq_forward(ctx.path, w, wp, wn, delta)
        ctx.save_for_backward(p, n, wp, wn, unit)
        return out

    @staticmethod
    def backward(ctx, g):
        p, n, wp, wn, unit = ctx.saved_tensors
        grad_w, grad_wp, grad_wn = kernels.ttq_backward(
            ctx.path, g, (p, n), wp, wn, unit, ctx.reduce, ctx.needs_input_grad[0])
        return grad_w, grad_wp.reshape(wp.shape), grad_wn.reshape(wn.shape), None, None, None


def ternarize_ttq(
    w: Tensor,
    wp: Tensor | float,
    wn: Tensor | float,
    t: float = 0.05,
    *,
    sparsity: float | None = None,
    reduce: str = "sum",
) -> Tensor:
    """Trained Ternary Quantization: ``+W_p`` if ``w > delta``, ``0`` if ``|w| <= delta``,
    ``-W_n`` if ``w < -delta``, with ``delta = t * max|w|`` (or ttqlab's fixed-sparsity
    quantile, see :func:`ttq_threshold`) and TTQ's gradients (see ``_TTQFunction``):
    sums of the output gradient for W_p and W_n (W_n's with a minus sign), and the latent
    gradient scaled by W_p / 1 / W_n per region.

    ``reduce="mean"`` selects the averaged scale gradient some re-implementations use.
    """
    _check_finite(w)
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' (the paper) or 'mean', got {reduce!r}")
    wp = torch.as_tensor(wp, dtype=w.dtype, device=w.device)
    wn = torch.as_tensor(wn, dtype=w.dtype, device=w.device)
    delta = ttq_threshold(w, t, sparsity)
    return _TTQFunction.apply(w, wp, wn, delta, reduce)


def _check_reduce(reduce: str) -> None:
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' (the paper) or 'mean', got {reduce!r}")


def _check_init(init: str | float) -> None:
    if init != "mean":
        _check_number(init, "init", "'mean' or a positive number (the authors' code uses "
                      "1.0)", lambda v: v > 0)


@register
class TTQWeight(WeightQuantizer):
    """TTQ: ``+W_p`` / ``0`` / ``-W_n`` with ``delta = t * max|w|`` and two trained scales.

    ``wp`` and ``wn`` are ``nn.Parameter`` s of this module, so they appear in
    ``model.parameters()`` and any optimizer trains them; their gradients are TTQ's sums.

    Units. The layer computes ``W_p = scale * wp`` and ``W_n = scale * wn``, where
    ``scale`` is a fixed buffer, and the latent gradient is ``scale * (wp, 1, wn) * g`` in
    the positive, zero and negative regions: the paper's multipliers ``W_p : 1 : W_n`` in
    the units of the trained parameters ``wp``, ``wn``. ``init="mean"`` (ttqlab's default)
    sets ``scale`` to the mean |w| above the threshold and starts ``wp`` / ``wn`` at the
    mean of each side in those units (near 1), so the quantized layer starts at the float
    layer's scale (a model without BatchNorm trains) and the optimizer sees ``wp``, ``wn``
    at the magnitude the authors' code gives them (1.0). ``init=c`` (a number; the
    authors' code uses 1.0) sets ``scale = 1`` and ``wp = wn = c``: the paper, literally.
    Behind BatchNorm (the loss does not depend on the layer's overall scale), the default
    trains exactly like ``init=1.0`` started from the same ``wp``, ``wn``: the same codes,
    latent weights and ``wp``, ``wn`` at every step, only ``W_p``, ``W_n`` multiplied by
    ``scale``. (The two defaults do start from different ``wp``, ``wn``: the side means
    against 1 and 1.) ``scales()`` and every report give the effective ``W_p``, ``W_n``.
    """

    method = "ttq"
    OPTIONS_SPEC = (
        Option("t", 0.05, "TTQ threshold t, in (0, 1): delta = t * max|w|",
               lambda v: _check_unit_interval(v, "t")),
        Option("sparsity", None, "TTQ fixed-sparsity mode: target fraction of zeros, in (0, 1)",
               lambda v: v is None or _check_unit_interval(v, "sparsity")),
        Option("reduce", "sum", "TTQ scale gradient: 'sum' (the paper) or 'mean'",
               _check_reduce, str, ("sum", "mean")),
        Option("init", "mean", "TTQ scales' start: 'mean' or a positive number",
               _check_init, cli=False),
    )
    scale_names = ("wp", "wn")
    bits = 2
    tag, color, order, finetune_lr = "TTQ", "#1f77b4", 30, 1e-2

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
        self.check_options(t=t, sparsity=sparsity, reduce=reduce, init=init)
        self.t = float(t)
        self.sparsity = None if sparsity is None else float(sparsity)
        self.reduce = reduce
        self.init = init
        w = weight.detach()
        if init == "mean":
            delta = ttq_threshold(w, self.t, self.sparsity)
            a = w.abs()
            kept = a[a > delta]
            scale = float(kept.mean()) if kept.numel() else float(a.mean()) if a.numel() else 0.0
            scale = scale or 1.0  # an all-zero layer: any unit will do
            pos, neg = w[w > delta], w[w < -delta]
            wp = float(pos.mean()) / scale if pos.numel() else 1.0
            wn = float(-neg.mean()) / scale if neg.numel() else 1.0
        else:  # a positive number (checked)
            scale, wp, wn = 1.0, float(init), float(init)
        self.register_buffer("scale", torch.tensor(scale, dtype=w.dtype, device=w.device))
        self.wp = nn.Parameter(torch.tensor(wp, dtype=w.dtype, device=w.device))
        self.wn = nn.Parameter(torch.tensor(wn, dtype=w.dtype, device=w.device))

    @classmethod
    def build(cls, weight: Tensor, **options) -> TTQWeight:
        return cls(weight, **options)

    def options(self) -> dict:
        return {"t": self.t, "sparsity": self.sparsity, "reduce": self.reduce, "init": self.init}

    def threshold(self, w: Tensor) -> Tensor:
        return ttq_threshold(w, self.t, self.sparsity)

    def forward(self, w: Tensor) -> Tensor:
        return _TTQFunction.apply(w, self.scale * self.wp, self.scale * self.wn,
                                  self.threshold(w), self.reduce, self.scale)

    def codes(self, w: Tensor) -> Tensor:
        return ternary_codes(w.detach(), self.threshold(w))

    def scales(self, w: Tensor | None = None) -> dict[str, Tensor]:
        """The effective W_p and W_n: ``scale * wp`` and ``scale * wn``."""
        return {"wp": (self.scale * self.wp).detach(), "wn": (self.scale * self.wn).detach()}

    @staticmethod
    def dequantize(codes: Tensor, scales: dict[str, Tensor]) -> Tensor:
        return kernels.ternary(codes.to(scales["wp"].dtype), scales["wp"], scales["wn"])

    @classmethod
    def scheme(cls, bits: int, packing: str) -> tuple[str, int | None]:
        return packing, None

    @classmethod
    def ops(cls, n: int, nonzero: int, outs: int, positions: int) -> dict[str, int]:
        """``W_p * S+ - W_n * S-``: an add per non-zero weight, a subtraction and two
        multiplies per output."""
        return {"mults": 2 * outs * positions,
                "adds": nonzero * positions + outs * positions, "shifts": 0}
