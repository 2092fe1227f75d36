import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ttqlab import packing
from ttqlab.export import _scheme
from ttqlab.packing import BASE3_TABLE, nbytes, pack, unpack
from ttqlab.stats import packed_nbytes

# (scheme, bits, valid code values)
SCHEMES = [
    ("binary", None, [-1, 1]),
    ("2bit", None, [-1, 0, 1]),
    ("base3", None, [-1, 0, 1]),
    ("pow2", 3, list(range(-2, 3))),
    ("pow2", 5, list(range(-8, 9))),
    ("pow2", 8, list(range(-64, 65))),
]
IDS = [f"{s}{b or ''}" for s, b, _ in SCHEMES]


@st.composite
def codes_for(draw, values):
    n = draw(st.integers(0, 103))  # empty, single, and sizes not divisible by 4, 5 or 8
    return torch.tensor(draw(st.lists(st.sampled_from(values), min_size=n, max_size=n)),
                        dtype=torch.int8)


def test_documented_layouts():
    """The byte layouts promised in the module docstring (the file format's contract)."""
    c = torch.tensor([1, -1, 0, 1, -1], dtype=torch.int8)
    assert pack(c, "2bit").tolist() == [1 + 2 * 4 + 0 * 16 + 1 * 64, 2]
    assert pack(c, "base3").tolist() == [1 + 2 * 3 + 0 * 9 + 1 * 27 + 2 * 81]
    assert pack(torch.tensor([1, -1, -1, 1, 1, 1, 1, 1, -1]), "binary").tolist() == [
        0b11111001, 0]
    # pow2, bits=5: field = sign << 4 | index, so -8 -> 24 (bits 0-4) and +8 -> 8 (bits 5-9:
    # its set bit 3 is bit 8 of the stream, bit 0 of the second byte)
    assert pack(torch.tensor([-8, 8]), "pow2", 5).tolist() == [24, 1]


def test_base3_table_inverts_packing():
    digits = BASE3_TABLE.astype(np.int64)
    assert BASE3_TABLE.shape == (243, 5) and set(np.unique(BASE3_TABLE)) == {0, 1, 2}
    assert np.array_equal(digits @ 3 ** np.arange(5), np.arange(243))


@pytest.mark.parametrize(("scheme", "bits", "values"), SCHEMES, ids=IDS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip(scheme, bits, values, data):
    codes = data.draw(codes_for(values))
    packed = pack(codes, scheme, bits)
    assert packed.dtype == torch.uint8 and packed.dim() == 1
    assert packed.numel() == nbytes(codes.numel(), scheme, bits)
    out = unpack(packed, codes.numel(), scheme, bits)
    assert out.dtype == torch.int8 and torch.equal(out, codes)


@pytest.mark.parametrize(("scheme", "bits", "values"), SCHEMES, ids=IDS)
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_any_accepted_bytes_are_canonical(scheme, bits, values, data):
    """Random bytes of the right length either raise ValueError or decode to codes that
    pack back to exactly those bytes: no corrupt byte string passes as another model."""
    n = data.draw(st.integers(0, 40))
    size = nbytes(n, scheme, bits)
    raw = data.draw(st.binary(min_size=size, max_size=size))
    try:
        codes = unpack(raw, n, scheme, bits)
    except ValueError:
        return
    assert set(codes.tolist()) <= set(values)
    assert pack(codes, scheme, bits).numpy().tobytes() == raw


@given(n=st.integers(0, 10_000), bits=st.integers(2, 8))
def test_sizes_agree_with_layer_report(n, bits):
    """ttqlab.stats.packed_nbytes (what layer_report shows) is what export writes."""
    for method, b in [("binary", 1), ("twn", 2), ("ttq", 2), ("inq", bits)]:
        for p in ("2bit", "base3"):
            scheme, sbits = _scheme(method, b, p)
            assert nbytes(n, scheme, sbits) == packed_nbytes(n, method, b, p)
    assert nbytes(5 * n, "base3") == n  # 1.6 bits per weight
    assert nbytes(n, "2bit") == math.ceil(n / 4)


def test_pack_rejects_invalid_codes():
    with pytest.raises(ValueError, match=r"ternary, in \{-1, 0, \+1\}; found \[2\]"):
        pack(torch.tensor([0, 2, 1]), "base3")
    with pytest.raises(ValueError, match="binary"):
        pack(torch.tensor([1, 0]), "binary")
    with pytest.raises(ValueError, match=r"\[-8, 8\] for bits=5"):
        pack(torch.tensor([9]), "pow2", 5)
    with pytest.raises(TypeError, match="integer"):
        pack(torch.tensor([0.0, 1.0]), "2bit")
    with pytest.raises(ValueError, match=r"bits must be .*>= 3 and <= 8, got 2 \(int\); .*"
                                         r"2-bit INQ codes are ternary"):
        pack(torch.tensor([1]), "pow2", 2)
    for bits in (True, 4.0, None):  # a bool, a float and nothing are not a bit width
        with pytest.raises(ValueError, match=rf"bits must be .*, got {bits}"):
            pack(torch.tensor([1]), "pow2", bits)
    with pytest.raises(ValueError, match=r"scheme must be one of '2bit', 'base3', 'binary', "
                                         r"'pow2'; got '3bit' \(str\)"):
        pack(torch.tensor([1]), "3bit")
    with pytest.raises(ValueError, match=r"scheme must be one of .*got \['2bit'\] \(list\)"):
        pack(torch.tensor([1]), ["2bit"])  # unhashable: refused, not a TypeError


def _u8(values):
    return torch.tensor(values, dtype=torch.uint8)


@pytest.mark.parametrize(("data", "n", "scheme", "bits", "match"), [
    (_u8([1, 2]), 5, "base3", None, "expected 1 bytes"),  # too long
    (_u8([]), 1, "2bit", None, "expected 1 bytes"),  # truncated
    (_u8([243]), 5, "base3", None, "below 243"),
    (_u8([0b11]), 4, "2bit", None, "code 3"),
    (_u8([0b01000000]), 3, "2bit", None, "padding"),
    (_u8([0b10000000]), 7, "binary", None, "padding"),
    (_u8([2 * 81]), 4, "base3", None, "padding"),
    (_u8([9]), 1, "pow2", 5, "index 9 is out of range"),
    (_u8([16]), 1, "pow2", 5, "negative zero"),
    (torch.tensor([1], dtype=torch.int8), 4, "2bit", None, "uint8"),
], ids=["long", "short", "base3-243", "2bit-3", "pad-2bit", "pad-binary", "pad-base3",
        "inq-range", "inq-neg-zero", "dtype"])
def test_unpack_rejects_corrupt_data(data, n, scheme, bits, match):
    with pytest.raises(ValueError, match=match):
        unpack(data, n, scheme, bits)


def test_nbytes_checks_its_arguments():
    for n in (-1, True, 2.0):
        with pytest.raises(ValueError, match=rf"n must be a whole number .*>= 0, got {n} "
                                             rf"\({type(n).__name__}\); n is a number of weights"):
            nbytes(n, "2bit")
    assert nbytes(np.int64(8), "2bit") == 2  # numpy's ints count
    assert packing.SCHEMES["2bit"] == 2
