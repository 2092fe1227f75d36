"""Activation quantization: each quantized layer's input on a b-bit grid, with the STE.

Two rules, both per token (one scale per row of the last dimension, i.e. per sample of
a Linear layer's input and per position of a sequence model's):

* ``"absmax"``, BitNet b1.58's (Ma et al. 2024): ``gamma_x = max|x|`` over the token,
  ``x~ = Clip(round(x * Q_b / gamma_x), -Q_b, Q_b)``, ``x_q = x~ * gamma_x / Q_b``.
  The paper writes ``Q_b = 2^(b-1)`` and clips to ``[-Q_b + eps, Q_b - eps]``; its
  released code ("The Era of 1-bit LLMs: training tips, code and FAQ") uses
  ``Q_b = 2^(b-1) - 1 = 127`` for 8 bits, so that ``x~`` is an integer that fits in b
  signed bits. ttqlab follows the code: ``Q_b = 2^(b-1) - 1``; the largest ``|x|`` of each
  token maps to exactly ``+-Q_b``.
* ``"pow2"``, INQ's level set applied to activations: per token, ``n1 =
  floor(log2(4/3 max|x|))``, ``n2 = n1 + 1 - 2^(b-1)/2`` and ``x`` rounds to the
  nearest of ``{0, +-2^n2, ..., +-2^n1}`` (ties up, below ``2^(n2-1)`` to zero), as
  ``ttqlab.quantizers.quantize_pow2`` does for weights. A product by ``2^n`` is a shift.

Both pass the gradient straight through (``dL/dx = dL/dx_q``).

``attach(layers, bits, rule)`` puts an :class:`ActivationQuantizer` child named
``act_quant`` on each layer and a forward pre-hook that quantizes the layer's input;
the layer stays an ``nn.Linear`` / ``nn.Conv*d`` and its ``state_dict`` is unchanged.
On an ``nn.MultiheadAttention`` the query, key and value passed to it, by position or
by keyword, are quantized (the inputs of ``in_proj_weight``); on an ``nn.RNN`` / ``GRU``
/ ``LSTM`` its input sequence (the input of ``weight_ih_l0``): the hidden state that
``weight_hh_l*`` multiplies, and the deeper layers' inputs, are computed inside the
recurrent kernel and stay float.
``ttqlab.quantize(model, method, act_bits=8)`` does this for every layer it quantizes.
For a Conv layer the "token" is a row of the input's last dimension (the width): use it
mainly for Linear layers and sequence models, as BitNet does.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from . import quantizers as Q
from .validation import check_choice, check_int

__all__ = ["RULES", "ActivationQuantizer", "absmax_codes", "act_quantized_layers",
           "attach", "detach", "quantize_absmax", "quantize_pow2_tokens"]

RULES = ("absmax", "pow2")
_ATTR = "act_quant"


def check_act_bits(bits) -> int:
    """2..16 bits (as an int), else a ValueError saying what to pass."""
    return check_int("act_bits", bits, low=2, high=16,
                     hint="BitNet uses 8; pass None to keep activations in float")


def _check_rule(rule) -> str:
    return check_choice("act_rule", rule, RULES,
                        hint="'absmax': BitNet's 8-bit per-token absmax, 'pow2': INQ's "
                             "powers of two")


def absmax_codes(x: Tensor, bits: int = 8, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-token absmax: ``(x~, gamma_x)`` with ``gamma_x = max(max|x|, eps)`` over the last
    dimension (kept as a size-1 dimension) and ``x~ = Clip(round(x Q_b / gamma_x), -Q_b,
    Q_b)``, ``Q_b = 2^(b-1) - 1`` (integer-valued floats)."""
    check_act_bits(bits)
    Q._check_finite(x, "x")
    return _absmax(x.detach(), bits, eps)


def _absmax(x: Tensor, bits: int, eps: float) -> tuple[Tensor, Tensor]:
    # the training step's path: no NaN check (a host synchronisation on a GPU, a graph
    # break under torch.compile); a NaN activation shows up in the loss instead
    qb = 2 ** (bits - 1) - 1
    gamma = x.abs().amax(dim=-1, keepdim=True).clamp(min=eps)
    return torch.round(x * (qb / gamma)).clamp_(-qb, qb), gamma


def quantize_absmax(x: Tensor, bits: int = 8, eps: float = 1e-5) -> Tensor:
    """``x~ * gamma_x / Q_b`` (:func:`absmax_codes`) with the straight-through gradient."""
    check_act_bits(bits)
    Q._check_finite(x, "x")
    return _quantize_absmax(x, bits, eps)


def _quantize_absmax(x: Tensor, bits: int, eps: float = 1e-5) -> Tensor:
    codes, gamma = _absmax(x.detach(), bits, eps)
    return Q.ste(x, codes.mul_(gamma).div_(2 ** (bits - 1) - 1))


def quantize_pow2_tokens(x: Tensor, bits: int = 4) -> Tensor:
    """INQ's power-of-two rounding with ``n1`` from each token's ``max|x|``; STE gradient.
    A token that is all zero stays zero."""
    check_act_bits(bits)
    Q._check_finite(x, "x")
    return _quantize_pow2_tokens(x, bits)


