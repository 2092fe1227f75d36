"""Packed model files: really ~16x (2-bit) or ~20x (base-3) smaller, safe to load.

    ttqlab.export.save(model, "model.ttq.safetensors", packing="base3")
    plain = ttqlab.export.load("model.ttq.safetensors")       # built-in models: file alone
    plain = ttqlab.export.load(path, MyNet())                  # your own architecture
    print(ttqlab.export.report(path))                          # bytes per layer, ratios

File layout: one `safetensors <https://github.com/huggingface/safetensors>`_ file (an
8-byte header length, a JSON header, then raw little-endian tensor bytes; no pickle, no
code). Its tensors:

* ``ttqlab.codes`` (uint8, 1-D): the packed codes of every quantized layer, concatenated
  in manifest order, each layer starting on a byte boundary. Ternary layers (twn, ttq,
  2-bit inq) use the file's ``packing`` (``"2bit"``: 4 weights per byte, ``"base3"``: 5
  per byte), binary layers 1 bit per weight, INQ layers ``bits`` bits of sign + level
  index; see ``ttqlab.packing`` for the bit layouts. (One tensor for all layers, because
  each safetensors tensor costs ~80 bytes of header, 17% of the 461 bytes of a 16x16x3x3
  conv layer in base 3.)
* ``ttqlab.scales`` (the model's float dtype, 1-D): each quantized layer's scales in
  manifest order: binary and twn ``alpha`` (one per output channel with
  ``per_channel``), ttq ``W_p, W_n``, inq none (its ``n1`` is in the manifest).
* every other ``state_dict`` entry under its own name, stored as it is: layers kept in
  full precision (first / last), biases, BatchNorm weights and running statistics.
  BatchNorm's ``num_batches_tracked`` counters are left out (training bookkeeping that
  inference never reads). The latent float weights of quantized layers are not stored:
  that is what makes the file small.

The manifest is JSON in the safetensors metadata under the key ``"ttqlab"``::

    {"format": "ttqlab", "version": 2, "ttqlab": "0.1.0", "packing": "base3",
     "architecture": {"name": "lenet5", "kwargs": {"input_shape": [1, 8, 8]}},  # or null
     "dtype": "float32",   # optional: the model's float dtype (absent: float32)
     "quantized": [{"method": "ttq",
                    "options": {"t": 0.05, "sparsity": null, "reduce": "sum", "init": "mean"},
                    "layers": {"conv2": [64, 32, 5, 5], "fc1": [512, 256]}},
                   {"method": "inq", "options": {"bits": 5},
                    "layers": {...}, "n1": {"conv2": -5, ...}}],
     "sha256": {"manifest": "9f2c...", "payload": "41d0...", "tensors": "8c3e01aa..."}}

Layers sharing a method and options form one group, so a model quantized in one call
pays for its options once. ``version`` is the format version (:data:`FORMAT_VERSION`);
a reader refuses files from a newer version and asks for an upgrade.

Integrity: ``sha256`` holds the SHA-256 of the manifest itself (canonical JSON without
the ``sha256`` field) and of the payload (the SHA-256 of the concatenated SHA-256s of
every tensor's dtype, shape and raw bytes, in name order), so any damaged byte, in the
codes, the scales, a float tensor or a number of the manifest such as INQ's ``n1``, is
detected on load (range checks alone miss most flips: a flipped code bit usually gives
another valid code). ``tensors`` holds the first 8 hex digits of each tensor's SHA-256,
concatenated in name order, so that the error names the damaged tensor at 8 bytes per
tensor (a full hash per tensor would make a ResNet-20 file 9% larger; this costs ~1%).
The checksums detect accidents (disk, transfer, editing), not a forger, who can
recompute them. Version-1 files (ttqlab 0.1, before checksums) still load, with a
warning, so that models saved earlier stay usable; their codes are still range-checked.
Re-save them to add the checksums.

``load`` also bounds memory and time before it builds a recorded architecture: the
manifest may nest at most :data:`MAX_DEPTH` levels, and the architecture is first built
on PyTorch's ``meta`` device (no storage, aborted once it registers far more tensors
than the file holds), then checked against every tensor's shape; only a file that
really contains the model's weights makes ``load`` allocate them.

``load`` validates the manifest, every tensor's dtype and length, and every code
(``ttqlab.packing`` rejects out-of-range codes and non-zero padding) before it builds or
touches any model, and raises :class:`FormatError` naming the layer or field at fault.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
import unicodedata
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import Tensor, nn

from . import activations, methods, models
from .convert import (
    METHODS,
    QuantizedWeight,
    bake,
    extract,
    quantizable_weights,
    quantized_layers,
    state_key,
)
from .packing import nbytes as packed_length
from .packing import pack as pack_codes
from .packing import unpack as unpack_codes
from .stats import PACKINGS, Table
from .validation import is_int

__all__ = ["FORMAT", "FORMAT_VERSION", "FormatError", "load", "onnx_session", "pack", "read",
           "report", "save", "size_report", "to_onnx", "unpack", "write"]

FORMAT = "ttqlab"
#: the file format version this ttqlab writes and the newest it reads
FORMAT_VERSION = 2
#: the deepest nesting of JSON objects / lists a manifest may have
MAX_DEPTH = 16
CODES, SCALES = "ttqlab.codes", "ttqlab.scales"
_METADATA_KEY = "ttqlab"
_SKIPPED = "num_batches_tracked"
#: the float dtypes a built-in model is rebuilt in (manifest field ``dtype``)
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
          "float64": torch.float64}


class FormatError(ValueError):
    """A packed file is truncated, tampered with, from a newer ttqlab, or does not fit
    the architecture it is loaded into. The message names the field or layer."""


# --------------------------------------------------------------------------- checksums


def _digest(tensor: Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and little-endian bytes (row-major)."""
    h = hashlib.sha256(f"{str(tensor.dtype).removeprefix('torch.')}{list(tensor.shape)}"
                       .encode())
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    if flat.numel():
        h.update(flat.view(torch.uint8).numpy())
    return h.hexdigest()


