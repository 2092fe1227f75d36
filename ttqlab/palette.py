"""One colour per method, per layer and per weight region, shared by every figure of the
course (``ttqlab.viz`` for matplotlib, ``ttqlab.widgets`` for plotly), so that TTQ or
``conv2`` has the same colour in every plot. Hex strings: both libraries accept them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

__all__ = ["FLOAT_COLOR", "LAYER_COLORS", "METHOD_COLORS", "REGION_COLORS", "SPLIT_DASH",
           "layer_color", "layer_colors", "method_color"]

#: colour of the full-precision control (near-black)
FLOAT_COLOR = "#333333"


class _MethodColors(Mapping):
    """Method (or variant) name -> colour: the ``color`` each method declares on its class
    (``ttqlab.methods``: matplotlib's tab10 hues), and the fp32 control's. A live view of
    the registry, read on first use (importing the registry imports PyTorch); a method
    without a colour of its own is left out (``method_color`` gives it a spare one)."""

    def _table(self) -> dict[str, str]:
        from . import methods
        from .stats import FLOAT

        return {FLOAT: FLOAT_COLOR, **{r.name: r.color for r in methods.rows() if r.color}}

    def __getitem__(self, name: str) -> str:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())

    def __repr__(self) -> str:
        return repr(self._table())


#: colour of each method
METHOD_COLORS: Mapping[str, str] = _MethodColors()
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
    colors = dict(METHOD_COLORS)
    key = str(method).lower()
    if key in colors:
        return colors[key]
    head = key.replace("_", " ").split(" ")[0]
    if head in colors:
        return colors[head]
    spare = [c for c in _OTHER if c not in colors.values()] or list(_OTHER)
    return spare[i % len(spare)]


def layer_color(index: int) -> str:
    """The colour of the ``index``-th quantized layer (0 = the first)."""
    return LAYER_COLORS[index % len(LAYER_COLORS)]


def layer_colors(names: Sequence[str]) -> dict[str, str]:
    """``{layer name: colour}`` in the order given (the model's order)."""
    return {n: layer_color(i) for i, n in enumerate(names)}
