"""Quantization methods, one file each, and the registry from method name to class.

* ``binary.py``, ``twn.py``, ``ttq.py``, ``inq.py``, ``bitnet.py``: one method each, the
  paper's pure tensor rule, its gradient and its parametrization module (a
  :class:`~ttqlab.methods.base.WeightQuantizer`), registered with ``@register``;
* ``base.py``: the :class:`~ttqlab.methods.base.WeightQuantizer` interface and the helpers
  the methods share;
* ``kernels.py``: the fast CPU / eager-GPU / ``torch.compile`` forms of the rules, behind
  one dispatch, each checked against its method's reference.

Every file in this package is imported here, so adding a method means adding one file
(and its tests); ``ttqlab.quantize``, ``extract``, ``layer_report``, ``fit``'s history and
``ttqlab.export`` find it through :func:`get`.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import WeightQuantizer

__all__ = ["WeightQuantizer", "get", "names", "register", "unregister"]

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


for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")
