"""Pure tensor functions: the quantization rules of BinaryConnect/BWN, TWN, TTQ and INQ.

Every function takes a float tensor and returns a tensor of the same shape. Nothing here
knows about layers, models or training; `ttqlab.layers` wraps these rules into
`torch.nn.utils.parametrize` modules.

Notation follows the papers (see ``shared/papers.md`` in the repository):

* TWN   (Li et al. 2016):   W ~ alpha * T,  T in {-1, 0, +1}
* TTQ   (Zhu et al. 2017):  w_t in {-W_n, 0, +W_p}
* INQ   (Zhou et al. 2017): W in P_l = {+-2^n1, ..., +-2^n2, 0}
* BitNet b1.58 (Ma et al. 2024): W ~ gamma * RoundClip(W / (gamma + eps), -1, 1), gamma = E|W|
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "absmean_codes",
    "binarize",
    "inq_exponent_range",
    "optimal_ternary_params",
    "pow2_exponents",
    "pow2_from_codes",
    "pow2_levels",
    "quantize_pow2",
    "ste",
    "ste_absmean",
    "ste_sign",
    "ste_tern",
    "ternarize_absmean",
    "ternarize_optimal",
    "ternarize_ttq",
    "ternarize_twn",
    "ternary_codes",
    "ttq_threshold",
    "twn_scale",
    "twn_threshold",
]


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


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer from 2 to 8 (2 = ternary, 5 = the INQ "
                         f"paper's default), got {bits!r}")


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


def binarize(w: Tensor) -> Tensor:
    """Binary-weight baseline (BWN / XNOR-Net scale): ``alpha * sign(w)``, alpha = E|w|.

    The sign is the float's sign bit, so 0.0 gives +alpha (and -0.0 gives -alpha): every
    weight is +-alpha. An all-zero tensor stays zero.
    """
    _check_finite(w)
    return _binarize(w.detach())


def _binarize(w: Tensor) -> Tensor:
    alpha = w.abs().mean() if w.numel() else w.new_zeros(())
    return torch.copysign(alpha, w)


def ste_sign(w: Tensor) -> Tensor:
    """:func:`binarize` with the straight-through gradient (Larq's name)."""
    return ste(w, binarize(w))


# --------------------------------------------------------------------------- TWN


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


def _twn_scale(a: Tensor, delta: Tensor, per_channel: bool) -> Tensor:
    """alpha from |W| and delta, without a single ``torch.where`` (the hot path)."""
    if per_channel:
        kept = _per_channel_view(torch.relu(a - delta).sign_().mul_(a))
        count = kept.sign().sum(dim=1)
        return _broadcast(kept.sum(dim=1) / count.clamp(min=1), a)
    kept = F.hardshrink(a, float(delta))  # |W_i| where |W_i| > delta, else 0
    return kept.sum() / kept.sign().sum().clamp(min=1)


def _twn_params(w: Tensor, factor: float, per_channel: bool) -> tuple[Tensor, Tensor]:
    """(delta, alpha) of TWN without argument checks (the training hot path)."""
    if not w.numel():
        return w.new_zeros(()), w.new_zeros(())
    a = w.abs()
    if per_channel:
        delta = _broadcast(factor * _per_channel_view(a).mean(dim=1), w)
    else:
        delta = factor * a.mean()
    return delta, _twn_scale(a, delta, per_channel)


def ternary_codes(w: Tensor, delta: Tensor | float) -> Tensor:
    """T_i = +1 if W_i > delta, 0 if |W_i| <= delta, -1 if W_i < -delta (as int8)."""
    return (w > delta).to(torch.int8) - (w < -delta).to(torch.int8)


def _signs(w: Tensor, delta: Tensor | float) -> Tensor:
    """T as floats (+1 / 0 / -1), computed with arithmetic only: on a CPU ``torch.where``
    and boolean masks cost ~20x an elementwise multiply, and this runs every step."""
    if isinstance(delta, Tensor) and delta.numel() > 1:  # per-channel thresholds
        return torch.relu(w.abs() - delta).sign_().mul_(w.sign())
    return F.hardshrink(w, float(delta)).sign_()  # hardshrink: 0 where |w| <= delta


def _ternary(signs: Tensor, wp: Tensor, wn: Tensor) -> Tensor:
    """``+wp`` where T = +1, ``-wn`` where T = -1, 0 where T = 0; exact values, because
    every product is by 1 or 0: ``max(T, 0) * wp + min(T, 0) * wn``."""
    return signs.clamp(min=0).mul_(wp).add_(signs.clamp(max=0).mul_(wn))


def ternarize_twn(w: Tensor, factor: float = 0.7, per_channel: bool = False) -> Tensor:
    """Ternary Weight Networks: ``alpha * T`` with ``delta = factor * E|W|`` and
    ``alpha = E_{|W_i| > delta} |W_i|`` (per output channel when ``per_channel``).

    Forward only; use :func:`ste_tern` (or ``ttqlab.quantize(model, "twn")``) to train.
    """
    delta = twn_threshold(w, factor, per_channel)
    alpha = twn_scale(w, delta, per_channel)
    return _signs(w.detach(), delta).mul_(alpha)


def ste_tern(w: Tensor, factor: float = 0.7, per_channel: bool = False) -> Tensor:
    """:func:`ternarize_twn` with the straight-through gradient (Larq's name)."""
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


# --------------------------------------------------------------------------- TTQ


def ttq_threshold(w: Tensor, t: float = 0.05, sparsity: float | None = None) -> Tensor:
    """TTQ threshold (Zhu et al., Eq. 8): ``delta = t * max|w|``.

    Fixed-sparsity mode (authors' code, Section 5): with ``sparsity=p`` delta is the |w|
    quantile that sets a fraction p of the weights to zero, and ``t`` is ignored.
    No gradient flows through delta.
    """
    w = w.detach()
    if sparsity is not None:
        _check_unit_interval(sparsity, "sparsity")
        n = w.numel()
        k = max(1, min(n, round(sparsity * n)))
        return w.abs().flatten().kthvalue(k).values
    _check_unit_interval(t, "t")
    if not w.numel():
        return w.new_zeros(())
    lo, hi = torch.aminmax(w)  # max|w| in one pass, without materialising |w|
    return t * torch.maximum(hi, lo.neg())


class _TTQFunction(torch.autograd.Function):
    """Forward ``w_t = W_p [w > delta] - W_n [w < -delta]``; the backward of Zhu et al.:

    * ``dL/dW_p =  sum_{i: w_i >  delta} dL/dw_t(i)``
    * ``dL/dW_n = -sum_{i: w_i < -delta} dL/dw_t(i)``   (the paper's Eq. 7 drops the minus)
    * ``dL/dw_i = W_p g_i``, ``g_i`` or ``W_n g_i`` in the positive, zero, negative region.

    ``reduce="mean"`` divides the scale gradients by the region sizes, the variant several
    re-implementations use (it is not what the authors' code does).

    The regions are kept as 0/1 float tensors ``P`` and ``N`` so that everything is
    arithmetic: sums are dot products, and the latent gradient is
    ``((1 - P - N) + W_p P + W_n N) * g`` (each term exact: the masks are 0 or 1).
    """

    @staticmethod
    def forward(ctx, w, wp, wn, delta, reduce):
        signs = _signs(w, delta)
        p = signs.clamp(min=0)
        n = signs.neg_().clamp_(min=0)
        ctx.save_for_backward(p, n, wp, wn)
        ctx.reduce = reduce
        return (p * wp).addcmul_(n, wn, value=-1)

    @staticmethod
    def backward(ctx, g):
        p, n, wp, wn = ctx.saved_tensors
        flat = g.contiguous().view(-1)
        grad_wp = torch.dot(flat, p.view(-1))
        grad_wn = -torch.dot(flat, n.view(-1))
        if ctx.reduce == "mean":
            grad_wp = grad_wp / p.sum().clamp(min=1)
            grad_wn = grad_wn / n.sum().clamp(min=1)
        grad_w = None
        if ctx.needs_input_grad[0]:
            scale = torch.sub(1.0, p).sub_(n).addcmul_(p, wp).addcmul_(n, wn)
            grad_w = scale.mul_(g)
        return grad_w, grad_wp.reshape(wp.shape), grad_wn.reshape(wn.shape), None, None


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
    ``-W_n`` if ``w < -delta``, with ``delta = t * max|w|`` (or the fixed-sparsity
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


# --------------------------------------------------------------------------- INQ


def _exponent_of_nearest_pow2(a: Tensor) -> Tensor:
    """For a > 0, the n for which 2^n is the nearest power of two, ties going up.

    2^n is nearest exactly when ``0.75 * 2^n <= a < 1.5 * 2^n``. Writing a = m * 2^e
    with m in [0.5, 1) (``frexp``, exact in floating point), that is n = e if m >= 0.75
    else e - 1. No logarithm, so no rounding error at the boundaries.
    """
    m, e = torch.frexp(a)
    return torch.where(m >= 0.75, e, e - 1)


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
    n1 = int(_exponent_of_nearest_pow2(s.reshape(1).float()).item())
    n2 = n1 + 1 - 2 ** (bits - 1) // 2
    return n1, n2


def pow2_levels(w: Tensor, bits: int = 5, n1: int | None = None) -> Tensor:
    """INQ's level set ``P_l = {+-2^n1, ..., +-2^n2, 0}`` as a sorted 1-D tensor.

    n1 is computed from ``max|W|`` (:func:`inq_exponent_range`) unless given.
    b = 5 gives 8 exponents, 16 non-zero levels and zero; b = 2 gives {-2^n1, 0, 2^n1}.
    """
    _check_bits(bits)
    if n1 is None:
        n1, n2 = inq_exponent_range(w, bits)
    else:
        n2 = n1 + 1 - 2 ** (bits - 1) // 2
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
        n2 = n1 + 1 - 2 ** (bits - 1) // 2
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
    n2 = n1 + 1 - 2 ** (bits - 1) // 2
    c = codes.to(torch.int32)
    mag = torch.ldexp(torch.ones_like(c, dtype=torch.float32), (c.abs() + n2 - 1))
    return torch.where(c == 0, 0.0, torch.where(c > 0, mag, -mag))


# --------------------------------------------------------------------------- BitNet b1.58
# The rule lives with its method in ttqlab/methods/bitnet.py (imported last: it uses
# ``ste`` and ``_check_finite`` from this module).

from .methods.bitnet import (  # noqa: E402
    absmean_codes,
    ste_absmean,
    ternarize_absmean,
)
