"""Turn a float model into a quantized one, and back.

``quantize(model, method)`` registers a weight quantizer (``ttqlab.layers``) on every
``nn.Conv1d/2d/3d`` and ``nn.Linear`` weight with ``torch.nn.utils.parametrize``; biases
and BatchNorm stay float. ``extract`` reads the integer codes and scales back out,
``bake`` writes the quantized weights into a plain float model, ``unquantize`` restores
the latent float weights.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from . import activations as _activations
from . import coverage as _coverage
from . import methods
from .methods import WeightQuantizer

__all__ = [
    "METHODS",
    "QuantizedWeight",
    "bake",
    "extract",
    "quantizable_layers",
    "quantize",
    "quantized_layers",
    "unquantize",
]


class _Methods(Mapping):
    """Method name -> the options ``quantize`` accepts for it: a live view of the registry
    ``ttqlab.methods`` (a method registered later appears here too)."""

    def __getitem__(self, name: str) -> tuple[str, ...]:
        if not isinstance(name, str) or name not in methods.names():
            raise KeyError(name)
        return tuple(methods.get(name).OPTIONS)

    def __iter__(self) -> Iterator[str]:
        return iter(methods.names())

    def __len__(self) -> int:
        return len(methods.names())

    def __repr__(self) -> str:
        return repr(dict(self))


#: method name -> the options ``quantize`` accepts for it
METHODS: Mapping[str, tuple[str, ...]] = _Methods()

_QUANTIZABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for every Linear / Conv1d/2d/3d, in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _QUANTIZABLE)]


def _quantizer_of(module: nn.Module) -> WeightQuantizer | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for p in module.parametrizations.weight:
        if isinstance(p, WeightQuantizer):
            return p
    return None


def quantized_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module, WeightQuantizer]]:
    """``(name, layer, quantizer)`` for every layer ``quantize`` converted."""
    for name, module in model.named_modules():
        q = _quantizer_of(module)
        if q is not None:
            yield name, module, q


def _quantizer_index(layer: nn.Module) -> int:
    return next(i for i, p in enumerate(layer.parametrizations.weight)
                if isinstance(p, WeightQuantizer))


class _eval_mode:
    """Run parametrizations in eval mode (spectral_norm's power iteration off), restoring
    each module's mode after: reading a weight must not change the model."""

    def __init__(self, modules):
        self.modules = list(modules)

    def __enter__(self):
        self.modes = [m.training for m in self.modules]
        for m in self.modules:
            m.train(False)

    def __exit__(self, *exc):
        for m, mode in zip(self.modules, self.modes):
            m.train(mode)


def latent_weight(layer: nn.Module) -> Tensor:
    """The float weight ttqlab's quantizer reads: ``layer.parametrizations.weight.original``
    (the tensor the optimizer trains), or, when the weight already carried other
    parametrizations (``spectral_norm``, ``weight_norm``), their output, i.e. the weight the
    float layer would use (computed with them in eval mode, so without side effects)."""
    plist = layer.parametrizations.weight
    k = _quantizer_index(layer)
    if k == 0:
        return plist.original
    chain = list(plist)[:k]
    with _eval_mode(chain):
        if plist.is_tensor:
            x = chain[0](plist.original)
        else:
            x = chain[0](*(getattr(plist, f"original{i}") for i in range(plist.ntensors)))
        for p in chain[1:]:
            x = p(x)
    return x


def _current_weight(module: nn.Module) -> Tensor:
    """``module.weight`` without side effects (parametrizations in eval mode)."""
    if not parametrize.is_parametrized(module, "weight"):
        return module.weight.detach()
    with _eval_mode(module.parametrizations.weight):
        return module.weight.detach()


def _make(method: str, weight: Tensor, options: dict) -> WeightQuantizer:
    return methods.get(method).build(weight, **options)


def quantize(
    model: nn.Module,
    method: str,
    *,
    keep_first_last: bool = True,
    exclude: Sequence[str] = (),
    act_bits: int | None = None,
    act_rule: str = "absmax",
    **options,
) -> nn.Module:
    """Quantize the weights of every Linear / Conv layer of ``model`` in place.

    Args:
        model: any ``nn.Module``; its layers stay the same classes.
        method: ``"binary"``, ``"twn"``, ``"ttq"``, ``"inq"``, ``"bitnet"`` or any other name
            in the registry ``ttqlab.methods`` (``ttqlab.METHODS`` lists them with their
            options).
        keep_first_last: keep the first and the last quantizable layer (in registration
            order) in full precision, as TTQ does for AlexNet. ``False`` quantizes them
            too, as TWN's LeNet demo and INQ do.
        exclude: names (from ``model.named_modules()``) of further layers to keep float.
        act_bits: quantize each quantized layer's input to this many bits (2..16; BitNet
            uses 8), per token, with the straight-through gradient; ``None`` (default)
            keeps activations float. ``act_rule``: ``"absmax"`` (BitNet) or ``"pow2"``
            (INQ's powers of two). See ``ttqlab.activations``.
        **options: per method: binary ``scale="layer"`` (or ``"channel"``, ``"none"``);
            twn ``factor=0.7, per_channel=False``; ttq ``t=0.05,
            sparsity=None, reduce="sum", init="mean"``; inq ``bits=5`` (drive the
            schedule with ``ttqlab.INQ``); bitnet ``eps=1e-5``.

    Returns:
        ``model`` itself, for chaining.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; pass one of {sorted(METHODS)}")
    unknown = set(options) - set(METHODS[method])
    if unknown:
        allowed = ", ".join(METHODS[method]) or "none"
        raise ValueError(f"unknown option(s) {sorted(unknown)} for method {method!r}; "
                         f"allowed: {allowed}")
    if act_bits is not None:
        _activations.check_act_bits(act_bits)
        _activations._check_rule(act_rule)
    if any(True for _ in quantized_layers(model)):
        raise ValueError("model is already quantized; call ttqlab.unquantize(model) first "
                         "(or start from a fresh model)")
    layers = quantizable_layers(model)
    names = {n for n, _ in layers}
    missing = [n for n in exclude if n not in names]
    if missing:
        raise ValueError(f"exclude names {missing} are not Linear/Conv layers of the model; "
                         f"choose from {sorted(names)}")
    skip = set(exclude)
    if keep_first_last and layers:
        skip |= {layers[0][0], layers[-1][0]}
    chosen = [(n, m) for n, m in layers if n not in skip]
    if not chosen:
        hint = (" (it has only the first and last layer; pass keep_first_last=False)"
                if keep_first_last and layers else "")
        raise _coverage.no_layer_error(model, hint)
    for name, module in chosen:
        w = _current_weight(module)
        if not bool(torch.isfinite(w).all()):
            raise ValueError(f"layer {name!r} has NaN or inf weights; cannot quantize it")
        if not bool(w.any()):
            warnings.warn(f"layer {name!r} has all-zero weights; its quantized weights are "
                          f"all zero until training moves them", stacklevel=2)
    quantizers = [_make(method, _current_weight(m), options) for _, m in chosen]
    for (_, module), q in zip(chosen, quantizers):
        parametrize.register_parametrization(module, "weight", q)
    if act_bits is not None:
        _activations.attach([m for _, m in chosen], act_bits, act_rule)
    _coverage.warn_float_weights(model)  # attention / recurrent / embedding weights
    return model


def _remove(module: nn.Module, leave_parametrized: bool) -> None:
    """``parametrize.remove_parametrizations`` that is safe on deep copies.

    ``register_parametrization`` gives the module a generated class, and a deep copy of
    the model shares that class; removing deletes the ``weight`` property from the class,
    which would break the other copy. So first give this module a class of its own.
    """
    cls = type(module)
    module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    parametrize.remove_parametrizations(module, "weight", leave_parametrized=leave_parametrized)


def unquantize(model: nn.Module) -> nn.Module:
    """Remove ttqlab's parametrizations in place, restoring the latent float weights.

    Where the weight also carries other parametrizations (``spectral_norm``,
    ``weight_norm``), only ttqlab's entry is removed and theirs stay as they were.
    """
    for _, module, _ in list(quantized_layers(model)):
        plist = module.parametrizations.weight
        if len(plist) == 1:
            _remove(module, leave_parametrized=False)
        else:
            del plist[_quantizer_index(module)]
    _activations.detach(model)
    return model


def bake(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A plain float model whose weights are the quantized values (no parametrizations).

    Its outputs equal the quantized model's exactly. The latent weights are discarded in
    the returned model; with ``inplace=False`` (default) ``model`` itself is untouched.
    """
    target = model if inplace else copy.deepcopy(model)
    for _, module, _ in list(quantized_layers(target)):
        with _eval_mode(module.parametrizations.weight):  # the weight the last forward used
            _remove(module, leave_parametrized=True)
    return target


@dataclass
class QuantizedWeight:
    """One quantized layer as integers plus scales.

    ``codes``: int8, the weight's shape. Ternary and binary: {-1, 0, +1}. INQ: the signed
    level index ``sign(W) * (n - n2 + 1)`` (0 for a zero weight), i.e. the weight is
    ``sign(c) * 2^(n2 + |c| - 1)``. ``scales``: ``alpha`` (binary, twn), ``wp`` / ``wn``
    (ttq), ``n1`` and ``bits`` (inq). ``dequantize()`` rebuilds the weight exactly.
    """

    method: str
    codes: Tensor
    scales: dict[str, Tensor]
    options: dict = field(default_factory=dict)
    bits: int = 2

    @property
    def shape(self) -> torch.Size:
        return self.codes.shape

    @property
    def sparsity(self) -> float:
        n = self.codes.numel()
        return float((self.codes == 0).sum()) / n if n else 0.0

    def dequantize(self) -> Tensor:
        return methods.get(self.method).dequantize(self.codes, self.scales)


@torch.no_grad()
def extract(model: nn.Module) -> dict[str, QuantizedWeight]:
    """Integer codes and scales of every quantized layer, keyed by module name.

    ``extract(model)[name].dequantize()`` equals ``dict(model.named_modules())[name].weight``
    bit for bit. INQ layers must be fully frozen (``inq.step()`` returned 1.0).
    """
    out = {}
    for name, module, q in quantized_layers(model):
        if not isinstance(module.parametrizations.weight[-1], WeightQuantizer):
            raise ValueError(f"layer {name!r}: a parametrization was registered after "
                             f"ttqlab's quantizer, so layer.weight is not the quantized "
                             f"weight; remove it (parametrize.remove_parametrizations) or "
                             f"register it before ttqlab.quantize")
        w = latent_weight(module)
        out[name] = QuantizedWeight(q.method, q.codes(w).cpu(),
                                    {k: v.cpu() for k, v in q.scales(w).items()},
                                    q.options(), q.bits)
    if not out:
        raise ValueError("model has no quantized layers; call ttqlab.quantize(model, method)")
    return out