def _manifest_digest(manifest: Mapping) -> str:
    """SHA-256 of the manifest without its ``sha256`` field, as canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


_SHORT = 8  # hex digits of each tensor's SHA-256 kept to name a damaged tensor


def _payload(tensors: Mapping[str, Tensor]) -> tuple[list[str], list[str], str]:
    """Sorted tensor names, their SHA-256s and the payload's SHA-256."""
    names = sorted(tensors)
    digests = [_digest(tensors[k]) for k in names]
    return names, digests, hashlib.sha256("".join(digests).encode()).hexdigest()


def _checksums(tensors: Mapping[str, Tensor], manifest: Mapping) -> dict:
    _, digests, payload = _payload(tensors)
    return {"manifest": _manifest_digest(manifest), "payload": payload,
            "tensors": "".join(d[:_SHORT] for d in digests)}


def _verify(tensors: Mapping[str, Tensor], manifest: dict) -> None:
    """Compare the stored checksums with the contents; FormatError naming what differs.
    A version-1 file has none: warn and go on (codes are still range-checked)."""
    sums = manifest.get("sha256")
    if sums is None:
        if manifest.get("version") == 1:
            warnings.warn("this file is format version 1 (ttqlab 0.1) and has no checksums: "
                          "damaged bytes that still form valid codes cannot be detected. "
                          "Re-save it with ttqlab.export.save to add them.", stacklevel=4)
            return
        raise FormatError("manifest: field 'sha256' (the checksums) is missing: the file is "
                          "damaged or was edited")
    if not (isinstance(sums, dict) and all(isinstance(sums.get(k), str) for k in
                                           ("manifest", "payload", "tensors"))):
        raise FormatError("manifest: field 'sha256' must be {'manifest': hex, 'payload': hex, "
                          "'tensors': hex}")
    if _manifest_digest(manifest) != sums["manifest"]:
        raise FormatError("manifest: SHA-256 mismatch: the manifest (layer shapes, options, "
                          "INQ's n1, ...) was damaged or edited after saving")
    names, digests, payload = _payload(tensors)
    if payload == sums["payload"]:
        return
    short = sums["tensors"]
    if len(short) != _SHORT * len(names):
        raise FormatError(f"the file holds {len(names)} tensors, its checksums list "
                          f"{len(short) // _SHORT}: a tensor was added or removed after saving")
    bad = [n for i, (n, d) in enumerate(zip(names, digests))
           if d[:_SHORT] != short[_SHORT * i:_SHORT * (i + 1)]]
    which = (f"tensor{'s' * (len(bad) > 1)} {', '.join(map(repr, bad))}" if bad
             else "the tensors")
    raise FormatError(f"{which}: SHA-256 mismatch: the bytes were damaged or edited after "
                      f"saving")


