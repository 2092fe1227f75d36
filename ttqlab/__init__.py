"""ttqlab: learn and use ternary and low-bit weight quantization (TWN, TTQ, INQ) on PyTorch.

    import ttqlab
    model = ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=0)
    ttqlab.quantize(model, "ttq")                    # or "binary", "twn", "inq"
    history = ttqlab.fit(model, ttqlab.data.load("digits"), epochs=10)
    print(ttqlab.layer_report(model))
"""

import importlib

from . import layers, methods, models, quantizers  # noqa: F401  (layers: old import path)
from .convert import METHODS, QuantizedWeight, bake, extract, quantize, quantized_layers, unquantize
from .inq import INQ
from .stats import layer_report
from .train import History, evaluate, fit

__version__ = "0.1.0"

if "ipykernel" in __import__("sys").modules:  # in Jupyter: sharp (retina) figures
    from .viz import sharp_in_jupyter as _sharp_in_jupyter

    _sharp_in_jupyter()

# Submodules imported on first use, so ``import ttqlab`` stays light.
_LAZY = ("data", "exercises", "export", "viz", "widgets")


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'ttqlab' has no attribute {name!r}")

__all__ = [
    "INQ",
    "METHODS",
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
    "models",
    "quantize",
    "quantized_layers",
    "quantizers",
    "unquantize",
    "viz",
    "widgets",
]
