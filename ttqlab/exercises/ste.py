"""Notebook 2 (the straight-through estimator): binarize and the STE, each with its catalogue
of typical mistakes."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import quantizers as Q
from ..checking import (
    Case,
    Exercise,
    Fail,
    check,
    judge_tensor,
    tensor_problem,
)
from ._cases import _randn, _t


def _binarize_cases() -> list[Case]:
    return [
        Case("a small vector (W = 0 becomes +α)", (_t([0.5, -1.0, 0.25, 0.0]),)),
        Case("all zeros", (torch.zeros(2, 2),)),
        Case("a single element", (_t([-0.3]),)),
        Case("a conv weight (4-D): one α for the whole layer",
             (_randn(31, 6, 3, 3, 3, scale=0.1),)),
        Case("random weights", (_randn(32, 500, scale=0.05),)),
    ]


BINARIZE = Exercise(
    name="binarize",
    signature="binarize(w)",
    cases=_binarize_cases,
    reference=lambda w: Q.binarize(w),
    judge=judge_tensor(),
    mistakes={
        "torch_sign": (lambda w: w.abs().mean() * torch.sign(w),
                       "torch.sign(0) is 0, but a binary weight is ±α: map W = 0 to +α "
                       "(e.g. torch.where(w >= 0, α, −α))."),
        "no_scale": (lambda w: torch.where(w >= 0, 1.0, -1.0),
                     "scale by α = E|W| (BWN / XNOR-Net): without it every weight is ±1."),
        "max_scale": (lambda w: torch.where(w >= 0, 1.0, -1.0) * w.abs().max(),
                      "α = E|W| is the mean magnitude, not the maximum."),
        "no_abs": (lambda w: torch.where(w >= 0, 1.0, -1.0) * w.mean(),
                   "α = E|W| averages the magnitudes |W_i| (w.abs().mean())."),
    },
)


def check_binarize(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``binarize(w)`` returns the binary-weight baseline (BWN / XNOR-Net)

        w_b = α · sign(W),  α = E|W|,  with sign(0) = +1

    (same shape as ``w``; all zeros stay zero).
    """
    return check(BINARIZE, fn, verbose)


class _STEVariant(torch.autograd.Function):
    """Forward q exactly; backward g times ``scale(w)``: the wrong-gradient variants."""

    @staticmethod
    def forward(ctx, w, q, clip):
        ctx.save_for_backward(w)
        ctx.clip = clip
        return q.clone()

    @staticmethod
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        return (torch.where(w.abs() <= 1, g, 0.0) if ctx.clip else g), None, None


def _observe_ste(fn: Callable, case: Case, args: tuple, kwargs: dict) -> tuple:
    """(forward value, dL/dw) of ``fn(w, q)`` for the incoming gradient ``given['g']``."""
    w, q = args
    w = w.detach().requires_grad_(True)
    with torch.enable_grad():
        out = fn(w, q, **kwargs)
        grad = None
        if isinstance(out, Tensor) and out.requires_grad and out.shape == w.shape:
            out.backward(case.given["g"])
            grad = None if w.grad is None else w.grad.detach().clone()
    return (out.detach() if isinstance(out, Tensor) else out), grad


def _ste_cases() -> list[Case]:
    def case(name, w, q, seed):
        return Case(name, (w, q), given={"g": _randn(seed, *w.shape)})

    w1 = _t([-0.9, -0.2, 0.05, 0.3, 1.2])
    w2, w3, w4 = _randn(41, 1000), _randn(42, 4, 3, 3, 3, scale=0.1), _t([0.4])
    w5 = _randn(47, 1000, scale=0.05)  # small weights: w + (q - w) rounds away from q
    return [
        case("the notebook's example (TWN)", w1, Q.ternarize_twn(w1), 40),
        case("random weights, some |w| > 1", w2, Q.ternarize_twn(w2), 43),
        case("a conv weight (4-D)", w3, Q.ternarize_twn(w3), 44),
        case("binary q of small weights", w5, Q.binarize(w5), 45),
        case("a single element", w4, Q.binarize(w4), 46),
    ]


def _judge_ste(expected: tuple, got: tuple, case: Case) -> Fail | None:
    (q, g), (out, grad) = expected, got
    problem = tensor_problem(q, out, rtol=0.0, atol=0.0, name="forward value")
    if problem:
        return Fail(problem, 0)
    if grad is None:
        return Fail("no gradient reaches w: your output is cut off from w in the autograd graph "
                    "(the STE exists to pass dL/dq on to w)", 1)
    problem = tensor_problem(g, grad, rtol=1e-6, atol=0.0, name="dL/dw")
    return Fail(problem, 1) if problem else None


STE = Exercise(
    name="ste",
    signature="ste(w, q)",
    cases=_ste_cases,
    reference=lambda w, q: Q.ste(w, q),
    judge=_judge_ste,
    observe=_observe_ste,
    mistakes={
        "detached": (lambda w, q: q.detach(),
                     "returning q (or anything detached from w) cuts the graph: no gradient "
                     "reaches w. Write a torch.autograd.Function whose forward returns q and whose "
                     "backward returns the incoming gradient for w."),
        "one_liner": (lambda w, q: w + (q - w).detach(),
                      "w + (q − w).detach() equals q only up to float round-off (see the cell in "
                      "the notebook): write a torch.autograd.Function whose forward returns q "
                      "itself and whose backward returns the gradient unchanged."),
        "latent": (lambda w, q: w * 1.0,
                   "the forward pass must use the quantized q, not the latent w."),
        "clipped": (lambda w, q: _STEVariant.apply(w, q, True),
                    "you zeroed the gradient where |w| > 1 (BinaryNet's clipped STE); this "
                    "exercise asks for the plain STE: dL/dw = dL/dq everywhere."),
    },
)


def check_ste(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``ste(w, q)``, the straight-through estimator (Bengio et al. 2013):

        forward: exactly q (the quantized weights);   backward: dL/dw = dL/dq

    ``w`` requires grad, ``q`` is detached. The check back-propagates a random gradient.
    """
    return check(STE, fn, verbose)