def _too_deep(obj, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON value ``obj`` nests deeper than ``limit`` (iteratively: no recursion)."""
    if not isinstance(obj, (dict, list)):
        return False
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        items = value.values() if isinstance(value, dict) else value
        stack += [(v, depth + 1) for v in items if isinstance(v, (dict, list))]
    return False


def _printable(text) -> str:
    """``text`` with control characters (terminal escape sequences) shown escaped, line
    breaks kept."""
    text = str(text)
    ok = [c == "\n" or unicodedata.category(c)[0] != "C" for c in text]
    return text if all(ok) else "".join(c if keep else repr(c)[1:-1]
                                        for c, keep in zip(text, ok))


# --------------------------------------------------------------------------- layout rules


def _scheme(method: str, bits: int, packing_name: str) -> tuple[str, int | None]:
    """Which ``ttqlab.packing`` scheme stores a layer: binary 1 bit, ternary the file's
    packing, INQ with ``bits >= 3`` sign + level index (the same rule as
    ``ttqlab.stats.packed_nbytes``)."""
    return methods.get(method).scheme(bits, packing_name)


def _skipped(key: str) -> bool:
    return key == _SKIPPED or key.endswith("." + _SKIPPED)


# --------------------------------------------------------------------------- writing


def pack(model: nn.Module, packing: str = "base3") -> tuple[dict[str, Tensor], dict]:
    """The tensors and the manifest that :func:`save` writes for ``model``.

    INQ layers must be fully frozen (``inq.step()`` returned 1.0). A model with no
    quantized layer is stored all in float (and gains nothing).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if packing not in PACKINGS:
        raise ValueError(f"packing must be one of {sorted(PACKINGS)} ('base3': 1.6 bits per "
                         f"ternary weight, '2bit': 2 bits), got {packing!r}")
    _not_meta(model, "save")
    qws = extract(model) if any(True for _ in quantized_layers(model)) else {}
    groups: dict[str, dict] = {}
    for name, qw in qws.items():
        key = json.dumps([qw.method, qw.options], sort_keys=True)
        group = groups.setdefault(key, {"method": qw.method, "options": dict(qw.options),
                                        "layers": {}})
        group["layers"][name] = list(qw.shape)
        try:  # per-layer manifest values of the method (INQ: n1), group[field][layer]
            fields = methods.get(qw.method).manifest_fields(qw)
        except ValueError as e:
            raise ValueError(f"layer {name!r}: {e}") from None
        for field, value in fields.items():
            if field in ("method", "options", "layers"):
                raise ValueError(f"{qw.method}.manifest_fields returns {field!r}, a name the "
                                 f"manifest's groups reserve; rename that field")
            group.setdefault(field, {})[name] = value
    codes, scales = [], []
    for group in groups.values():
        for name in group["layers"]:
            qw = qws[name]
            scheme, bits = _scheme(qw.method, qw.bits, packing)
            codes.append(pack_codes(qw.codes, scheme, bits))
            s = [qw.scales[k].detach().reshape(-1) for k in methods.get(qw.method).scale_names]
            if qw.codes.numel() == 0:  # a zero-size layer: its scale (mean of nothing,
                s = [torch.zeros_like(v) for v in s]  # NaN) is never used; store 0
            scales += s
            if s and not bool(torch.isfinite(torch.cat(s)).all()):
                raise ValueError(f"layer {name!r} has a NaN or inf scale; the training run "
                                 f"diverged, so there is no model worth saving")
    dtypes = {s.dtype for s in scales}
    if len(dtypes) > 1:
        raise ValueError(f"the quantized layers' scales have mixed dtypes "
                         f"{sorted(map(str, dtypes))}; convert the model to one dtype first "
                         f"(model.float())")
    tensors = {CODES: torch.cat(codes) if codes else torch.zeros(0, dtype=torch.uint8),
               SCALES: torch.cat(scales) if scales else torch.zeros(0)}
    weights = {state_key(name) for name in qws}
    for key, value in bake(model).state_dict().items():
        if key in (CODES, SCALES):
            raise ValueError(f"the model has a tensor named {key!r}, a name ttqlab's file "
                             f"format reserves; rename that module")
        if key not in weights and not _skipped(key):
            tensors[key] = value.detach().cpu().contiguous().clone()
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, "ttqlab": _version(),
                "packing": packing, "architecture": _spec_of(model),
                "quantized": list(groups.values())}
    dtype = _float_dtype(model)
    if dtype is not None:  # optional field: the dtype a recorded architecture is rebuilt in
        manifest["dtype"] = dtype
    if activations.act_quantized_layers(model):  # optional field: quantized layer inputs
        manifest["activations"] = activations.manifest_entry(model)
    return tensors, manifest



def _float_dtype(model: nn.Module) -> str | None:
    """The name of ``model``'s one floating dtype; None if it mixes several (or has none)."""
    found = {v.dtype for v in model.state_dict().values()
             if isinstance(v, Tensor) and v.is_floating_point()}
    name = str(found.pop()).removeprefix("torch.") if len(found) == 1 else None
    return name if name in DTYPES else None


def _not_meta(model: nn.Module, what: str) -> None:
    meta = next((k for k, v in model.state_dict().items()
                 if isinstance(v, Tensor) and v.is_meta), None)
    if meta is not None:
        raise ValueError(f"cannot {what} a model on the meta device (tensor {meta!r} has a "
                         f"shape but no storage); build it on a real device, e.g. "
                         f"model.to_empty(device='cpu') before loading into it")


