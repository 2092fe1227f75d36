"""Notebook 3 (TTQ): the backward pass of the trained ternary quantizer and its catalogue of
typical mistakes."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import quantizers as Q
from ..checking import (
    Case,
    Exercise,
    check,
    judge_tuple,
)
from ._cases import _randn, _t


def _ttq_reference(w: Tensor, wp: Tensor, wn: Tensor, delta: Tensor, g: Tensor) -> tuple:
    """ttqlab's autograd Function for TTQ, differentiated for the incoming gradient g."""
    w, wp, wn = (v.detach().clone().requires_grad_(True) for v in (w, wp, wn))
    with torch.enable_grad():
        Q._TTQFunction.apply(w, wp, wn, delta, "sum").backward(g)
    return w.grad, wp.grad, wn.grad


def _ttq_cases() -> list[Case]:
    conv, rand = _randn(51, 4, 3, 3, 3, scale=0.1), _randn(52, 500, scale=0.05)
    return [
        Case("the notebook's example", (_t([-0.8, -0.3, -0.01, 0.02, 0.4, 0.9]), _t(0.7),
                                        _t(0.5), _t(0.045), _t([1.0, -2.0, 3.0, 4.0, -5.0, 2.0]))),
        Case("ties: |w| = Δ is in the zero region", (_t([0.5, -0.5, 0.25, 1.0, -1.0, -0.75]),
             _t(1.5), _t(0.5), _t(0.5), _t([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))),
        Case("every weight in the zero region", (_t([0.1, -0.2, 0.05]), _t(1.0), _t(1.0),
                                                 _t(0.5), _t([1.0, -1.0, 2.0]))),
        Case("a single element", (_t([-0.7]), _t(1.2), _t(0.8), _t(0.1), _t([2.0]))),
        Case("a conv weight (4-D)", (conv, _t(1.3), _t(0.6), 0.05 * conv.abs().max(),
                                     _randn(53, *conv.shape))),
        Case("random weights", (rand, _t(0.04), _t(0.03), 0.05 * rand.abs().max(),
                                _randn(54, 500))),
    ]


def _ttq_variant(sign: float = -1.0, reduce: str = "sum", latent: str = "scaled",
                 ge: bool = False, region_only: bool = True) -> Callable:
    def grads(w, wp, wn, delta, g):
        pos, neg = (w >= delta, w <= -delta) if ge else (w > delta, w < -delta)
        gp = g[pos].sum() if region_only else g.sum()
        gn = sign * g[neg].sum()
        if reduce == "mean":
            gp, gn = gp / pos.sum().clamp(min=1), gn / neg.sum().clamp(min=1)
        scale_p, scale_n, middle = {"scaled": (wp, wn, 1.0), "plain": (1.0, 1.0, 1.0),
                                    "swapped": (wn, wp, 1.0), "cut": (wp, wn, 0.0),
                                    "minus": (wp, -wn, 1.0)}[latent]
        gw = torch.where(pos, scale_p * g, torch.where(neg, scale_n * g, middle * g))
        return gw, gp, gn

    return grads


TTQ_BACKWARD = Exercise(
    name="ttq_backward",
    signature="ttq_backward(w, wp, wn, delta, g)",
    cases=_ttq_cases,
    reference=_ttq_reference,
    judge=judge_tuple(("dL/dw", "dL/dW_p", "dL/dW_n"), rtol=1e-4, atol=1e-6),
    mistakes={
        "no_minus": (_ttq_variant(sign=1.0),
                     "your W_n gradient has the wrong sign: w_t = −W_n where w < −Δ, so "
                     "dL/dW_n = −Σ g_i over that region (the paper's Eq. 7 drops this minus; "
                     "the chain rule needs it)."),
        "mean": (_ttq_variant(reduce="mean"),
                 "you averaged instead of summing: dL/dW_p = Σ_{w_i > Δ} g_i and dL/dW_n = "
                 "−Σ_{w_i < −Δ} g_i are sums over each region, as in the authors' code."),
        "all_weights": (_ttq_variant(region_only=False),
                        "dL/dW_p sums g only over the positive region {i : w_i > Δ}, not over "
                        "all weights."),
        "plain_ste": (_ttq_variant(latent="plain"),
                      "you passed g through unchanged: TTQ scales the latent gradient by W_p "
                      "where w > Δ and by W_n where w < −Δ (by 1 in between)."),
        "swapped": (_ttq_variant(latent="swapped"),
                    "you swapped the scales: W_p multiplies the gradient where w > Δ, W_n where "
                    "w < −Δ."),
        "cut_middle": (_ttq_variant(latent="cut"),
                       "the zero region |w| ≤ Δ passes the gradient unchanged (factor 1); you "
                       "set it to 0."),
        "minus_wn": (_ttq_variant(latent="minus"),
                     "the latent gradient where w < −Δ is W_n · g_i, a positive multiplier, "
                     "not −W_n · g_i."),
        "ge": (_ttq_variant(ge=True),
               "|w| = Δ belongs to the zero region: use w > Δ and w < −Δ, not >= and <=."),
    },
)


def check_ttq_backward(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``ttq_backward(w, wp, wn, delta, g)`` returns TTQ's gradients (Zhu et al.,
    authors' code) as a tuple ``(dL/dw, dL/dW_p, dL/dW_n)``, given the latent weights w,
    the scales W_p, W_n and the threshold Δ (0-d tensors), and g = dL/dw_t:

        dL/dW_p =  Σ_{i: w_i > Δ} g_i,     dL/dW_n = −Σ_{i: w_i < −Δ} g_i,
        dL/dw_i = W_p g_i (w_i > Δ),  g_i (|w_i| ≤ Δ),  W_n g_i (w_i < −Δ).
    """
    return check(TTQ_BACKWARD, fn, verbose)
