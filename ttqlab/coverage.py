"""Which weights of a model ttqlab quantizes, which stay float, and which train.

``ttqlab.quantize`` quantizes the weight of every ``nn.Linear`` / ``nn.Conv1d/2d/3d``,
``nn.MultiheadAttention``'s packed ``in_proj_weight`` (or its separate
``q/k/v_proj_weight``) and the ``weight_ih_l*`` / ``weight_hh_l*`` of ``nn.GRU`` /
``nn.LSTM`` / ``nn.RNN``. Other weight matrices stay float: ``nn.Embedding`` tables and
bare 2-D+ parameters such as positional embeddings or a custom module's own matrices.
Rather than leave them float silently, ``quantize`` warns about each
(:func:`warn_float_weights`) and ``layer_report`` lists them (:func:`extend_report`).
BitNet keeps embeddings float too; to quantize a custom module's matrix, compute it with
an ``nn.Linear``.

:func:`check_optimizer` warns when an optimizer does not hold every trainable
parameter (an optimizer built before ``quantize`` lacks TTQ's W_p / W_n, which then
never move).
"""

from __future__ import annotations

import re
import warnings

import torch
from torch import nn

__all__ = ["check_optimizer", "extend_report", "float_weights", "warn_float_weights"]

#: the layers whose ``weight`` ``quantize`` quantizes
_QUANTIZABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: the names of the weight matrices of attention / recurrent layers (not ``weight``)
_OTHER_WEIGHT = re.compile(r"(in_proj_weight|[qkv]_proj_weight|weight_(ih|hh|hr)_l\d+(_reverse)?)")


def _weight_names(module: nn.Module) -> list[str]:
    """The parameters of ``module`` that ``quantize`` quantizes (its own, not children's)."""
    if isinstance(module, _QUANTIZABLE):
        return ["weight"]
    if isinstance(module, nn.MultiheadAttention):
        return (["in_proj_weight"] if module._qkv_same_embed_dim
                else ["q_proj_weight", "k_proj_weight", "v_proj_weight"])
    if isinstance(module, nn.RNNBase):
        return [n for n in module._flat_weights_names if _OTHER_WEIGHT.fullmatch(n)]
    return []


def _why(module: nn.Module) -> str:
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "an embedding table (BitNet keeps these float too)"
    return f"a bare parameter of {type(module).__name__}"


def float_weights(model: nn.Module) -> dict[str, str]:
    """``{parameter name: why}`` for every weight (a parameter with 2 or more dimensions)
    that ``quantize`` cannot quantize (not a Linear / Conv weight, nor an attention or
    recurrent weight matrix). Quantizable weights kept float on purpose (first / last,
    ``exclude``) are not listed: ``layer_report`` shows them as ``fp32``."""
    out = {}
    for mname, module in model.named_modules():
        if isinstance(module, _QUANTIZABLE) or ".parametrizations." in f".{mname}.":
            continue
        quantizable = set(_weight_names(module))
        for pname, p in module.named_parameters(recurse=False):
            if p.dim() >= 2 and pname not in quantizable:
                out[f"{mname}.{pname}" if mname else pname] = _why(module)
    return out


def warn_float_weights(model: nn.Module, stacklevel: int = 3) -> dict[str, str]:
    """Warn (one ``UserWarning`` listing each) about the weights that stay float."""
    left = float_weights(model)
    if left:
        lines = "; ".join(f"{k} ({v})" for k, v in left.items())
        warnings.warn(f"{len(left)} weight(s) of this model stay float (ttqlab quantizes "
                      f"nn.Linear / nn.Conv weights and the weight matrices of "
                      f"nn.MultiheadAttention and nn.RNN / GRU / LSTM): {lines}. To quantize "
                      f"one, compute it with an nn.Linear; layer_report lists them.",
                      stacklevel=stacklevel)
    return left


def no_layer_error(model: nn.Module, hint: str) -> ValueError:
    """The error for a model with no weight to quantize."""
    left = float_weights(model)
    more = (f"; its weights {sorted(left)} are not in Linear / Conv / attention / recurrent "
            f"layers (embeddings, bare parameters): compute them with an nn.Linear to "
            f"quantize them") if left else ""
    return ValueError(f"model has no Linear or Conv layer, nor attention / recurrent "
                      f"weight, to quantize{hint}{more}")


def extend_report(model: nn.Module, rows: list[dict], cols: list[str]) -> None:
    """Add to ``layer_report``'s rows: one ``fp32 (not quantizable)`` row per weight
    that stays float (taken out of ``(other)``) and, when any layer's input is
    quantized, an ``act bits`` column (``ttqlab.activations``)."""
    from .activations import act_quantized_layers

    params = dict(model.named_parameters())
    extra = []
    for name, why in float_weights(model).items():
        p = params.get(name)
        if p is None:  # a shared parameter, reported under its first name
            continue
        n = p.numel()
        extra.append({"layer": name, "method": "fp32 (not quantizable)",
                      "shape": tuple(p.shape), "params": n,
                      "sparsity": float((p == 0).sum()) / max(1, n), "scales": why,
                      "bits/weight": 32.0, "fp32 bytes": 4 * n, "packed bytes": 4 * n,
                      "ratio": 1.0})
    other = next((r for r in rows if r.get("layer") == "(other)"), None)
    if extra and other is not None:
        moved = sum(r["params"] for r in extra)
        other.update(params=other["params"] - moved, **{
            "fp32 bytes": other["fp32 bytes"] - 4 * moved,
            "packed bytes": other["packed bytes"] - 4 * moved})
        at = rows.index(other)
        rows[at:at] = extra
    acts = act_quantized_layers(model)
    if acts:
        for r in rows:
            aq = acts.get(r.get("layer"))
            if aq is not None:
                r["act bits"] = f"{aq.bits} ({aq.rule})"
        cols.insert(cols.index("bits/weight") + 1, "act bits")


def check_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer,
                    stacklevel: int = 3) -> list[str]:
    """Warn, naming them, about the model's trainable parameters that ``optimizer``
    does not hold (they would never move: typically TTQ's ``wp`` / ``wn`` when the
    optimizer was built before ``ttqlab.quantize``). Returns their names."""
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in held]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more"
                                          if len(missing) > 8 else "")
        warnings.warn(f"the optimizer does not hold {len(missing)} trainable parameter(s) of "
                      f"the model, so they will never change: {shown}. Build the optimizer "
                      f"after ttqlab.quantize (TTQ's W_p / W_n are created by quantize), or "
                      f"add them: optimizer.add_param_group({{'params': [...]}}).",
                      stacklevel=stacklevel)
    return missing