def _version() -> str:
    from . import __version__
    return __version__


def _spec_of(model: nn.Module) -> dict | None:
    spec = getattr(model, "ttqlab_spec", None)
    if not isinstance(spec, dict) or spec.get("name") not in models.MODELS:
        return None
    try:
        return json.loads(json.dumps(spec))
    except (TypeError, ValueError):
        return None


def write(path: str | os.PathLike, tensors: Mapping[str, Tensor], manifest: dict) -> int:
    """Write ``tensors`` and ``manifest`` as one safetensors file; return its size in bytes.

    The file is written to a temporary name of this writer's own next to ``path``,
    flushed to disk and then renamed over it, so a failed or interrupted write (disk
    full, Ctrl-C) never leaves a half-written file (or destroys an older one), and two
    writers of the same path leave one whole file, the last one renamed. A ``path``
    that is a symlink is replaced by the file (the link's target is left alone). Its
    permissions follow the umask, like any new file. ``manifest["sha256"]`` is
    (re)computed from the contents.
    """
    path = Path(path)
    manifest = {**manifest, "sha256": _checksums(tensors, manifest)}
    meta = {_METADATA_KEY: json.dumps(manifest, separators=(",", ":"))}
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}-{threading.get_ident()}")
    try:
        blob = st_save(dict(tensors), metadata=meta)  # in memory: I/O errors are OSErrors
        with open(tmp, "wb") as f:  # the umask applies, like any new file
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size


def save(model: nn.Module, path: str | os.PathLike, packing: str = "base3") -> int:
    """Save ``model`` packed: quantized layers as 2-bit / base-3 / n-bit codes plus their
    scales, everything else as it is (see the module docstring for the layout).

    Args:
        model: a model quantized with ``ttqlab.quantize`` (INQ: fully frozen), trained.
        path: the file to write; ``.ttq.safetensors`` is a good suffix (it is a valid
            safetensors file).
        packing: ``"base3"`` (5 ternary weights per byte, 1.6 bits each: ~20x smaller
            than fp32) or ``"2bit"`` (4 per byte: 16x).

    Returns:
        The size of the file in bytes.
    """
    tensors, manifest = pack(model, packing)
    return write(path, tensors, manifest)


# --------------------------------------------------------------------------- reading


def read(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict]:
    """The raw tensors and manifest of a packed file (nothing validated beyond the
    container; :func:`unpack` checks the rest). Never unpickles, never runs code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise FormatError(f"{path} is not a complete safetensors file (truncated or not a "
                          f"ttqlab file): {e}") from None
    if _METADATA_KEY not in metadata:
        raise FormatError(f"{path} is a safetensors file without a ttqlab manifest; load a "
                          f"plain state_dict with safetensors.torch.load_file instead")
    try:
        manifest = json.loads(metadata[_METADATA_KEY])
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}: the manifest is not valid JSON ({e})") from None
    except RecursionError:
        raise FormatError(f"{path}: the manifest nests deeper than {MAX_DEPTH} levels "
                          f"(not a ttqlab file)") from None
    return tensors, manifest


def _fail(msg: str) -> FormatError:
    return FormatError(f"manifest: {msg}")


def _check_header(manifest) -> None:
    if not isinstance(manifest, dict):
        raise _fail(f"must be a JSON object, got {type(manifest).__name__}")
    if _too_deep(manifest):
        raise _fail(f"nests deeper than {MAX_DEPTH} levels")
    if manifest.get("format") != FORMAT:
        raise _fail(f"field 'format' must be {FORMAT!r}, got {manifest.get('format')!r}")
    version = manifest.get("version")
    if not is_int(version) or version < 1:
        raise _fail(f"field 'version' must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise FormatError(f"the file uses format version {version}, written by ttqlab "
                          f"{_printable(manifest.get('ttqlab', '?'))}; this ttqlab "
                          f"({_version()}) reads "
                          f"versions up to {FORMAT_VERSION}: upgrade ttqlab "
                          f"(pip install -U ttqlab)")
    if manifest.get("packing") not in PACKINGS:
        raise _fail(f"field 'packing' must be one of {sorted(PACKINGS)}, "
                    f"got {manifest.get('packing')!r}")
    if not isinstance(manifest.get("quantized"), list):
        raise _fail("field 'quantized' must be a list of layer groups")
    arch = manifest.get("architecture")
    if arch is not None and not (isinstance(arch, dict) and isinstance(arch.get("name"), str)
                                 and isinstance(arch.get("kwargs", {}), dict)):
        raise _fail(f"field 'architecture' must be null or {{'name': ..., 'kwargs': {{...}}}}, "
                    f"got {arch!r}")
    dtype = manifest.get("dtype", "float32")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise _fail(f"field 'dtype' must be one of {sorted(DTYPES)}, got "
                    f"{_printable(manifest.get('dtype'))[:40]!r}")


def _check_group(i: int, group) -> tuple[str, dict, dict, dict]:
    """A manifest group's method, options, layers and per-layer manifest fields, each
    checked with the method's own specs (``OPTIONS_SPEC``, ``read_manifest``)."""
    where = f"quantized[{i}]"
    if not isinstance(group, dict):
        raise _fail(f"{where} must be an object, got {type(group).__name__}")
    method, options, layers = group.get("method"), group.get("options", {}), group.get("layers")
    if not isinstance(method, str) or method not in METHODS:
        raise _fail(f"{where}: unknown method {method!r}; expected one of {sorted(METHODS)}")
    if not isinstance(options, dict):
        raise _fail(f"{where}: 'options' must be an object")
    cls = methods.get(method)
    spec = {o.name: o for o in cls.OPTIONS_SPEC}
    for key, value in options.items():
        if key not in spec:
            raise _fail(f"{where}: unknown option {key!r} for method {method!r}")
        try:
            if spec[key].check is not None:
                spec[key].check(value)
        except (ValueError, TypeError):
            raise _fail(f"{where}: option {key!r} has an invalid value {value!r}") from None
    for key in (o.name for o in cls.OPTIONS_SPEC if o.required):
        if key not in options:
            raise _fail(f"{where}: method {method!r} needs option {key!r}")
    if not isinstance(layers, dict):
        raise _fail(f"{where}: 'layers' must map layer names to shapes")
    for name, shape in layers.items():
        if not isinstance(shape, list) or not 2 <= len(shape) <= 5 or any(
                not is_int(d) or d < 0 for d in shape):
            raise _fail(f"layer {name!r}: shape must be a list of 2 to 5 non-negative "
                        f"integers (a Linear or Conv weight), got {shape!r}")
    try:
        fields = cls.read_manifest({**group, "options": options}, where)
    except ValueError as e:
        raise _fail(str(e)) from None
    return method, options, layers, fields


