"""ttqlab: learn and use ternary and low-bit weight quantization (TWN, TTQ, INQ) on PyTorch.

    import ttqlab
    model = ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=0)
    ttqlab.quantize(model, "ttq")                    # or "binary", "twn", "inq"
    history = ttqlab.fit(model, ttqlab.data.load("digits"), epochs=10)
    print(ttqlab.layer_report(model))

``import ttqlab`` imports nothing heavy: every public name below (and every submodule,
``ttqlab.viz``, ``ttqlab.export``, ...) is imported on first use (PEP 562 module
``__getattr__``), so ``ttqlab --help`` answers without importing PyTorch.
``from ttqlab import quantize`` and ``from ttqlab import quantizers as Q, viz`` work as usual.
"""

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the submodule that defines it (imported when the name is first used)
_FROM: dict[str, str] = {
    "FitConfig": "fit_config",
    "INQ": "inq",
    "METHODS": "convert",
    "History": "train",
    "QuantizedWeight": "convert",
    "bake": "convert",
    "evaluate": "train",
    "extract": "convert",
    "fit": "train",
    "layer_report": "stats",
    "quantize": "convert",
    "quantized_layers": "convert",
    "unquantize": "convert",
}
#: the submodules listed in ``__all__`` (any other submodule is importable on first use too)
_SUBMODULES = ("data", "exercises", "export", "layers", "methods", "models", "quantizers",
               "viz", "widgets")

__all__ = [  # = {"__version__", *_FROM, *_SUBMODULES} (tests/test_cli.py checks)
    "INQ",
    "METHODS",
    "FitConfig",
    "History",
    "QuantizedWeight",
    "__version__",
    "bake",
    "data",
    "evaluate",
    "exercises",
    "export",
    "extract",
    "fit",
    "layer_report",
    "layers",
    "methods",
    "models",
    "quantize",
    "quantized_layers",
    "quantizers",
    "unquantize",
    "viz",
    "widgets",
]

if TYPE_CHECKING:  # for type checkers and IDEs: the names as if imported eagerly
    from . import data, exercises, export, layers, methods, models, quantizers, viz, widgets
    from .convert import (
        METHODS,
        QuantizedWeight,
        bake,
        extract,
        quantize,
        quantized_layers,
        unquantize,
    )
    from .fit_config import FitConfig
    from .inq import INQ
    from .stats import layer_report
    from .train import History, evaluate, fit


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use, and then bind every public name here, as
    an eager ``import ttqlab`` did (ttqlab.checking hides and restores them as it hides the
    modules' own; a stand-in it put in place for a while is returned, never kept)."""
    if name in _FROM:
        for other, module in _FROM.items():
            value = getattr(importlib.import_module(f".{module}", __name__), other)
            if type(value).__module__ != "ttqlab.checking":
                globals()[other] = value
        return getattr(importlib.import_module(f".{_FROM[name]}", __name__), name)
    if name in _SUBMODULES or (name.isidentifier() and not name.startswith("__") and
                               importlib.util.find_spec(f".{name}", __name__) is not None):
        return importlib.import_module(f".{name}", __name__)  # sets the attribute itself
    raise AttributeError(f"module 'ttqlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if "ipykernel" in sys.modules:  # in Jupyter: sharp (retina) figures
    from .viz import sharp_in_jupyter as _sharp_in_jupyter

    _sharp_in_jupyter()
