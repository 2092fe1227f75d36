"""Bit packing: integer weight codes <-> bytes, the way ``ttqlab.export`` stores them.

Pure functions on flat code sequences (read in row-major order, ``codes.flatten()``).
Every ``unpack_*`` checks its input and raises ``ValueError`` naming what is wrong: a
wrong byte count, a code outside the valid range, or non-zero padding. These checks
catch only some damage: most flipped bits turn one valid code into another (a 2-bit
digit 1 into 0, a base-3 byte into another below 243, any binary bit), which no format
without redundancy can notice. ``ttqlab.export`` therefore stores a SHA-256 of every
tensor and verifies it before unpacking. Four schemes:

``"binary"``: 1 bit per weight, +1 -> 1, -1 -> 0. Eight weights per byte.

``"2bit"`` (ternary): each code T in {-1, 0, +1} becomes the digit ``d = T mod 3``
(0 -> 0, +1 -> 1, -1 -> 2, so a zero weight is zero bits), stored in 2 bits. Four
weights per byte, the first in the lowest bits: ``byte = d0 | d1 << 2 | d2 << 4 | d3 << 6``.
The 2-bit value 3 is invalid.

``"base3"`` (ternary): the same digits, five per byte as a base-3 number, the first
weight least significant: ``byte = d0 + 3 d1 + 9 d2 + 27 d3 + 81 d4``. 3^5 = 243 <= 256,
so this is 1.6 bits per weight, within 1% of the log2(3) = 1.585-bit limit. Unpacking
looks each byte up in a 243 x 5 table; bytes 243..255 are invalid.

``"pow2"`` (INQ, ``bits`` = 3..8): INQ's signed level index c (``ttqlab.extract``: the
weight is ``sign(c) * 2^(n2 + |c| - 1)``, 0 for c = 0, ``|c| <= 2^(bits-1) / 2``) in
sign-magnitude form, ``field = sign << (bits - 1) | |c|`` with sign = 1 for negative.
Larger indices and a "negative zero" (sign set, index 0) are invalid. (2-bit INQ is
ternary: ``ttqlab.export`` stores it with ``"2bit"`` or ``"base3"``.)

``"binary"``, ``"2bit"`` and ``"pow2"`` are one layout: a stream of ``bits``-bit fields,
least significant bit first, filling each byte from its lowest bit (``numpy.packbits``
with ``bitorder="little"``). The last byte is padded with zero bits (zero digits in
base 3), and unpacking rejects anything else there.

Example, codes ``[+1, -1, 0, +1, -1]``: digits ``[1, 2, 0, 1, 2]``; 2bit gives bytes
``[73, 2]`` (1 + 2*4 + 0*16 + 1*64 = 73, then 2); base3 gives ``[196]``
(1 + 2*3 + 0*9 + 1*27 + 2*81).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .validation import check_choice, check_int

__all__ = ["BASE3_TABLE", "SCHEMES", "nbytes", "pack", "pack_bits", "unpack", "unpack_bits"]

#: scheme -> bits per weight (None: given by the caller; base 3 packs 5 weights per byte)
SCHEMES: dict[str, int | None] = {"binary": 1, "2bit": 2, "base3": None, "pow2": None}

_POW3 = 3 ** np.arange(5, dtype=np.int64)
#: ``BASE3_TABLE[byte, i]`` is the i-th base-3 digit of ``byte`` (0 <= byte < 243)
BASE3_TABLE: np.ndarray = ((np.arange(243)[:, None] // _POW3) % 3).astype(np.uint8)
_DIGIT_TO_CODE = np.array([0, 1, -1], dtype=np.int8)  # ternary digit d -> code T


# --------------------------------------------------------------------------- helpers


def _bits_of(scheme: str, bits: int | None) -> int:
    check_choice("scheme", scheme, sorted(SCHEMES))
    if scheme == "pow2":
        return check_int("bits", bits, low=3, high=8,
                         hint="the pow2 scheme packs INQ codes of 3 to 8 bits; 2-bit INQ "
                              "codes are ternary: use '2bit' or 'base3'")
    return SCHEMES[scheme] or 0


def nbytes(n: int, scheme: str, bits: int | None = None) -> int:
    """Bytes that :func:`pack` writes for ``n`` codes: ``ceil(n * bits / 8)``, or
    ``ceil(n / 5)`` for base 3."""
    n = check_int("n", n, low=0, hint="n is a number of weights, e.g. weight.numel()")
    if scheme == "base3":
        return math.ceil(n / 5)
    return math.ceil(n * _bits_of(scheme, bits) / 8)


def _as_codes(codes: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(codes, Tensor):
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise TypeError(f"codes must be an integer tensor (int8, as ttqlab.extract "
                            f"returns), got {codes.dtype}")
        return codes.detach().cpu().reshape(-1).numpy().astype(np.int64)
    a = np.asarray(codes)
    if a.dtype.kind not in "iu":
        raise TypeError(f"codes must be integers, got dtype {a.dtype}")
    return a.reshape(-1).astype(np.int64)


def _as_bytes(data: Tensor | np.ndarray | bytes) -> np.ndarray:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(data), dtype=np.uint8)
    if isinstance(data, Tensor):
        if data.dtype != torch.uint8:
            raise ValueError(f"packed data must be uint8, got {data.dtype}")
        data = data.detach().cpu().numpy()
    a = np.asarray(data)
    if a.dtype != np.uint8:
        raise ValueError(f"packed data must be uint8, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"packed data must be one-dimensional, got shape {a.shape}")
    return a


def _check_values(codes: np.ndarray, allowed: str, ok: np.ndarray) -> None:
    if not ok.all():
        bad = np.unique(codes[~ok])[:5].tolist()
        raise ValueError(f"codes must be {allowed}; found {bad}")


# --------------------------------------------------------------------------- bit fields


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned ``bits``-bit fields (0 <= v < 2^bits), least significant bit first, into
    bytes filled from their lowest bit; the last byte is padded with zeros."""
    v = np.asarray(values, dtype=np.uint8).reshape(-1)
    fields = (v[:, None] >> np.arange(bits, dtype=np.uint8)) & 1  # (n, bits), LSB first
    return np.packbits(fields.reshape(-1), bitorder="little")


