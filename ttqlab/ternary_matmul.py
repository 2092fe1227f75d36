"""Ternary inference by hand: a matrix multiply made of additions and subtractions.

With ternary weights ``W[n, k] = W_p`` (code +1), ``0`` or ``-W_n`` (code -1) the
product ``y = x @ W^T`` needs no multiplication inside the sums:

    y[b, n] = W_p * sum_{k: T[n,k] = +1} x[b, k]  -  W_n * sum_{k: T[n,k] = -1} x[b, k]

TWN and the binary baseline have one scale (W_p = W_n = alpha), so that is
``alpha * (S+ - S-)``: one multiplication per output instead of one per weight, and
the zero weights (often half of them) cost nothing at all. That is why ternary
hardware wins: an adder is much cheaper than a multiplier (45 nm, 32-bit float: 0.9 pJ
per addition vs 3.7 pJ per multiplication; Horowitz, ISSCC 2014), skipped zeros are
free, and a 2-bit weight is 16x less memory traffic than a 32-bit one.

This module is a teaching reference, honest about speed: in Python on a CPU it is
far *slower* than the dense ``x @ w.T``, which BLAS runs as fused multiply-adds on
SIMD units where a multiplication costs the same as an addition. It exists to check
the identity above against the dense result and to count the operations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .validation import check_int

__all__ = ["OpCounts", "ternary_conv2d", "ternary_matmul"]


@dataclass(frozen=True)
class OpCounts:
    """Arithmetic operations of one ternary product next to the dense one.

    Convention: every sum starts from zero, so a dense dot product of length K is K
    multiplications and K additions, and a ternary one is one addition per non-zero
    weight, then one subtraction and one (TWN, binary) or two (TTQ) multiplications.
    """

    additions: int = 0
    subtractions: int = 0
    multiplications: int = 0
    zeros_skipped: int = 0
    dense_multiplications: int = 0
    dense_additions: int = 0

    @property
    def multiplications_saved(self) -> int:
        return self.dense_multiplications - self.multiplications

    @property
    def dense_total(self) -> int:
        return self.dense_multiplications + self.dense_additions

    @property
    def total(self) -> int:
        return self.additions + self.subtractions + self.multiplications

    def __add__(self, other: OpCounts) -> OpCounts:
        """Sum the counts of several layers: ``sum(counts, OpCounts())``."""
        return OpCounts(*(a + b for a, b in zip(self._values(), other._values())))

    def _values(self) -> tuple[int, ...]:
        return (self.additions, self.subtractions, self.multiplications, self.zeros_skipped,
                self.dense_multiplications, self.dense_additions)

    def __str__(self) -> str:
        saved = self.multiplications_saved / self.dense_multiplications \
            if self.dense_multiplications else 0.0
        return (f"ternary: {self.additions:,} additions, {self.subtractions:,} subtractions, "
                f"{self.multiplications:,} multiplications ({self.zeros_skipped:,} zero "
                f"weights skipped)\n"
                f"dense:   {self.dense_additions:,} additions, "
                f"{self.dense_multiplications:,} multiplications\n"
                f"saved:   {self.multiplications_saved:,} multiplications ({saved:.2%}); "
                f"{self.total:,} operations instead of {self.dense_total:,}")


def _scale_rows(v, n: int, x: Tensor, name: str) -> Tensor:
    """A scale (number, 0-d, (N,) or (N, 1, ...)) as one value per output row."""
    t = torch.as_tensor(v, dtype=x.dtype, device=x.device).reshape(-1)
    if t.numel() not in (1, n):
        raise ValueError(f"{name} must be one number or one per output row ({n}), got "
                         f"{t.numel()} values")
    return t.expand(n)


def _scales(scales, n: int, x: Tensor) -> tuple[Tensor, Tensor, bool]:
    """(W_p per row, W_n per row, whether there are two scales)."""
    if isinstance(scales, Mapping):
        if "wp" in scales and "wn" in scales:
            return (_scale_rows(scales["wp"], n, x, "wp"), _scale_rows(scales["wn"], n, x, "wn"),
                    True)
        for key in ("alpha", "gamma"):  # TWN / binary, BitNet b1.58
            if key in scales:
                alpha = _scale_rows(scales[key], n, x, key)
                return alpha, alpha, False
        raise ValueError(f"scales must have 'alpha' (TWN, binary) or 'wp' and 'wn' (TTQ), got "
                         f"keys {sorted(scales)}; INQ's powers of two are not ternary")
    alpha = _scale_rows(scales, n, x, "alpha")
    return alpha, alpha, False


def ternary_matmul(x: Tensor, codes: Tensor, scales) -> tuple[Tensor, OpCounts]:
    """``y = x @ W^T`` for ternary ``W`` using only additions and subtractions inside the
    sums: ``y[b, n] = W_p * S+[b, n] - W_n * S-[b, n]`` with ``S+`` (``S-``) the sum of
    the inputs ``x[b, k]`` where ``T[n, k] = +1`` (-1). Zero weights are skipped.

    Args:
        x: inputs, shape ``(B, K)`` (or ``(K,)``).
        codes: ternary codes ``T`` in {-1, 0, +1}, shape ``(N, K)`` (binary {-1, +1}
            works too), e.g. ``ttqlab.extract(model)[layer].codes``.
        scales: ``alpha`` (a number, or one per output row) for TWN / binary, or a dict
            as ``ttqlab.extract`` gives: ``{"alpha": ...}`` or ``{"wp": ..., "wn": ...}``.

    Returns:
        ``(y, counts)``: ``y`` of shape ``(B, N)`` (or ``(N,)``) equal to the dense
        ``x @ W^T`` up to float round-off (the additions happen in another order), and
        the :class:`OpCounts`. Slow by design (a Python loop over output rows): this
        is for reading and counting, never for speed.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() not in (1, 2):
        raise ValueError("x must be a float tensor of shape (B, K) or (K,)")
    if not isinstance(codes, Tensor) or codes.is_floating_point() or codes.dim() != 2:
        raise ValueError("codes must be an integer tensor of shape (N, K) with values in "
                         "{-1, 0, +1}; reshape conv codes with codes.reshape(N, -1)")
    vector = x.dim() == 1
    x2 = x.reshape(1, -1) if vector else x
    b, k = x2.shape
    n = codes.shape[0]
    if codes.shape[1] != k:
        raise ValueError(f"x has {k} features but codes have {codes.shape[1]} columns")
    if bool(((codes < -1) | (codes > 1)).any()):
        raise ValueError("codes must be ternary, in {-1, 0, +1}")
    wp, wn, two = _scales(scales, n, x2)
    y = x2.new_empty(b, n)
    for row in range(n):
        pos = (codes[row] == 1).nonzero().flatten()
        neg = (codes[row] == -1).nonzero().flatten()
        s_pos = x2[:, pos].sum(dim=1)  # additions only
        s_neg = x2[:, neg].sum(dim=1)
        y[:, row] = wp[row] * s_pos - wn[row] * s_neg if two else wp[row] * (s_pos - s_neg)
    nonzero = int((codes != 0).sum())
    counts = OpCounts(additions=b * nonzero, subtractions=b * n,
                      multiplications=b * n * (2 if two else 1),
                      zeros_skipped=b * (n * k - nonzero),
                      dense_multiplications=b * n * k, dense_additions=b * n * k)
    return (y.reshape(n) if vector else y), counts


