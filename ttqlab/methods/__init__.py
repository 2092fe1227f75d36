"""Quantization methods, one file each, and the registry from method name to class.

* ``binary.py``, ``twn.py``, ``ttq.py``, ``inq.py``, ``bitnet.py``: one method each, the
  paper's pure tensor rule, its gradient and its parametrization module (a
  :class:`~ttqlab.methods.base.WeightQuantizer`), registered with ``@register``;
* ``base.py``: the :class:`~ttqlab.methods.base.WeightQuantizer` interface and the helpers
  the methods share;
* ``kernels.py``: the fast CPU / eager-GPU / ``torch.compile`` forms of the rules, behind
  one dispatch, each checked against its method's reference.

Every file in this package is imported here, so adding a method means adding one file
(and its tests): the class declares its options, manifest fields, report tag, colour and
training driver, and ``ttqlab.quantize``, ``extract``, ``layer_report``, ``fit``'s history,
``ttqlab.export``, the figures' colours, ``ttqlab.experiments`` and ``ttqlab train`` find
it through :func:`get`, :func:`names` and :func:`rows`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any, NamedTuple

from .base import Option, Variant, WeightQuantizer

__all__ = ["Option", "Row", "Variant", "WeightQuantizer", "get", "names", "register", "rows",
           "unregister"]

_REGISTRY: dict[str, type[WeightQuantizer]] = {}


def register(cls: type[WeightQuantizer]) -> type[WeightQuantizer]:
    """Class decorator: make ``cls`` available as ``ttqlab.quantize(model, cls.method)``."""
    if not (isinstance(cls, type) and issubclass(cls, WeightQuantizer)):
        raise TypeError(f"register a subclass of ttqlab.methods.WeightQuantizer, got {cls!r}")
    if not cls.method or not isinstance(cls.method, str):
        raise ValueError(f"{cls.__name__}.method must be a non-empty string (the method name)")
    other = _REGISTRY.get(cls.method)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"method {cls.method!r} is already registered by {other.__name__}; "
                         f"pick another name or call unregister({cls.method!r}) first")
    taken = set(_REGISTRY) | {v.name for c in _REGISTRY.values() if c is not other
                              for v in c.VARIANTS}
    clash = [v.name for v in cls.VARIANTS if v.name in taken]
    if clash or cls.method in taken - set(_REGISTRY):
        raise ValueError(f"{cls.__name__}: {clash or [cls.method]} already name a method or "
                         f"a variant; rename them")
    _REGISTRY[cls.method] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a method (e.g. a toy method a test registered)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> type[WeightQuantizer]:
    """The quantizer class of method ``name``."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; pass one of {names()}") from None


def names() -> list[str]:
    """The registered method names, sorted."""
    return sorted(_REGISTRY)


class Row(NamedTuple):
    """One row ``ttqlab.experiments`` can train: a method, or one of its :class:`Variant` s."""

    name: str
    cls: type[WeightQuantizer]
    tag: str
    color: str | None
    finetune_lr: float | None
    needs_trained: bool
    driver: Mapping[str, Any]


def rows() -> list[Row]:
    """Every trainable row, in the methods' ``order`` (then name), each method's variants
    right after it."""
    out = []
    for cls in sorted(_REGISTRY.values(), key=lambda c: (c.order, c.method)):
        out.append(Row(cls.method, cls, cls.tag, cls.color, cls.finetune_lr,
                       cls.needs_trained, {}))
        out += [Row(v.name, cls, v.tag, v.color, v.finetune_lr,
                    cls.needs_trained if v.needs_trained is None else v.needs_trained,
                    dict(v.driver)) for v in cls.VARIANTS]
    return out


for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")
