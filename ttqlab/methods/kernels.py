"""The fast forms of the methods' rules, behind one dispatch.

Each method file states its rule plainly (the reference, with boolean masks and
``torch.where``); a training step runs the forms here instead, which compute the same
numbers with fewer or cheaper operations on the path a weight takes (:func:`path`):

* ``"cpu"``: eager mode on a CPU. Boolean masks and ``where`` cost ~20x an elementwise
  multiply there, so regions are 0/1 floats (arithmetic only), and a per-layer threshold is
  read as a Python float (a cheap host read on a CPU) for ``F.hardshrink``, the fastest
  threshold.
* ``"eager_device"``: eager mode on any other device (a GPU). Every elementwise operation
  is a kernel launch, so the fewest operations win: boolean masks, and no host read.
* ``"compiled"``: under ``torch.compile``, on any device. Arithmetic only: a host read
  would be a graph break, and boolean tensors are stored slowly by the CPU backend (TTQ's
  compiled quantizer measured 8x slower with them); the compiler fuses the rest.

``tests/test_kernels.py`` checks every form against its method's reference, on every
path. Binary and BitNet have no entry here: their rule (a ``copysign``; a division,
``round`` and ``clamp``) is already the fewest operations on every path. INQ's forward is
one fused form on every path (:func:`inq`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import _broadcast, _per_channel_view

__all__ = ["PATHS", "inq", "max_abs", "path", "signs", "ternary", "ttq_backward",
           "ttq_forward", "twn"]

Path = Literal["cpu", "eager_device", "compiled"]
#: the paths a training step can take, as :func:`path` names them
PATHS: tuple[str, ...] = ("cpu", "eager_device", "compiled")


def path(w: Tensor) -> Path:
    """The path a step on ``w`` takes: ``"compiled"`` under ``torch.compile``, else
    ``"cpu"`` for a CPU tensor and ``"eager_device"`` for any other device."""
    if torch.compiler.is_compiling():
        return "compiled"
    return "cpu" if w.device.type == "cpu" else "eager_device"


def _check_path(on: str) -> None:
    if on not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {on!r}; "
                         f"pass kernels.path(w) to choose it from the tensor")


# --------------------------------------------------------------------------- ternary helpers


def signs(w: Tensor, delta: Tensor | float, on: Path | None = None) -> Tensor:
    """T = sign(w) [|w| > delta] as floats (+1 / 0 / -1), arithmetic only: on the CPU
    with a single threshold ``hardshrink(w, delta).sign()`` (0 where ``|w| <= delta``),
    else ``sign(relu(|w| - delta)) * sign(w)``. (The zero of a negative weight is -0.0 in
    the second form, +0.0 in the first and in the reference ``ternary_codes``.)"""
    on = path(w) if on is None else on
    if not isinstance(delta, Tensor):
        return F.hardshrink(w, float(delta)).sign_()
    if delta.numel() == 1 and on == "cpu":
        return F.hardshrink(w, float(delta)).sign_()
    return torch.relu(w.abs() - delta).sign_().mul_(w.sign())


def ternary(signs: Tensor, wp: Tensor, wn: Tensor) -> Tensor:
    """``+wp`` where T = +1, ``-wn`` where T = -1, 0 where T = 0; exact values, because
    every product is by 1 or 0: ``max(T, 0) * wp + min(T, 0) * wn``."""
    return signs.clamp(min=0).mul_(wp).add_(signs.clamp(max=0).mul_(wn))


# --------------------------------------------------------------------------- TWN


def twn(w: Tensor, factor: float, per_channel: bool, on: Path | None = None) -> Tensor:
    """TWN's ``alpha * T`` (``ttqlab.methods.twn``: delta = factor E|W|, alpha = the mean
    of the kept |W|) for a detached ``w``, in the form of path ``on`` (default
    :func:`path`). Bit for bit the reference's values: every mask product is by 0 or 1,
    every count is exact, and the sums add the same numbers in the same order."""
    on = path(w) if on is None else on
    _check_path(on)
    if not w.numel():
        return w.clone()
    a = w.abs()
    delta = factor * (_per_channel_view(a).mean(dim=1) if per_channel else a.mean())
    if per_channel:
        delta = _broadcast(delta, a)
    # The count of kept weights, exact: a float16 / bfloat16 sum of ones is not (9424
    # ones sum to 9408 in bfloat16), so count in float32 (exact to 2**24), or float64.
    count = torch.float64 if a.dtype == torch.float64 else torch.float32
    if on == "eager_device":  # 12 kernels against 19 (benchmarks/kernels.py)
        kept = a > delta
        if per_channel:
            total = _per_channel_view(a * kept).sum(dim=1)
            n = _per_channel_view(kept).sum(dim=1, dtype=count).clamp(min=1)
            alpha = _broadcast((total / n).to(a.dtype), w)
        else:
            alpha = ((a * kept).sum() / kept.sum(dtype=count).clamp(min=1)).to(a.dtype)
        return w.sign().mul_(kept).mul_(alpha)
    host = on == "cpu" and delta.numel() == 1  # read delta once: hardshrink
    kept = F.hardshrink(a, float(delta)) if host else torch.relu(a - delta).sign_().mul_(a)
    if per_channel:
        kept = _per_channel_view(kept)
        n = kept.sign().sum(dim=1, dtype=count).clamp(min=1)
        alpha = _broadcast((kept.sum(dim=1) / n).to(a.dtype), a)
    else:
        alpha = (kept.sum() / kept.sign().sum(dtype=count).clamp(min=1)).to(a.dtype)
    return signs(w, delta, on).mul_(alpha)


# --------------------------------------------------------------------------- TTQ


def max_abs(w: Tensor, on: Path | None = None) -> Tensor:
    """``max|w|``: on the CPU in one pass without materialising |w| (``aminmax``)."""
    on = path(w) if on is None else on
    if on != "cpu":
        return w.abs().amax()
    lo, hi = torch.aminmax(w)
    return torch.maximum(hi, lo.neg())


def ttq_forward(on: Path, w: Tensor, wp: Tensor, wn: Tensor,
                delta: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """TTQ's ``w_t = W_p [w > delta] - W_n [w < -delta]`` and the regions ``(P, N)`` its
    backward needs: boolean on ``"eager_device"`` (the fewest kernels), 0/1 floats on the
    other paths (arithmetic only). Exact on every path (products by 0 or 1)."""
    _check_path(on)
    if on == "eager_device":
        p, n = w > delta, w < -delta
        return (p * wp).sub_(n * wn), (p, n)
    s = signs(w, delta, on)
    p = s.clamp(min=0)
    n = s.neg_().clamp_(min=0)
    return (p * wp).addcmul_(n, wn, value=-1), (p, n)


def ttq_backward(on: Path, g: Tensor, regions: tuple[Tensor, Tensor], wp: Tensor,
                 wn: Tensor, unit: Tensor | None, reduce: str,
                 need_w: bool) -> tuple[Tensor | None, Tensor, Tensor]:
    """TTQ's gradients from the regions :func:`ttq_forward` returned on the same path:
    ``dL/dW_p = sum_P g``, ``dL/dW_n = -sum_N g`` (divided by the region sizes for
    ``reduce="mean"``) and ``dL/dw = (W_p [P] + u [Z] + W_n [N]) g``, ``u = unit`` (1 if
    None). The latent gradient is exact on every path; the two sums differ from the
    reference only in summation order (a dot product on the CPU and compiled paths)."""
    _check_path(on)
    p, n = regions
    if on == "eager_device":
        grad_wp = (g * p).sum()
        grad_wn = (g * n).sum().neg_()
    else:
        flat = g.contiguous().view(-1)
        grad_wp = torch.dot(flat, p.reshape(-1))
        grad_wn = -torch.dot(flat, n.reshape(-1))
    if reduce == "mean":
        grad_wp = grad_wp / p.sum().clamp(min=1)
        grad_wn = grad_wn / n.sum().clamp(min=1)
    grad_w = None
    if need_w and on == "eager_device":
        grad_w = torch.where(p, wp, torch.where(n, wn, 1.0 if unit is None else unit))
        grad_w = grad_w.mul_(g)
    elif need_w:
        scale = torch.sub(1.0, p).sub_(n)
        if unit is not None:
            scale.mul_(unit)
        grad_w = scale.addcmul_(p, wp).addcmul_(n, wn).mul_(g)
    return grad_w, grad_wp, grad_wn


# --------------------------------------------------------------------------- INQ


def inq(frozen_values: Tensor, w: Tensor, free: Tensor) -> Tensor:
    """INQ's ``where(frozen, frozen_values, w)`` as ``frozen_values + w * free`` with
    ``free = 1 - frozen`` as floats and ``frozen_values = 0`` where free: one fused kernel
    on every path, several times faster on a CPU than ``where``, and exact (a product by 1
    or 0 plus a 0; the gradient to ``w`` is ``g * free``, g or 0)."""
    return torch.addcmul(frozen_values, w, free)