def _quantize_pow2_tokens(x: Tensor, bits: int) -> Tensor:
    a = x.detach().abs()
    s = a.amax(dim=-1, keepdim=True)
    n1 = Q._exponent_of_nearest_pow2(torch.where(s > 0, s, torch.ones_like(s)))
    n2 = n1 + 1 - 2 ** (bits - 1) // 2
    n = Q._exponent_of_nearest_pow2(torch.where(a > 0, a, torch.ones_like(a)))
    n = torch.maximum(torch.minimum(n, n1), n2)
    mag = torch.ldexp(torch.ones_like(a), n)
    keep = (a >= torch.ldexp(torch.ones_like(a), n2 - 1)) & (a > 0)
    q = torch.where(keep, torch.copysign(mag, x.detach()), torch.zeros_like(a))
    return Q.ste(x, q)


class ActivationQuantizer(nn.Module):
    """Quantizes a layer's input: ``rule`` ``"absmax"`` or ``"pow2"`` at ``bits`` bits."""

    def __init__(self, bits: int = 8, rule: str = "absmax"):
        super().__init__()
        self.bits = check_act_bits(bits)
        self.rule = _check_rule(rule)

    def forward(self, x: Tensor) -> Tensor:
        # unchecked paths: a NaN check per layer and step would synchronise a GPU
        if self.rule == "absmax":
            return _quantize_absmax(x, self.bits)
        return _quantize_pow2_tokens(x, self.bits)

    def options(self) -> dict:
        return {"bits": self.bits, "rule": self.rule}

    def extra_repr(self) -> str:
        return f"bits={self.bits}, rule={self.rule!r}"


def _pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    # a plain function (not a closure): deep copies and ``bake`` keep working
    aq = getattr(module, _ATTR)
    # the inputs the quantized weights multiply, passed by position or by keyword
    names = ("query", "key", "value") if isinstance(module, nn.MultiheadAttention) \
        else ("input",)
    # self-attention passes one tensor three times: quantize it once. (Compared with
    # ``is``, not by ``id``: torch.compile would guard on the id and recompile every step.)
    done: list[tuple[Tensor, Tensor]] = []

    def quantized(x):
        if not isinstance(x, Tensor):
            raise TypeError(f"act_bits: the input of {type(module).__name__} must be a "
                            f"tensor to be quantized, got {type(x).__name__} (a "
                            f"PackedSequence?); pass a padded tensor, or act_bits=None")
        for seen, q in done:
            if seen is x:
                return q
        done.append((x, aq(x)))
        return done[-1][1]

    args = tuple(quantized(x) if i < len(names) else x for i, x in enumerate(args))
    kwargs = {k: quantized(v) if k in names[len(args):] else v for k, v in kwargs.items()}
    return args, kwargs


def attach(layers: Iterable[nn.Module], bits: int = 8, rule: str = "absmax") -> None:
    """Quantize the input of every layer in ``layers`` (see the module docstring)."""
    check_act_bits(bits)
    _check_rule(rule)
    layers = list(layers)
    for layer in layers:
        if isinstance(getattr(layer, _ATTR, None), ActivationQuantizer):
            raise ValueError("this layer's input is already quantized; call "
                             "ttqlab.activations.detach(model) first")
    for layer in layers:
        layer.add_module(_ATTR, ActivationQuantizer(bits, rule))
        layer.register_forward_pre_hook(_pre_hook, with_kwargs=True)


def act_quantized_layers(model: nn.Module) -> dict[str, ActivationQuantizer]:
    """``{layer name: ActivationQuantizer}`` for every layer whose input is quantized."""
    return {name: getattr(m, _ATTR) for name, m in model.named_modules()
            if isinstance(getattr(m, _ATTR, None), ActivationQuantizer)}


def detach(model: nn.Module) -> nn.Module:
    """Remove every activation quantizer (hooks and children) from ``model``, in place."""
    for _, m in list(model.named_modules()):
        if isinstance(getattr(m, _ATTR, None), ActivationQuantizer):
            for key, hook in list(m._forward_pre_hooks.items()):
                if hook is _pre_hook:
                    del m._forward_pre_hooks[key]
                    m._forward_pre_hooks_with_kwargs.pop(key, None)
            delattr(m, _ATTR)
    return model


# --------------------------------------------------------------------------- export


def manifest_entry(model: nn.Module) -> list[dict]:
    """The manifest field ``"activations"`` for ``ttqlab.export``: one group per
    ``(bits, rule)``: ``[{"bits": 8, "rule": "absmax", "layers": ["fc1", ...]}]``."""
    groups: dict[tuple, dict] = {}
    for name, aq in act_quantized_layers(model).items():
        g = groups.setdefault((aq.bits, aq.rule), {"bits": aq.bits, "rule": aq.rule,
                                                   "layers": []})
        g["layers"].append(name)
    return list(groups.values())


def attach_from_manifest(model: nn.Module, entry, error=ValueError) -> None:
    """Validate a manifest's ``"activations"`` field (``None`` or absent: nothing) and
    attach the quantizers it names to ``model``; raises ``error`` naming the fault."""
    if entry is None:
        return
    modules = dict(model.named_modules())
    if not isinstance(entry, list):
        raise error("manifest: field 'activations' must be a list of groups")
    plan = []
    for i, g in enumerate(entry):
        if not isinstance(g, dict) or not isinstance(g.get("layers"), list):
            raise error(f"manifest: activations[{i}] must be an object with 'layers'")
        try:
            check_act_bits(g.get("bits"))
            _check_rule(g.get("rule"))
        except ValueError as e:
            raise error(f"manifest: activations[{i}]: {e}") from None
        for name in g["layers"]:
            if not isinstance(name, str) or name not in modules:
                raise error(f"manifest: activations[{i}]: {name!r} is not a module of the "
                            f"architecture")
        plan.append(([modules[n] for n in g["layers"]], g["bits"], g["rule"]))
    for layers, bits, rule in plan:
        attach(layers, bits, rule)