def _shape(t) -> str:
    return f"shape {tuple(t.shape)}" if isinstance(t, Tensor) else f"a {type(t).__name__}"


def ternary_conv2d(x: Tensor, codes: Tensor, scales, stride: int = 1,
                   padding: int = 0) -> tuple[Tensor, OpCounts]:
    """A 2-D convolution (no bias) with ternary weights, as :func:`ternary_matmul` over
    the unfolded input patches (``torch.nn.functional.unfold``): each output pixel is
    a dot product of a ``C*kh*kw`` patch with each filter.

    ``x``: ``(B, C, H, W)``; ``codes``: ``(N, C, kh, kw)``. Returns ``(y, counts)``
    with ``y`` equal to ``F.conv2d(x, W, stride=stride, padding=padding)`` up to
    float round-off. ``stride`` is an int >= 1, ``padding`` an int >= 0 (zeros on each side).
    """
    stride = check_int("stride", stride, low=1, hint="as F.conv2d takes it, e.g. 1")
    padding = check_int("padding", padding, low=0, hint="zeros added on each side, e.g. 0")
    if not isinstance(x, Tensor) or not isinstance(codes, Tensor) or x.dim() != 4 \
            or codes.dim() != 4:
        raise ValueError(f"x must be a (B, C, H, W) tensor and codes an (N, C, kh, kw) one, "
                         f"got {_shape(x)} and {_shape(codes)}")
    bsz, _, h, w = x.shape
    n, _, kh, kw = codes.shape
    patches = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # (B, C*kh*kw, L)
    cols = patches.transpose(1, 2).reshape(-1, patches.shape[1])
    y, counts = ternary_matmul(cols, codes.reshape(n, -1), scales)
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (w + 2 * padding - kw) // stride + 1
    return y.reshape(bsz, ho * wo, n).transpose(1, 2).reshape(bsz, n, ho, wo), counts
