"""Notebook 6 (deployment): 2-bit packing and the add-only matmul, each with its catalogue
of typical mistakes."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ..checking import (
    Case,
    Exercise,
    Fail,
    check,
    judge_tensor,
    tensor_problem,
)
from ..packing import pack
from ..ternary_matmul import ternary_matmul
from ._cases import _codes, _randn, _t


def _pack_cases() -> list[Case]:
    return [
        Case("the packing docstring's example", (_t([1, -1, 0, 1, -1], torch.int8),)),
        Case("four +1 codes fill one byte", (_t([1, 1, 1, 1], torch.int8),)),
        Case("eight −1 codes", (_t([-1] * 8, torch.int8),)),
        Case("all zeros", (torch.zeros(7, dtype=torch.int8),)),
        Case("a single code", (_t([-1], torch.int8),)),
        Case("no codes at all", (torch.zeros(0, dtype=torch.int8),)),
        Case("2-D codes are read row by row", (_codes(91, 3, 5),)),
        Case("a conv weight's codes (4-D)", (_codes(92, 4, 3, 3, 3),)),
        Case("random codes", (_codes(93, 1001),)),
    ]


def _pack_variant(digit: Callable[[Tensor], Tensor] = lambda c: c % 3, msb_first: bool = False,
                  pad: bool = True, per_row: bool = False, columns: bool = False) -> Callable:
    def pack_2bit(codes: Tensor) -> Tensor:
        if per_row and codes.dim() > 1:
            return torch.cat([pack_2bit(row) for row in codes.reshape(codes.shape[0], -1)])
        c = codes.t() if columns and codes.dim() == 2 else codes
        d = digit(c.flatten().long())
        d = torch.cat([d, d.new_zeros((-d.numel()) % 4)]) if pad else d[: d.numel() // 4 * 4]
        shifts = torch.tensor([6, 4, 2, 0] if msb_first else [0, 2, 4, 6])
        return (d.reshape(-1, 4) << shifts).sum(1).to(torch.uint8)

    return pack_2bit


PACK_2BIT = Exercise(
    name="pack_2bit",
    signature="pack_2bit(codes)",
    cases=_pack_cases,
    reference=lambda codes: pack(codes, "2bit"),
    judge=judge_tensor(),
    mistakes={
        "msb_first": (_pack_variant(msb_first=True),
                      "the first code goes in the lowest two bits: byte = d0 | d1 << 2 | d2 << 4 | "
                      "d3 << 6."),
        "twos_complement": (_pack_variant(digit=lambda c: c & 3),
                            "−1 is stored as the digit 2 (d = T mod 3: 0 → 0, +1 → 1, −1 → 2); "
                            "the 2-bit value 3 is invalid."),
        "offset": (_pack_variant(digit=lambda c: c + 1),
                   "store d = T mod 3 (0 → 0, +1 → 1, −1 → 2), so that a zero weight is zero "
                   "bits; you stored T + 1."),
        "no_padding": (_pack_variant(pad=False),
                       "pad the last byte: ceil(n / 4) bytes, the unused 2-bit fields set to 0; "
                       "you dropped the last codes."),
        "per_row": (_pack_variant(per_row=True),
                    "flatten the codes first (codes.flatten(), row-major) and pad only once, "
                    "at the very end, not after every row."),
        "column_major": (_pack_variant(columns=True),
                         "read the codes row by row (codes.flatten(), row-major order), not "
                         "column by column."),
    },
)


def check_pack_2bit(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``pack_2bit(codes)`` packs ternary codes T ∈ {−1, 0, +1} (int8, any shape,
    read row-major) into a 1-D uint8 tensor of ceil(n/4) bytes, the layout of
    ``ttqlab.packing.pack(codes, "2bit")``:

        d = T mod 3  (0 → 0, +1 → 1, −1 → 2),   byte = d0 | d1 << 2 | d2 << 4 | d3 << 6

    the first code in the lowest bits, the last byte padded with zero digits.
    """
    return check(PACK_2BIT, fn, verbose)


class _OpCounter(TorchFunctionMode):
    """Records the torch calls a function makes: dense products and multiplications."""

    DENSE = frozenset({"matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "mv", "dot", "vdot",
                       "inner", "einsum", "tensordot", "linear", "bilinear", "addmm", "addmv",
                       "addbmm", "baddbmm", "conv1d", "conv2d", "chain_matmul", "multi_dot"})
    MULTIPLY = frozenset({"mul", "mul_", "multiply", "__mul__", "__rmul__", "__imul__", "outer",
                          "kron", "addcmul", "prod"})

    def __init__(self):
        super().__init__()
        self.dense: set[str] = set()
        self.multiplications = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name in self.DENSE:
            self.dense.add(name.strip("_"))
        elif name in self.MULTIPLY and isinstance(out, Tensor):
            self.multiplications += out.numel()
        return out


