"""Notebook 9 (your own model): the payload of a packed model file, counted from the layer
shapes, with its catalogue of typical mistakes.

The cases are built from ``ttqlab.models`` (the check cannot see a notebook's own model):
TTQ-quantized MLPs, 1-D CNNs and LeNet-5s, with and without BatchNorm, in both packings,
with layers whose number of weights is a multiple of neither 4 nor 5."""

from __future__ import annotations

import copy
import math
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .. import models
from ..checking import Case, Exercise, Fail, check, fmt, kind_of
from ..convert import quantize

#: the modules a student's payload_bytes may not call: they write or size the file
EXPORT_ANSWERS = ("ttqlab.export", "ttqlab.stats", "ttqlab.packing")

_PER_BYTE = {"base3": 5, "2bit": 4}


def _model(build: Callable[[], nn.Module], **options: Any) -> nn.Module:
    return quantize(build(), "ttq", **options).eval()


def _payload_cases() -> list[Case]:
    def mlp(seed, **kw):
        return _model(lambda: models.mlp(input_shape=(1, 3), hidden=(7, 9), seed=seed, **kw),
                      keep_first_last=False)

    small_cnn = _model(lambda: models.cnn1d(channels=6, seed=3))
    return [
        Case("an MLP 3-7-9-10 with BatchNorm, all 3 layers ternary (21, 63, 90 weights), base3",
             (mlp(1), "base3")),
        Case("the same MLP, 2bit", (mlp(1), "2bit")),
        Case("an MLP without BatchNorm (biases only), base3",
             (mlp(2, batch_norm=False), "base3")),
        Case("cnn1d(channels=6) with BatchNorm, first and last layer fp32, base3",
             (small_cnn, "base3")),
        Case("cnn1d(channels=6) without BatchNorm, 2bit",
             (_model(lambda: models.cnn1d(channels=6, batch_norm=False, seed=4)), "2bit")),
        Case("lenet5(width=0.25) on 1x16x16, every layer ternary, 2bit",
             (_model(lambda: models.lenet5(input_shape=(1, 16, 16), width=0.25, seed=5),
                     keep_first_last=False), "2bit")),
    ]


def _measured(model: nn.Module, packing: str) -> int:
    """The payload of the file ``ttqlab.export.save`` writes: its size less the 8-byte
    header length and the JSON header."""
    from .. import export

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.ttq.safetensors"
        size = export.save(model, path, packing=packing)
        (header,) = struct.unpack("<Q", path.read_bytes()[:8])
    return size - 8 - header


def _count(model: nn.Module, packing: str, *, counters: bool = False, scales: bool = True,
           per_layer: bool = True, latent: bool = False, swapped: bool = False) -> int:
    """The payload counted by the rules, or with one of them broken (the mistakes)."""
    per_byte = _PER_BYTE[packing]
    if swapped:
        per_byte = 9 - per_byte
    sizes, rest = [], 0
    for key, t in model.state_dict().items():
        if ".parametrizations." in key:
            if key.endswith(".parametrizations.weight.original"):
                sizes.append(t.numel())
            if latent:
                rest += t.numel() * t.element_size()
        elif counters or not key.endswith("num_batches_tracked"):
            rest += t.numel() * t.element_size()
    codes = (sum(math.ceil(n / per_byte) for n in sizes) if per_layer
             else math.ceil(sum(sizes) / per_byte))
    return codes + (8 * len(sizes) if scales else 0) + rest


def _observe_payload(fn: Callable, case: Case, args: tuple, kwargs: dict) -> Any:
    model, *more = args
    return fn(copy.deepcopy(model), *more, **kwargs)  # the case's model stays as it is


def _as_int(got: Any) -> int | None:
    if isinstance(got, bool):
        return None
    if isinstance(got, Tensor) and got.numel() == 1 and not got.is_complex():
        got = got.item()
    try:
        value = float(got)
    except (TypeError, ValueError, OverflowError):
        return None
    return int(value) if math.isfinite(value) and value == int(value) else None


def _judge_payload(expected: int, got: Any, case: Case) -> Fail | None:
    value = _as_int(got)
    if value is None:
        why = "None: did you forget `return`?" if got is None else (
            f"{kind_of(got)}" + (f" ({fmt(got)})" if isinstance(got, (int, float)) else ""))
        return Fail(f"return the number of bytes as an int (e.g. int(total)); got {why}")
    if value != expected:
        return Fail(f"expected {expected:,} bytes, got {value:,} ({value - expected:+,})")
    return None


PAYLOAD_BYTES = Exercise(
    name="payload_bytes",
    signature="payload_bytes(model, packing)",
    cases=_payload_cases,
    reference=_measured,
    judge=_judge_payload,
    observe=_observe_payload,
    key=lambda obs, case: _as_int(obs),
    answers=EXPORT_ANSWERS,
    mistakes={
        "num_batches_tracked": (
            lambda m, p: _count(m, p, counters=True),
            "leave out BatchNorm's num_batches_tracked counters (8 bytes each, int64): "
            "training bookkeeping that the file does not store."),
        "no_scales": (
            lambda m, p: _count(m, p, scales=False),
            "add the two float32 scales of every quantized layer (W_p and W_n: 8 bytes per "
            "layer)."),
        "rounded_once": (
            lambda m, p: _count(m, p, per_layer=False),
            "every layer's codes start on a byte boundary: round up per layer, "
            "sum(ceil(n / 5)) (or / 4), not ceil(sum(n) / 5)."),
        "latent_weights": (
            lambda m, p: _count(m, p, latent=True),
            "the latent float weights (and the quantizer's entries, keys with "
            "'.parametrizations.') are not in the file: a quantized layer costs only its "
            "packed codes and its two scales."),
        "packing_swapped": (
            lambda m, p: _count(m, p, swapped=True),
            "use the packing argument: 'base3' stores 5 codes per byte (3^5 = 243 ≤ 256), "
            "'2bit' 4 codes per byte."),
    },
)


def check_payload_bytes(fn: Callable, *, verbose: bool = True) -> bool:
    """Task: ``payload_bytes(model, packing)`` returns the number of tensor bytes (the
    payload, without the 8-byte length and the JSON header) in the file that
    ``ttqlab.export.save(model, path, packing)`` writes for a TTQ-quantized model:

        Σ_quantized layers (ceil(n_l / 5) [base3] or ceil(n_l / 4) [2bit] + 2 · 4)
        + Σ_other state_dict tensors numel · element_size

    where n_l is a layer's number of weights, and the other tensors leave out BatchNorm's
    ``num_batches_tracked`` and every quantized layer's ``.parametrizations.`` entries
    (latent weights, quantizer state). The check compares with real files; a function
    that calls ``ttqlab.export`` (or ``ttqlab.packing``, ``ttqlab.stats``) is refused.
    """
    return check(PAYLOAD_BYTES, fn, verbose)
