"""Turn a float model into a quantized one, and back.

``quantize(model, method)`` registers a weight quantizer (``ttqlab.methods``) on every
``nn.Conv1d/2d/3d`` and ``nn.Linear`` weight with ``torch.nn.utils.parametrize``, and on
the weight matrices of attention and recurrent layers: ``nn.MultiheadAttention``'s
``in_proj_weight`` (q, k and v stacked, one matrix as torch stores it, so one threshold
and one scale for the three) or its separate ``q/k/v_proj_weight``, and the
``weight_ih_l*`` / ``weight_hh_l*`` (``weight_hr_l*``) of ``nn.RNN`` / ``nn.GRU`` /
``nn.LSTM``, each one matrix (a GRU's r, z, n gates stacked). Biases, BatchNorm,
LayerNorm and embeddings stay float (``ttqlab.coverage`` warns about the weights left
float). A Linear / Conv weight is named after its layer (``"fc1"``), any other after
its parameter (``"encoder.self_attn.in_proj_weight"``, ``"gru.weight_hh_l0"``).
``extract`` reads the integer codes and scales back out, ``bake`` writes the quantized
weights into a plain float model, ``unquantize`` restores the latent float weights.
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
from .coverage import _OTHER_WEIGHT, _QUANTIZABLE, _weight_names
from .methods import WeightQuantizer

__all__ = [
    "METHODS",
    "QuantizedWeight",
    "bake",
    "extract",
    "quantizable_layers",
    "quantizable_weights",
    "quantize",
    "quantized_layers",
    "quantized_weights",
    "state_key",
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

def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for every Linear / Conv1d/2d/3d, in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _QUANTIZABLE)]


def _weight_name(module_name: str, param: str) -> str:
    """The name ttqlab gives a weight: the layer's for ``weight``, else the parameter's."""
    if param == "weight":
        return module_name
    return f"{module_name}.{param}" if module_name else param


def state_key(name: str) -> str:
    """The ``state_dict`` key of the weight ttqlab calls ``name`` (``"fc1"`` ->
    ``"fc1.weight"``, ``"attn.in_proj_weight"`` -> itself; a bare layer is ``""``)."""
    if _OTHER_WEIGHT.fullmatch(name.rsplit(".", 1)[-1]):
        return name
    return f"{name}.weight" if name else "weight"


def quantizable_weights(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """``(name, module, parameter name)`` for every weight ``quantize`` can quantize:
    Linear / Conv weights (named after the layer) and attention / recurrent weight
    matrices (named ``"<module>.<parameter>"``), in registration order."""
    out = []
    for mname, module in model.named_modules():
        for param in _weight_names(module):
            if parametrize.is_parametrized(module, param) or isinstance(
                    getattr(module, param, None), Tensor):
                out.append((_weight_name(mname, param), module, param))
    return out


def _quantizer_of(module: nn.Module, param: str = "weight") -> WeightQuantizer | None:
    if not parametrize.is_parametrized(module, param):
        return None
    for p in module.parametrizations[param]:
        if isinstance(p, WeightQuantizer):
            return p
    return None


def quantized_weights(model: nn.Module,
                      ) -> Iterator[tuple[str, nn.Module, str, WeightQuantizer]]:
    """``(name, module, parameter name, quantizer)`` for every weight ``quantize``
    converted (the parameter is ``"weight"`` for Linear / Conv layers)."""
    for mname, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for param in list(module.parametrizations.keys()):
            q = _quantizer_of(module, param)
            if q is not None:
                yield _weight_name(mname, param), module, param, q


def quantized_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module, WeightQuantizer]]:
    """``(name, layer, quantizer)`` for every weight ``quantize`` converted. For an
    attention or recurrent weight ``layer`` is the ``nn.MultiheadAttention`` / ``nn.GRU``
    and ``name`` ends with the parameter's name (see :func:`quantized_weights`)."""
    for name, module, _, q in quantized_weights(model):
        yield name, module, q


