"""One colour per method, per layer and per weight region, shared by every figure of the
course (``ttqlab.viz`` for matplotlib, ``ttqlab.widgets`` for plotly), so that TTQ or
``conv2`` has the same colour in every plot. Hex strings: both libraries accept them.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["LAYER_COLORS", "METHOD_COLORS", "REGION_COLORS", "SPLIT_DASH", "layer_color",
           "layer_colors", "method_color"]

#: colour of each method (matplotlib's tab10 hues, fp32 in near-black)
METHOD_COLORS = {"fp32": "#333333", "binary": "#9467bd", "twn": "#ff7f0e", "ttq": "#1f77b4",
                 "inq": "#2ca02c", "inq-oneshot": "#98df8a", "bitnet": "#8c564b"}
#: colour of the negative / zero / positive region of a ternary weight
REGION_COLORS = {"negative": "#d62728", "zero": "#b0b0b0", "positive": "#1f77b4"}
#: colours of the quantized layers, in the model's order (ColorBrewer Dark2: none of them
#: is a method's colour, so a layer is never mistaken for a method)
LAYER_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02",
                "#a6761d", "#666666")
#: line style of the train and test curves of one run (same colour, different dash)
SPLIT_DASH = {"test": "solid", "train": "dash"}

_OTHER = ("#17becf", "#bcbd22", "#e377c2", "#7f7f7f", "#8c564b", "#d62728")


def method_color(method: str, i: int = 0) -> str:
    """The method's colour (``"TTQ"``, ``"ttq"`` and ``"ttq t=0.05"`` alike); an unknown
    label gets the ``i``-th of a few colours no method uses."""
    key = str(method).lower()
    if key in METHOD_COLORS:
        return METHOD_COLORS[key]
    head = key.replace("_", " ").split(" ")[0]
    return METHOD_COLORS.get(head, _OTHER[i % len(_OTHER)])


def layer_color(index: int) -> str:
    """The colour of the ``index``-th quantized layer (0 = the first)."""
    return LAYER_COLORS[index % len(LAYER_COLORS)]


def layer_colors(names: Sequence[str]) -> dict[str, str]:
    """``{layer name: colour}`` in the order given (the model's order)."""
    return {n: layer_color(i) for i, n in enumerate(names)}
