"""Per-layer reports: method, shape, sparsity, scales, bits per weight and bytes.

``layer_report(model)`` lists every Linear / Conv layer (quantized or kept float) and a
row for everything else (biases, BatchNorm), with the fp32 size next to the packed size
``ttqlab.export`` writes: 2 bits per ternary weight (or 1.6 bits in base 3, five trits per
byte), 1 bit per binary weight, ``bits`` per INQ weight, plus the float scales.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from . import coverage as _coverage
from . import methods
from .convert import latent_weight, quantizable_weights, quantized_weights
from .validation import check_bool

__all__ = ["ENERGY_PJ", "FLOAT", "PACKINGS", "Table", "layer_report", "op_counts",
           "packed_nbytes"]

#: the "method" of a layer kept in full precision (and of the ``(other)`` row)
FLOAT = "fp32"

#: ternary packings: name -> weights per byte
PACKINGS = {"2bit": 4, "base3": 5}


def packed_nbytes(numel: int, method: str, bits: int = 2, packing: str = "2bit") -> int:
    """Bytes of the packed integer codes of ``numel`` weights (scales not included).

    binary: 1 bit each; ternary (twn, ttq, inq with bits=2): 2 bits (``"2bit"``, four per
    byte) or five per byte (``"base3"``: 3^5 = 243 <= 256, 1.6 bits per weight); inq:
    ``bits`` bits (a sign and an exponent index).
    """
    if packing not in PACKINGS:
        raise ValueError(f"packing must be one of {sorted(PACKINGS)}, got {packing!r}")
    from .packing import nbytes

    scheme, sbits = methods.get(method).scheme(bits, packing)
    return nbytes(numel, scheme, sbits)


class Table:
    """A list of dict rows that prints as an aligned text table (and HTML in Jupyter)."""

    def __init__(self, rows: Sequence[dict], columns: Sequence[str] | None = None,
                 title: str = ""):
        self.rows = list(rows)
        self.columns = list(columns) if columns else list(dict.fromkeys(
            k for r in self.rows for k in r))
        self.title = title

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def column(self, key: str) -> list:
        return [r.get(key) for r in self.rows]

    @staticmethod
    def _fmt(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            if math.isnan(v):
                return "-"
            return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
        if isinstance(v, (tuple, list)):
            return "x".join(str(x) for x in v)
        return str(v)

    def __str__(self) -> str:
        cells = [[self._fmt(r.get(c)) for c in self.columns] for r in self.rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells])
                  for i, c in enumerate(self.columns)]
        line = "  ".join(c.rjust(w) for c, w in zip(self.columns, widths))
        out = [self.title] if self.title else []
        out += [line, "-" * len(line)]
        out += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(out)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{self._fmt(r.get(c))}</td>"
                                        for c in self.columns) + "</tr>" for r in self.rows)
        cap = f"<caption>{self.title}</caption>" if self.title else ""
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def to_markdown(self) -> str:
        out = ["| " + " | ".join(self.columns) + " |",
               "|" + "|".join("---" for _ in self.columns) + "|"]
        out += ["| " + " | ".join(self._fmt(r.get(c)) for c in self.columns) + " |"
                for r in self.rows]
        return "\n".join(out)


def layer_report(model: nn.Module, packing: str = "2bit") -> Table:
    """Per layer: method, shape, sparsity, scales, bits per weight, fp32 vs packed bytes.

    The last rows are ``(other)`` (biases, BatchNorm and any other parameters or
    buffers, kept in fp32) and ``(total)``; ``ratio`` is fp32 bytes / packed bytes.
    INQ's bookkeeping buffers (masks) are not counted: they are not part of the model.
    """
    if packing not in PACKINGS:
        raise ValueError(f"packing must be one of {sorted(PACKINGS)}, got {packing!r}")
    quantized = {name: q for name, _, _, q in quantized_weights(model)}
    rows, counted, kinds = [], set(), []
    for name, module, param in quantizable_weights(model):
        w = getattr(module, param).detach()
        n = w.numel()
        fp32 = 4 * n
        q = quantized.get(name)
        if q is None:
            method, bits, packed, scales = FLOAT, 32.0, fp32, ""
            counted.add(id(getattr(module, param)))
        else:
            method = q.method
            # float scales as ttqlab.export stores them; INQ's integer n1 and bits live
            # in the file's manifest
            latent = latent_weight(module, param)
            scale_bytes = sum(v.numel() * v.element_size() for v in
                              q.scales(latent).values() if v.is_floating_point())
            packed = packed_nbytes(n, method, q.bits, packing) + scale_bytes
            bits = 8 * packed_nbytes(n, method, q.bits, packing) / max(1, n)
            scales = q.scales_text(latent)
            kinds.append((q.tag, *q.scheme(q.bits, packing)))
            counted.update(id(p) for p in module.parametrizations[param].parameters(
                recurse=False))  # the latent tensor(s) the optimizer trains
        rows.append({
            "layer": name, "method": method, "shape": tuple(w.shape), "params": n,
            "sparsity": float((w == 0).sum()) / max(1, n), "scales": scales,
            "bits/weight": bits, "fp32 bytes": fp32, "packed bytes": packed,
            "ratio": fp32 / packed if packed else float("nan"),
        })
    other = 0
    for pname, p in model.named_parameters():
        if id(p) not in counted and not pname.endswith((".wp", ".wn")):
            other += p.numel()
    for bname, b in model.named_buffers():
        if ".parametrizations." not in bname and b.is_floating_point():
            other += b.numel()
    rows.append({"layer": "(other)", "method": FLOAT, "params": other, "bits/weight": 32.0,
                 "fp32 bytes": 4 * other, "packed bytes": 4 * other, "ratio": 1.0})
    fp32_total = sum(r["fp32 bytes"] for r in rows)
    packed_total = sum(r["packed bytes"] for r in rows)
    rows.append({"layer": "(total)", "params": sum(r["params"] for r in rows),
                 "fp32 bytes": fp32_total, "packed bytes": packed_total,
                 "ratio": fp32_total / packed_total if packed_total else float("nan")})
    cols = ["layer", "method", "shape", "params", "sparsity", "scales", "bits/weight",
            "fp32 bytes", "packed bytes", "ratio"]
    _coverage.extend_report(model, rows, cols)  # activation bits, weights left float
    return Table(rows, cols, title=_report_title(kinds, packing))


def _report_title(kinds: list[tuple[str, str, int | None]], packing: str) -> str:
    """Say how each kind of layer is packed (``kinds``: each quantized layer's method tag
    and ``ttqlab.packing`` scheme and bits): ``packing`` only concerns the layers whose
    scheme is the file's ternary packing; a 1-bit scheme is named ("binary 1 bit"); any
    other is "<tag> <bits>-bit codes" ("INQ 5-bit codes")."""
    from .packing import SCHEMES

    width = {(s, b): b if b is not None else SCHEMES[s] for _, s, b in kinds}
    parts = []
    if any(scheme == packing for _, scheme, _ in kinds):
        parts.append(f"ternary codes packed {packing}")
    parts += [f"{s} 1 bit" for s in dict.fromkeys(
        s for _, s, b in kinds if s != packing and width[s, b] == 1)]
    wide: dict[str, set[int]] = {}
    for tag, s, b in kinds:
        if s != packing and width[s, b] != 1:
            wide.setdefault(tag, set()).add(width[s, b])
    parts += [f"{tag} " + "/".join(map(str, sorted(b))) + "-bit codes"
              for tag, b in wide.items()]
    return "layer report" + (f" ({'; '.join(parts)})" if parts else " (float model)")


def _positions(module: nn.Module, param: str, args: tuple, kwargs: dict, output) -> int:
    """How often one inference of a single sample uses each weight of ``param``."""
    if isinstance(module, nn.Linear):
        return output[0].numel() // output.shape[-1]  # tokens of a sequence, else 1
    if isinstance(module, nn.MultiheadAttention):
        names = ("query", "key", "value")
        which = 1 + (param[0] == "v") if param in ("k_proj_weight", "v_proj_weight") else 0
        x = args[which] if len(args) > which else kwargs[names[which]]
        return x.shape[1] if module.batch_first and x.dim() == 3 else x.shape[0]
    if isinstance(module, nn.RNNBase):
        x = args[0] if args else kwargs["input"]
        return x.shape[1] if module.batch_first and x.dim() == 3 else x.shape[0]
    return output[0].numel() // output.shape[1]  # Conv: output pixels


def _conv_taps(module: nn.Module, x_shape: Sequence[int], weight: torch.Tensor) -> int:
    """How many (weight, input) products of one sample of shape ``x_shape`` read a real
    input, not the zero padding, for the non-zero entries of ``weight``: the layer's own
    convolution (stride, padding, dilation, groups, padding mode) of an all-ones input with
    the 0/1 mask ``weight != 0``, summed. A non-zero padding mode (reflect, replicate,
    circular) pads with real values, so nothing is padding there."""
    ones = torch.ones(1, *x_shape[1:], dtype=torch.float64, device=weight.device)
    mask = (weight.detach() != 0).to(torch.float64)
    return round(float(module._conv_forward(ones, mask, None).sum()))


#: energy per operation in picojoules, 45 nm (Horowitz, "Computing's energy problem",
#: ISSCC 2014): 32-bit float multiply and add; a multiplication by 2^n is an addition to
#: the float's 8-bit exponent (8-bit integer add)
ENERGY_PJ = {"mult": 3.7, "add": 0.9, "shift": 0.03}


def _skip_padding(ops: Callable, n: int, nonzero: int, outs: int, pos: int, taps: int,
                  nonzero_taps: int) -> dict[str, int]:
    """A method's ``ops(n, nonzero, outs, positions)`` (linear in its per-weight terms
    ``n * positions`` and ``nonzero * positions``) with those terms replaced by the products
    that read real inputs: ``taps`` (all weights) and ``nonzero_taps`` (non-zero weights)."""
    zero = ops(0, 0, 0, 1)
    per_output = ops(0, 0, outs, pos)
    per_weight = ops(1, 0, 0, 1)
    per_nonzero = ops(0, 1, 0, 1)
    return {k: per_output[k] + (per_weight[k] - zero[k]) * taps
            + (per_nonzero[k] - zero[k]) * nonzero_taps for k in per_output}


@torch.no_grad()
def op_counts(model: nn.Module, input_shape: Sequence[int], *,
              count_padding: bool = False) -> Table:
    """Arithmetic of one inference (one sample of ``input_shape``) per Linear / Conv layer,
    and an energy estimate from ``ENERGY_PJ``.

    A float layer does one multiplication and one addition per weight per output
    position that reads a real input: ``fp32 MACs = taps``, where ``taps`` counts the
    (weight, output position) pairs whose input is not the convolution's zero padding
    (``params * positions`` for a Linear layer or an unpadded Conv). A ternary layer (TWN,
    TTQ) adds or subtracts an input per *non-zero* weight and real tap and scales each
    output once: ``y = W_p * S+ - W_n * S-`` (1 subtraction and 2 multiplications per
    output for TTQ, ``alpha * (S+ - S-)``: 1 multiplication for TWN), the convention of
    ``ttqlab.ternary_matmul``. Binary: every weight is an addition or subtraction, one
    multiplication per output. INQ: every non-zero weight is a shift (``x * 2^n``) plus
    an addition. Energy ``= mults * 3.7 pJ + adds * 0.9 pJ + shifts * 0.03 pJ``;
    activations, BatchNorm, biases and memory traffic are not counted.

    Zero padding: a product with a padded zero is known to be zero before the layer runs,
    so no hardware needs to do it; ``padding MACs`` reports how many of the
    ``params * positions`` products read padding, and they are left out of every count
    (e.g. a 5x5 kernel with padding 2 on a 4x4 input: per channel pair 196 of the 400
    products read the input, 204 read padding). ``count_padding=True`` counts them as
    real work, as ``op_counts`` did before it reported them (``fp32 MACs = params *
    positions``).

    "Positions" are the output pixels of a Conv, the tokens of a Linear applied to a
    sequence, the query (``in_proj_weight``, ``q_proj_weight``) or key / value tokens of an
    ``nn.MultiheadAttention`` and the time steps of a recurrent weight. Attention's score
    and softmax arithmetic and the recurrent gates' elementwise products are not counted.
    """
    # a ValueError, as op_counts has always raised for a bad flag
    count_padding = check_bool("count_padding", count_padding, error=ValueError)
    layers = quantizable_weights(model)
    if not layers:
        raise ValueError("model has no Linear or Conv layer to count")
    layer_methods = {name: q.method for name, _, _, q in quantized_weights(model)}
    positions: dict[str, int] = {}
    taps: dict[str, tuple[int, int]] = {}  # (all weights, non-zero weights) on real inputs
    owners: dict[int, tuple[nn.Module, list[tuple[str, str]]]] = {}
    # attention calls its out_proj's weight directly (no forward, no hook): count it there
    attention_of = {id(m.out_proj): m for m in model.modules()
                    if isinstance(m, nn.MultiheadAttention)}
    for name, module, param in layers:
        owner = attention_of.get(id(module))
        if owner is not None:
            module, param = owner, "out_proj"
        owners.setdefault(id(module), (module, []))[1].append((name, param))

    def hook(weights):
        def record(module, args, kwargs, output):
            for name, param in weights:
                positions[name] = _positions(module, param, args, kwargs, output)
                if isinstance(module, nn.modules.conv._ConvNd) and hasattr(
                        module, "_conv_forward") and not count_padding:
                    w = getattr(module, param)
                    x_shape = tuple(args[0].shape if args else kwargs["input"].shape)
                    taps[name] = (_conv_taps(module, x_shape, torch.ones_like(w)),
                                  _conv_taps(module, x_shape, w))
        return record

    handles = [m.register_forward_hook(hook(ws), with_kwargs=True)
               for m, ws in owners.values()]
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        model(torch.zeros(1, *input_shape, dtype=p.dtype, device=p.device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    rows = []
    for name, module, param in layers:
        w = getattr(module, param).detach()
        n, outs, pos = w.numel(), w.shape[0], positions.get(name, 0)
        nonzero = int((w != 0).sum())
        all_taps, nonzero_taps = taps.get(name, (n * pos, nonzero * pos))
        method = layer_methods.get(name, FLOAT)
        if method == FLOAT:
            ops = {"mults": all_taps, "adds": all_taps, "shifts": 0}
        else:
            ops = _skip_padding(methods.get(method).ops, n, nonzero, outs, pos, all_taps,
                                nonzero_taps)
        mults, adds, shifts = ops["mults"], ops["adds"], ops["shifts"]
        energy = (mults * ENERGY_PJ["mult"] + adds * ENERGY_PJ["add"]
                  + shifts * ENERGY_PJ["shift"]) / 1000
        fp32 = all_taps * (ENERGY_PJ["mult"] + ENERGY_PJ["add"]) / 1000
        rows.append({"layer": name, "method": method, "params": n, "nonzero": nonzero,
                     "positions": pos, "fp32 MACs": all_taps,
                     "padding MACs": n * pos - all_taps, "mults": mults, "adds": adds,
                     "shifts": shifts, "energy (nJ)": energy, "fp32 energy (nJ)": fp32})
    total = {k: sum(r[k] for r in rows) for k in ("params", "nonzero", "fp32 MACs",
                                                  "padding MACs", "mults", "adds", "shifts",
                                                  "energy (nJ)", "fp32 energy (nJ)")}
    rows.append({"layer": "(total)", **total})
    cols = ["layer", "method", "params", "nonzero", "positions", "fp32 MACs", "padding MACs",
            "mults", "adds", "shifts", "energy (nJ)", "fp32 energy (nJ)"]
    how = ("padding counted as work" if count_padding
           else "products with zero padding not counted")
    return Table(rows, cols, title=f"operations per inference (one sample; {how})")