class _Layer(NamedTuple):
    """One quantized layer as the manifest describes it, and where its bytes are."""

    name: str
    method: str
    options: dict
    bits: int
    shape: list[int]
    n: int
    scheme: str
    sbits: int | None
    nbytes: int
    nscales: int
    fields: dict


def unpack(tensors: Mapping[str, Tensor], manifest: dict,
           ) -> tuple[dict[str, QuantizedWeight], dict[str, Tensor]]:
    """Validate a file's contents and decode them.

    Returns ``(quantized, floats)``: ``{layer: QuantizedWeight}`` (as ``ttqlab.extract``
    gives; ``.dequantize()`` is the weight) and ``{state_dict key: tensor}`` for the rest.
    Raises :class:`FormatError` naming the field or layer at fault.
    """
    if isinstance(manifest, dict) and "sha256" in manifest:
        _verify(tensors, manifest)  # first: a damaged file is reported as damaged
    _check_header(manifest)
    if "sha256" not in manifest:
        _verify(tensors, manifest)  # version 1: a warning; newer: an error
    packing_name = manifest["packing"]
    layers: list[_Layer] = []
    seen: set[str] = set()
    for i, group in enumerate(manifest["quantized"]):
        method, options, group_layers, fields = _check_group(i, group)
        bits = options.get("bits", methods.get(method).bits)
        scheme, sbits = _scheme(method, bits, packing_name)
        for name, shape in group_layers.items():
            if name in seen:
                raise _fail(f"layer {name!r} appears twice")
            seen.add(name)
            n = math.prod(shape)
            layers.append(_Layer(name, method, options, bits, shape, n, scheme, sbits,
                                 packed_length(n, scheme, sbits),
                                 methods.get(method).n_scales(dict(options), shape),
                                 fields[name]))
    for key in (CODES, SCALES):
        if key not in tensors:
            raise FormatError(f"tensor {key!r} is missing from the file")
    codes, scales = tensors[CODES], tensors[SCALES]
    need = sum(layer.nbytes for layer in layers)
    if codes.dtype != torch.uint8 or codes.dim() != 1 or codes.numel() != need:
        raise FormatError(f"tensor {CODES!r} must be {need} uint8 bytes for the layers in the "
                          f"manifest, got {codes.numel()} {codes.dtype} (tampered or mismatched)")
    need = sum(layer.nscales for layer in layers)
    if not scales.is_floating_point() or scales.dim() != 1 or scales.numel() != need:
        raise FormatError(f"tensor {SCALES!r} must hold {need} float scales for the layers in "
                          f"the manifest, got {scales.numel()} {scales.dtype}")
    if not bool(torch.isfinite(scales).all()):
        raise FormatError(f"tensor {SCALES!r} contains NaN or inf")
    quantized, at, sat = {}, 0, 0
    for layer in layers:
        try:
            c = unpack_codes(codes[at:at + layer.nbytes], layer.n, layer.scheme, layer.sbits)
        except ValueError as e:
            raise FormatError(f"layer {layer.name!r}: {e}") from None
        at += layer.nbytes
        values = scales[sat:sat + layer.nscales]
        sat += layer.nscales
        sc = methods.get(layer.method).scales_from_manifest(values, layer.options, layer.shape,
                                                           layer.fields)
        quantized[layer.name] = QuantizedWeight(layer.method, c.reshape(layer.shape), sc,
                                                dict(layer.options), layer.bits)
    floats = {}
    for key, value in tensors.items():
        if key in (CODES, SCALES):
            continue
        if key.startswith(FORMAT + "."):
            raise FormatError(f"unexpected tensor {key!r} (the prefix 'ttqlab.' is reserved)")
        floats[key] = value
    for name in quantized:
        if state_key(name) in floats:
            raise FormatError(f"layer {name!r} is stored both quantized and as a float tensor "
                              f"{state_key(name)!r}")
    return quantized, floats