def _observe_add_only(fn: Callable, case: Case, args: tuple, kwargs: dict) -> tuple:
    """(y, the dense products used, whether it multiplied more than twice per output)."""
    x, codes = args[0], args[1]
    with _OpCounter() as ops:
        y = fn(*args, **kwargs)
    outputs = (x.shape[0] if x.dim() == 2 else 1) * codes.shape[0]
    return y, sorted(ops.dense), ops.multiplications > 2 * outputs


def _judge_add_only(expected: tuple, got: tuple, case: Case) -> Fail | None:
    problem = tensor_problem(expected[0], got[0], rtol=1e-4, atol=1e-5)
    if problem:
        return Fail(problem, 0)
    if got[1]:
        return Fail(f"the values are right, but you computed them with {', '.join(got[1])}, a "
                    f"dense product that multiplies every weight", 1)
    if got[2]:
        return Fail("the values are right, but your code multiplies more than twice per output "
                    "(W_p·S₊ and W_n·S₋ are all you need)", 2)
    return None


def _add_only_variant(kind: str) -> Callable:
    def matmul(x, codes, wp, wn):
        pos, neg = (codes == 1).to(x.dtype), (codes == -1).to(x.dtype)
        if kind == "dense":
            return x @ (wp * pos - wn * neg).T
        if kind == "mask_multiply":
            return (wp * (x[:, None, :] * pos).sum(-1) - wn * (x[:, None, :] * neg).sum(-1))
        s_pos = torch.stack([x[:, row == 1].sum(1) for row in codes], dim=1)
        s_neg = torch.stack([x[:, row == -1].sum(1) for row in codes], dim=1)
        return {"plus": lambda: wp * s_pos + wn * s_neg,
                "swapped": lambda: wn * s_pos - wp * s_neg,
                "no_scales": lambda: s_pos - s_neg,
                "transposed": lambda: (wp * s_pos - wn * s_neg).T}[kind]()

    return matmul


def _add_only_cases() -> list[Case]:
    return [
        Case("two inputs, three outputs",
             (_t([[1.0, 2.0, 3.0, 4.0, 5.0], [-1.0, 0.5, 2.0, 0.0, 1.0]]),
              _t([[1, 0, -1, 0, 1], [0, 0, 0, 0, 0], [-1, -1, 1, 1, 0]], torch.int8), 0.7, 0.5)),
        Case("all-zero codes", (_randn(101, 3, 6), torch.zeros(4, 6, dtype=torch.int8), 1.2, 0.8)),
        Case("a single input (B = 1)", (_randn(102, 1, 8), _codes(103, 2, 8), 0.3, 0.9)),
        Case("one output (N = 1)", (_randn(104, 5, 7), _codes(105, 1, 7), 1.0, 2.0)),
        Case("a random layer", (_randn(106, 4, 64), _codes(107, 16, 64), 0.05, 0.03)),
    ]


ADD_ONLY_MATMUL = Exercise(
    name="add_only_matmul",
    signature="add_only_matmul(x, codes, wp, wn)",
    cases=_add_only_cases,
    reference=lambda x, codes, wp, wn: ternary_matmul(x, codes, {"wp": wp, "wn": wn})[0],
    judge=_judge_add_only,
    observe=_observe_add_only,
    key=lambda obs, case: (obs[0], bool(obs[1]), obs[2]),
    mistakes={
        "dense": (_add_only_variant("dense"),
                  "use only additions and subtractions inside the sums: for each output n, add "
                  "up the inputs where T[n] = +1 and where T[n] = −1 (x[:, codes[n] == 1].sum(1)), "
                  "then multiply by W_p and W_n once."),
        "mask_multiply": (_add_only_variant("mask_multiply"),
                          "multiplying by a 0/1 mask is still one multiplication per weight: "
                          "select the inputs instead (x[:, codes[n] == 1]) and add them."),
        "plus": (_add_only_variant("plus"), "the −1 codes subtract: y = W_p·S₊ − W_n·S₋."),
        "swapped": (_add_only_variant("swapped"),
                    "W_p goes with the +1 codes (S₊) and W_n with the −1 codes (S₋)."),
        "no_scales": (_add_only_variant("no_scales"),
                      "multiply the two sums by the scales: y = W_p·S₊ − W_n·S₋."),
        "transposed": (_add_only_variant("transposed"),
                       "y = x Wᵀ has shape (B, N): one row per input, one column per output."),
    },
)


def check_add_only_matmul(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``add_only_matmul(x, codes, wp, wn)`` returns y = x Wᵀ, shape (B, N), for the
    ternary weights W = W_p·[T = +1] − W_n·[T = −1] (x: (B, K) floats, codes T: (N, K)
    int8, W_p and W_n numbers) using only additions and subtractions inside the sums:

        y[b, n] = W_p · Σ_{k: T[n,k] = +1} x[b, k]  −  W_n · Σ_{k: T[n,k] = −1} x[b, k]

    The check counts the torch operations: no matrix product, at most 2 multiplications per
    output.
    """
    return check(ADD_ONLY_MATMUL, fn, verbose)