def _quantizer_index(layer: nn.Module, param: str = "weight") -> int:
    return next(i for i, p in enumerate(layer.parametrizations[param])
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


def latent_weight(layer: nn.Module, param: str = "weight") -> Tensor:
    """The float weight ttqlab's quantizer reads: ``layer.parametrizations.weight.original``
    (the tensor the optimizer trains), or, when the weight already carried other
    parametrizations (``spectral_norm``, ``weight_norm``), their output, i.e. the weight the
    float layer would use (computed with them in eval mode, so without side effects).
    ``param`` names another parameter (``"in_proj_weight"``, ``"weight_hh_l0"``)."""
    plist = layer.parametrizations[param]
    k = _quantizer_index(layer, param)
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


def _current_weight(module: nn.Module, param: str = "weight") -> Tensor:
    """``module.weight`` (or ``param``) without side effects (parametrizations in eval
    mode)."""
    if not parametrize.is_parametrized(module, param):
        return getattr(module, param).detach()
    with _eval_mode(module.parametrizations[param]):
        return getattr(module, param).detach()


def _make(method: str, weight: Tensor, options: dict) -> WeightQuantizer:
    try:
        return methods.get(method).build(weight, **options)
    except (NotImplementedError, RuntimeError) as e:
        if not weight.is_meta:
            raise
        raise ValueError(f"method {method!r} (options {options}) reads the weights' values to "
                         f"set up its scales, and this model is on the meta device (shapes, no "
                         f"values): load its weights first (model.to_empty(device='cpu'), "
                         f"model.load_state_dict(...)), then quantize ({type(e).__name__})"
                         ) from None


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
    """Quantize the weights of every Linear / Conv layer of ``model`` in place, and the
    weight matrices of its ``nn.MultiheadAttention`` and ``nn.RNN`` / ``nn.GRU`` /
    ``nn.LSTM`` layers (each stacked matrix, e.g. attention's q/k/v ``in_proj_weight``,
    is one quantized layer with one threshold and one set of scales).

    Args:
        model: any ``nn.Module``; its layers stay the same classes.
        method: ``"binary"``, ``"twn"``, ``"ttq"``, ``"inq"``, ``"bitnet"`` or any other name
            in the registry ``ttqlab.methods`` (``ttqlab.METHODS`` lists them with their
            options).
        keep_first_last: keep the first and the last quantizable weight (in registration
            order) in full precision, as TTQ does for AlexNet. ``False`` quantizes them
            too, as TWN's LeNet demo and INQ do. (A GRU's first weight is its
            ``weight_ih_l0``, the one that reads the input.)
        exclude: names of further weights to keep float: a layer's name (from
            ``model.named_modules()``; for an attention / recurrent layer all its
            weights) or a weight's name such as ``"gru.weight_hh_l0"``.
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
    layers = quantizable_weights(model)
    owner = {n: m for n, m in model.named_modules()}
    names = {n for n, _, _ in layers}
    missing = [n for n in exclude if n not in names
               and not (n in owner and _weight_names(owner[n]))]
    if missing:
        raise ValueError(f"exclude names {missing} are not quantizable layers or weights of "
                         f"the model; choose from {sorted(names)}")
    skip = set(exclude)
    if keep_first_last and layers:
        skip |= {layers[0][0], layers[-1][0]}
    chosen = [(n, m, p) for n, m, p in layers
              if n not in skip and not any(m is owner.get(e) for e in exclude)]
    if not chosen:
        hint = (" (it has only the first and last layer; pass keep_first_last=False)"
                if keep_first_last and layers else "")
        raise _coverage.no_layer_error(model, hint)
    for name, module, param in chosen:
        w = _current_weight(module, param)
        if w.is_meta:  # shapes only (a model built before its weights are loaded)
            continue
        if not bool(torch.isfinite(w).all()):
            raise ValueError(f"layer {name!r} has NaN or inf weights; cannot quantize it")
        if not bool(w.any()):
            warnings.warn(f"layer {name!r} has all-zero weights; its quantized weights are "
                          f"all zero until training moves them", stacklevel=2)
    quantizers = [_make(method, _current_weight(m, p), options) for _, m, p in chosen]
    for (_, module, param), q in zip(chosen, quantizers):
        parametrize.register_parametrization(module, param, q)
        if isinstance(module, nn.RNNBase):
            _copyable_rnn(module)
    if act_bits is not None:
        modules = list({id(m): m for _, m, _ in chosen}.values())
        _activations.attach(modules, act_bits, act_rule)
    _coverage.warn_float_weights(model)  # attention / recurrent / embedding weights
    return model


def _copyable_rnn(module: nn.RNNBase) -> None:
    """Let ``copy.deepcopy`` copy a parametrized ``nn.RNN`` / ``GRU`` / ``LSTM``.

    The recurrent module keeps the weights of its last forward in ``_flat_weights``; with
    a parametrization these are computed tensors with a gradient history, which deepcopy
    refuses. The copy gets them detached (the forward recomputes them anyway: it notices
    that ``module.weight_ih_l0`` is a new tensor). ``register_parametrization`` gave the
    module a class of its own, so this touches no other module.
    """
    cls = type(module)
    if "_ttqlab_copyable" in cls.__dict__:
        return
    parent = cls.__deepcopy__

    def __deepcopy__(self, memo):
        saved = self._flat_weights
        self._flat_weights = [w.detach() if isinstance(w, Tensor) else w for w in saved]
        try:
            return parent(self, memo)
        finally:
            self._flat_weights = saved

    cls.__deepcopy__ = __deepcopy__
    cls._ttqlab_copyable = True


def _remove(module: nn.Module, leave_parametrized: bool, param: str = "weight") -> None:
    """``parametrize.remove_parametrizations`` that is safe on deep copies.

    ``register_parametrization`` gives the module a generated class, and a deep copy of
    the model shares that class; removing deletes the ``weight`` property from the class,
    which would break the other copy. So first give this module a class of its own.
    """
    cls = type(module)
    module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    parametrize.remove_parametrizations(module, param, leave_parametrized=leave_parametrized)


def unquantize(model: nn.Module) -> nn.Module:
    """Remove ttqlab's parametrizations in place, restoring the latent float weights.

    Where the weight also carries other parametrizations (``spectral_norm``,
    ``weight_norm``), only ttqlab's entry is removed and theirs stay as they were.
    """
    for _, module, param, _ in list(quantized_weights(model)):
        plist = module.parametrizations[param]
        if len(plist) == 1:
            _remove(module, leave_parametrized=False, param=param)
        else:
            del plist[_quantizer_index(module, param)]
    _activations.detach(model)
    return model


def bake(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A plain float model whose weights are the quantized values (no parametrizations).

    Its outputs equal the quantized model's exactly. The latent weights are discarded in
    the returned model; with ``inplace=False`` (default) ``model`` itself is untouched.
    """
    target = model if inplace else copy.deepcopy(model)
    for _, module, param, _ in list(quantized_weights(target)):
        with _eval_mode(module.parametrizations[param]):  # the weight the last forward used
            _remove(module, leave_parametrized=True, param=param)
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
    for name, module, param, q in quantized_weights(model):
        if not isinstance(module.parametrizations[param][-1], WeightQuantizer):
            raise ValueError(f"layer {name!r}: a parametrization was registered after "
                             f"ttqlab's quantizer, so layer.{param} is not the quantized "
                             f"weight; remove it (parametrize.remove_parametrizations) or "
                             f"register it before ttqlab.quantize")
        w = latent_weight(module, param)
        out[name] = QuantizedWeight(q.method, q.codes(w).cpu(),
                                    {k: v.cpu() for k, v in q.scales(w).items()},
                                    q.options(), q.bits)
    if not out:
        raise ValueError("model has no quantized layers; call ttqlab.quantize(model, method)")
    return out