# --------------------------------------------------------------------------- loading


class _OverBudget(Exception):
    pass


def _build(spec: dict, device: str | None = None, budget: int | None = None) -> nn.Module:
    """Build ``spec``'s architecture (on ``device``); with a ``budget``, abort as soon as
    it registers more parameters and buffers than that (on the meta device, tensors cost
    no memory, only their number costs time)."""
    handles, count = [], [0]
    if budget is not None:
        def hook(module, name, value):
            if isinstance(value, Tensor):
                count[0] += 1
                if count[0] > budget:
                    raise _OverBudget
        from torch.nn.modules import module as nn_module
        handles = [nn_module.register_module_parameter_registration_hook(hook),
                   nn_module.register_module_buffer_registration_hook(hook)]
    text = _printable(json.dumps(spec)[:300])
    try:
        with torch.device(device) if device else contextlib.nullcontext():
            return models.get(spec["name"], **spec.get("kwargs", {}))
    except _OverBudget:
        raise FormatError(f"manifest: architecture {text} has far more tensors than the "
                          f"file holds ({budget}): the recorded arguments do not match the "
                          f"file") from None
    except RecursionError:
        raise FormatError(f"manifest: cannot rebuild architecture {text}") from None
    except Exception as e:  # hostile kwargs: whatever the builder raises is a format error
        raise FormatError(f"manifest: cannot rebuild architecture {text}: "
                          f"{_printable(e)[:300]}") from None
    finally:
        for h in handles:
            h.remove()


def _budget(quantized: Mapping[str, QuantizedWeight], floats: Mapping[str, Tensor]) -> int:
    """How many tensors an architecture matching the file can register: the file's, plus
    BatchNorm's ``num_batches_tracked`` counters that are not stored (and a margin)."""
    return 2 * (len(quantized) + len(floats)) + 16


def _check_fits(model: nn.Module, quantized: Mapping[str, QuantizedWeight],
                floats: Mapping[str, Tensor]) -> None:
    """Every file entry has a place of the right shape and dtype in ``model``, and every
    tensor ``model`` needs is in the file."""
    layers = {n: (m, p) for n, m, p in quantizable_weights(model)}
    for name, qw in quantized.items():
        if name not in layers:
            raise FormatError(f"layer {name!r} in the file is not a Linear/Conv layer (nor an "
                              f"attention / recurrent weight) of the architecture (its "
                              f"quantizable weights: {sorted(layers)[:20]})")
        module, param = layers[name]
        have = tuple(getattr(module, param).shape)
        if have != tuple(qw.shape):
            raise FormatError(f"layer {name!r}: the file holds a weight of shape "
                              f"{tuple(qw.shape)}, the architecture has {have}")
    state = model.state_dict()
    expected = {k for k in state if not _skipped(k)} - {state_key(n) for n in quantized}
    missing = sorted(expected - set(floats))
    if missing:
        raise FormatError(f"the file lacks {missing[:5]} that the architecture needs "
                          f"(different architecture, or a tampered file)")
    extra = sorted(set(floats) - expected)
    if extra:
        raise FormatError(f"the file holds {extra[:5]} that the architecture does not have")
    for key, value in floats.items():
        want = state[key]
        if tuple(value.shape) != tuple(want.shape) or value.dtype != want.dtype:
            raise FormatError(f"tensor {key!r}: the file has {tuple(value.shape)} "
                              f"{value.dtype}, the architecture {tuple(want.shape)} "
                              f"{want.dtype}")