def unpack_bits(data: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``n`` fields as uint8. Raises ``ValueError`` if the
    byte count is not ``ceil(n * bits / 8)`` or a padding bit is set."""
    data = _as_bytes(data)
    expected = math.ceil(n * bits / 8)
    if data.size != expected:
        raise ValueError(f"expected {expected} bytes for {n} codes of {bits} bits, got "
                         f"{data.size} (truncated or wrong shape?)")
    stream = np.unpackbits(data, bitorder="little")
    if stream[n * bits:].any():
        raise ValueError("padding bits after the last code are not zero (corrupt data)")
    fields = stream[: n * bits].reshape(n, bits)
    return np.packbits(fields, axis=1, bitorder="little").reshape(n)


# --------------------------------------------------------------------------- schemes


def _ternary_digits(c: np.ndarray) -> np.ndarray:
    _check_values(c, "ternary, in {-1, 0, +1}", (c >= -1) & (c <= 1))
    return np.mod(c, 3).astype(np.uint8)  # 0 -> 0, +1 -> 1, -1 -> 2


def _pack_base3(d: np.ndarray) -> np.ndarray:
    padded = np.zeros(math.ceil(d.size / 5) * 5, dtype=np.int64)
    padded[: d.size] = d
    return (padded.reshape(-1, 5) @ _POW3).astype(np.uint8)


def _unpack_base3(data: np.ndarray, n: int) -> np.ndarray:
    if data.size and int(data.max()) >= 243:
        raise ValueError(f"base-3 bytes must be below 243 (3^5), found {int(data.max())} "
                         f"(corrupt data)")
    digits = BASE3_TABLE[data].reshape(-1)
    if digits[n:].any():
        raise ValueError("padding digits after the last code are not zero (corrupt data)")
    return digits[:n]


def pack(codes: Tensor | np.ndarray, scheme: str, bits: int | None = None) -> Tensor:
    """Pack integer weight codes (any shape, read row-major) into a 1-D uint8 tensor of
    :func:`nbytes` bytes. See the module docstring for each scheme's layout.

    codes: binary {-1, +1}; ``"2bit"`` / ``"base3"`` {-1, 0, +1}; ``"pow2"`` INQ's signed
    level index with ``|c| <= 2^(bits-1) / 2``.
    """
    width = _bits_of(scheme, bits)
    c = _as_codes(codes)
    if scheme == "binary":
        _check_values(c, "binary, in {-1, +1}", (c == -1) | (c == 1))
        out = pack_bits((c > 0).astype(np.uint8), 1)
    elif scheme == "2bit":
        out = pack_bits(_ternary_digits(c), 2)
    elif scheme == "base3":
        out = _pack_base3(_ternary_digits(c))
    else:
        top = 2 ** (width - 1) // 2
        _check_values(c, f"INQ level indices in [-{top}, {top}] for bits={width}",
                      np.abs(c) <= top)
        out = pack_bits(((c < 0).astype(np.uint8) << (width - 1)) | np.abs(c), width)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.uint8))


def unpack(data: Tensor | np.ndarray | bytes, n: int, scheme: str,
           bits: int | None = None) -> Tensor:
    """Inverse of :func:`pack`: ``n`` codes as a 1-D int8 tensor (reshape it yourself).

    Raises ``ValueError`` for a byte count other than ``nbytes(n, scheme, bits)``, a
    code outside the scheme's range, or non-zero padding.
    """
    width = _bits_of(scheme, bits)
    size = nbytes(n, scheme, bits)  # also checks n
    raw = _as_bytes(data)
    if raw.size != size:
        raise ValueError(f"expected {size} bytes for {n} codes packed as {scheme!r}, got "
                         f"{raw.size} (truncated or wrong shape?)")
    if scheme == "base3":
        digits = _unpack_base3(raw, n)
    else:
        digits = unpack_bits(raw, width, n)
    if scheme == "binary":
        codes = np.where(digits > 0, 1, -1).astype(np.int8)
    elif scheme in ("2bit", "base3"):
        if (digits == 3).any():
            raise ValueError("2-bit code 3 is not a ternary digit (valid: 0, 1, 2) "
                             "(corrupt data)")
        codes = _DIGIT_TO_CODE[digits]
    else:
        sign, index = digits >> (width - 1), digits & ((1 << (width - 1)) - 1)
        top = 2 ** (width - 1) // 2
        if (index > top).any():
            raise ValueError(f"INQ level index {int(index.max())} is out of range for "
                             f"bits={width} (at most {top}) (corrupt data)")
        if (sign.astype(bool) & (index == 0)).any():
            raise ValueError("INQ code with the sign bit set and index 0 (negative zero) "
                             "is invalid (corrupt data)")
        codes = np.where(sign > 0, -index.astype(np.int8), index.astype(np.int8))
    return torch.from_numpy(np.ascontiguousarray(codes, dtype=np.int8))