def _architecture(model, manifest: dict, quantized, floats) -> nn.Module:
    spec = manifest.get("architecture")
    if isinstance(model, nn.Module):
        _not_meta(model, "load into")
        if any(True for _ in quantized_layers(model)):
            raise ValueError("model is quantized (parametrized); pass a plain float model "
                             "of the same architecture (e.g. ttqlab.unquantize(model))")
        _check_fits(model, quantized, floats)
        return model
    if isinstance(model, str):
        if model not in models.MODELS:
            raise ValueError(f"unknown model {model!r}; pass a name from {sorted(models.MODELS)} "
                             f"or an nn.Module instance")
        if spec is None or spec["name"] != model:
            spec = {"name": model, "kwargs": {}}
    elif model is not None:
        raise TypeError(f"model must be None, a model name or an nn.Module instance, got "
                        f"{type(model).__name__}")
    elif spec is None:
        raise ValueError("the file was saved from a custom architecture (not one of "
                         "ttqlab.models); pass an instance: load(path, MyModel())")
    elif spec["name"] not in models.MODELS:
        raise _fail(f"architecture {spec['name']!r} is not one of {sorted(models.MODELS)}")
    # a dry run on the meta device (no storage, bounded), checked against the file,
    # before anything is allocated; files without 'dtype' (older ttqlab) are float32
    dtype = DTYPES[manifest.get("dtype", "float32")]
    _check_fits(_build(spec, "meta", _budget(quantized, floats)).to(dtype), quantized, floats)
    built = _build(spec).to(dtype)
    _check_fits(built, quantized, floats)
    return built


@torch.no_grad()
def load(path: str | os.PathLike, model: nn.Module | str | None = None) -> nn.Module:
    """Load a packed file as a plain float model with the quantized weights baked in.

    Args:
        path: a file written by :func:`save`.
        model: where to load it: ``None`` rebuilds the architecture recorded in the file
            (any model from ``ttqlab.models``), in the float dtype it was saved in
            (manifest ``dtype``; files without it: float32); a name from ``ttqlab.models``
            builds that model (with the file's recorded arguments when the names agree); an
            ``nn.Module`` instance (a plain float model of the saved architecture) is
            filled in place.

    Returns:
        The model, in eval mode. Its outputs equal the saved quantized model's exactly
        (``torch.equal``) on the same input, device and dtype: each weight is rebuilt
        bit for bit (codes times the stored float scale, or an exact power of two),
        every other tensor is stored unchanged, and the arithmetic that follows is the
        same. (Across devices or thread counts the usual float round-off applies.
        One more: on a CPU, ``nn.GRU`` / ``nn.LSTM`` switch to oneDNN kernels when no
        weight requires grad, as a quantized model's computed weights do under
        ``torch.no_grad()``, so compare with ``loaded.requires_grad_(False)`` there, or
        with gradients enabled.)

    Everything in the file is validated before ``model`` is touched. Raises
    :class:`FormatError` (a ``ValueError``) for a truncated or tampered file, a newer
    format version, codes out of range, or a file that does not fit the architecture.
    """
    tensors, manifest = read(path)
    quantized, floats = unpack(tensors, manifest)
    target = _architecture(model, manifest, quantized, floats)
    activations.attach_from_manifest(target, manifest.get("activations"), FormatError)
    layers = {n: (m, p) for n, m, p in quantizable_weights(target)}
    for name, qw in quantized.items():
        module, param = layers[name]
        getattr(module, param).copy_(qw.dequantize())
    target.load_state_dict(floats, strict=False)
    return target.eval()


# --------------------------------------------------------------------------- size report


def _header_bytes(path: Path) -> int:
    with open(path, "rb") as f:
        return 8 + int.from_bytes(f.read(8), "little")


def size_report(path: str | os.PathLike) -> Table:
    """Bytes on disk per layer of a packed file, next to the fp32 bytes.

    Rows: each quantized layer (codes + scales), each Linear/Conv weight kept in float,
    ``(other)`` (biases, BatchNorm), ``(header)`` (safetensors header with the
    manifest) and ``(total)``, whose packed bytes are the file's size on disk. "fp32
    bytes" counts 4 bytes per weight (the raw tensors, without any container).
    """
    path = Path(path)
    tensors, manifest = read(path)
    quantized, floats = unpack(tensors, manifest)
    scales_item = tensors[SCALES].element_size()
    rows = []
    for name, qw in quantized.items():
        n = qw.codes.numel()
        scheme, bits = _scheme(qw.method, qw.bits, manifest["packing"])
        code_bytes = packed_length(n, scheme, bits)
        scale_bytes = scales_item * methods.get(qw.method).n_scales(dict(qw.options),
                                                                    list(qw.shape))
        packed = code_bytes + scale_bytes
        rows.append({"layer": name, "method": qw.method, "shape": tuple(qw.shape), "params": n,
                     "bits/weight": 8 * code_bytes / max(1, n), "fp32 bytes": 4 * n,
                     "packed bytes": packed, "ratio": 4 * n / packed if packed else math.nan})
    other = {"layer": "(other)", "method": "float", "params": 0, "fp32 bytes": 0,
             "packed bytes": 0}
    for key, value in floats.items():
        n, size = value.numel(), value.numel() * value.element_size()
        fp32 = 4 * n if value.is_floating_point() else size
        if value.dim() >= 2 and (key.endswith(".weight") or state_key(key) == key):
            rows.append({"layer": key.removesuffix(".weight"), "method": str(value.dtype)[6:],
                         "shape": tuple(value.shape), "params": n,
                         "bits/weight": 8.0 * value.element_size(), "fp32 bytes": fp32,
                         "packed bytes": size, "ratio": fp32 / size if size else math.nan})
        else:
            other["params"] += n
            other["fp32 bytes"] += fp32
            other["packed bytes"] += size
    other["ratio"] = other["fp32 bytes"] / other["packed bytes"] if other["packed bytes"] \
        else math.nan
    rows.append(other)
    rows.append({"layer": "(header)", "method": "json", "fp32 bytes": 0,
                 "packed bytes": _header_bytes(path)})
    fp32 = sum(r["fp32 bytes"] for r in rows)
    total = path.stat().st_size
    params = sum(r.get("params", 0) for r in rows)
    rows.append({"layer": "(total)", "params": params, "bits/weight": 8 * total / max(1, params),
                 "fp32 bytes": fp32, "packed bytes": total, "ratio": fp32 / total})
    cols = ["layer", "method", "shape", "params", "bits/weight", "fp32 bytes", "packed bytes",
            "ratio"]
    return Table(rows, cols, title=f"{path.name}: bytes on disk (packing={manifest['packing']})")


def report(path: str | os.PathLike) -> str:
    """A readable description of a packed file: manifest summary, :func:`size_report`
    and the compression of the quantized layers and of the whole file."""
    path = Path(path)
    _, manifest = read(path)
    table = size_report(path)
    arch = manifest.get("architecture")
    lines = [f"{path}: ttqlab packed file, format version {manifest['version']}, written by "
             f"ttqlab {manifest.get('ttqlab', '?')}, packing {manifest['packing']}",
             "architecture: " + (f"{arch['name']} {json.dumps(arch.get('kwargs', {}))}" if arch
                                 else "custom (load it with ttqlab.export.load(path, MyModel()))")]
    for g in manifest["quantized"]:
        opts = ", ".join(f"{k}={v}" for k, v in g.get("options", {}).items())
        lines.append(f"{g['method']} ({opts}): {', '.join(g['layers'])}")
    lines += ["", str(table), ""]
    lines = [_printable(line) for line in lines]  # strings from the file: no escape codes
    q = [r for r in table.rows if r.get("method") in METHODS]
    if q:
        n, fp32, packed = (sum(r[k] for r in q) for k in ("params", "fp32 bytes",
                                                            "packed bytes"))
        lines.append(f"quantized layers: {n:,} weights, {fp32:,} bytes as fp32 -> {packed:,} "
                     f"bytes packed ({fp32 / packed:.2f}x smaller)")
    total = table.rows[-1]
    lines.append(f"whole file: {total['packed bytes']:,} bytes on disk for {total['fp32 bytes']:,} "
                 f"bytes of fp32 tensors ({total['ratio']:.2f}x smaller)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def cmd_report(args) -> int:
    """``ttqlab report FILE`` (its parser: ``ttqlab.cli.add_export_parsers``, built without
    importing PyTorch)."""
    if not Path(args.file).is_file():
        raise ValueError(f"no such file: {args.file}")
    print(report(args.file))
    return 0


# --------------------------------------------------------------------------- ONNX Runtime


def to_onnx(model: nn.Module, path: str | os.PathLike, example: Tensor | None = None,
            **options):
    """Write ``model`` as ONNX with its quantized ``nn.Linear`` layers as ONNX Runtime's
    2-bit ``MatMulNBits`` (codes ``t + 2``, one scale per block); see
    :func:`ttqlab.deploy.to_onnx`, which this calls. Needs ``pip install "ttqlab[deploy]"``."""
    from .deploy import to_onnx as _to_onnx
    return _to_onnx(model, path, example, **options)


def onnx_session(path: str | os.PathLike, threads: int = 1):
    """An ONNX Runtime CPU session for a file from :func:`to_onnx`, with ``threads``
    intra-op threads (default 1); see :func:`ttqlab.deploy.onnx_session`."""
    from .deploy import onnx_session as _onnx_session
    return _onnx_session(path, threads)
