"""Interactive explorers and a live training dashboard (ipywidgets + plotly).

Each function returns an object that shows itself in Jupyter (last expression of a cell,
or ``display(obj)``) and exposes its controls and figure as attributes, so that code can
drive it too::

    from ttqlab import widgets
    ex = widgets.threshold_explorer(model.conv2.weight)
    ex.slider.value = 1.2            # the histogram, lines and numbers update
    ex.state["sparsity"]             # what the readout shows

    dash = widgets.training_dashboard()
    display(dash)
    ttqlab.fit(model, data, callbacks=[dash])   # curves update after every epoch

Needs ipywidgets >= 8, plotly >= 6 and anywidget (``pip install 'ttqlab[notebooks]'``);
without them every function prints what is missing and returns the static matplotlib
figure of ``ttqlab.viz`` instead (the dashboard prints one line per epoch). The numbers
every explorer draws come from ``ttqlab.figure_data``, as the static figures' do, and its
colours from ``ttqlab.palette`` and ``viz.FIGURE_COLORS``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from . import figure_data as FD
from . import viz
from .palette import REGION_COLORS, SPLIT_DASH, layer_color, method_color
from .validation import is_int, is_number
from .viz import FIGURE_COLORS

__all__ = [
    "Explorer",
    "LevelsExplorer",
    "PartitionExplorer",
    "StaticDashboard",
    "ThresholdExplorer",
    "TradeoffExplorer",
    "TrainingDashboard",
    "levels_explorer",
    "missing_dependencies",
    "partition_explorer",
    "threshold_explorer",
    "tradeoff_explorer",
    "training_dashboard",
]

_HEIGHT = 440
#: smallest font anywhere in a widget (px), and the length of every slider
_FONT, _SLIDER_WIDTH = 13, "480px"


def missing_dependencies() -> str | None:
    """What the interactive widgets need and is not installed (None when all is there)."""
    missing = []
    for name in ("ipywidgets", "plotly", "anywidget"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if not missing:
        import ipywidgets
        import plotly

        if int(plotly.__version__.split(".")[0]) < 6:
            missing.append(f"plotly>=6 (found {plotly.__version__})")
        if int(ipywidgets.__version__.split(".")[0]) < 8:
            missing.append(f"ipywidgets>=8 (found {ipywidgets.__version__})")
    if not missing:
        return None
    return (f"ttqlab.widgets: the interactive version needs {', '.join(missing)} "
            f"(pip install 'ttqlab[notebooks]'); showing a static matplotlib figure instead.")


def _static(make_figure):
    """Print why the widget is unavailable; return ``make_figure()`` or None."""
    reason = missing_dependencies()
    if reason is None:
        return None
    print(reason)
    return make_figure()


def _go():
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    return go, make_subplots


def _figure(rows: int, cols: int, titles: Sequence[str], title: str, **kwargs):
    """A plain ``go.Figure`` (no widget yet, so nothing is sent to the browser while the
    caller adds its traces): see :func:`_widget`."""
    go, make_subplots = _go()
    height = kwargs.pop("height", None)
    fig = go.Figure(make_subplots(rows=rows, cols=cols, subplot_titles=list(titles), **kwargs))
    # no fixed width: the figure fills the notebook's output area
    fig.update_layout(title=title, template="plotly_white", height=height or _HEIGHT,
                      autosize=True, font={"size": _FONT},
                      margin={"l": 70, "r": 30, "t": 90, "b": 60},
                      legend={"font": {"size": max(12, _FONT - 1)}})
    fig.update_annotations(font_size=_FONT + 1)  # the subplot titles
    return fig


_WIDGET_CLASS = None


def _widget(figure):
    """``figure`` (complete: every trace and the layout) as a ``go.FigureWidget`` whose
    browser model is created with all of it.

    Why: plotly's ``FigureWidget`` opens its comm (the ``comm_open`` message the browser
    builds the model from) at the very start of its constructor, with an empty
    ``_widget_data`` / ``_widget_layout``, and sends the figure afterwards as a state update.
    The browser queues that update until the widget's JavaScript module has loaded, and
    draws every view waiting for that module the moment it loads, *before* the queued update
    is applied; plotly's view never redraws on a ``_widget_data`` change. (And on a loaded
    machine anywidget may give up on a model after 2 s, "Failed to initialize model", and
    then drops every later message to it.) So an explorer shown while Run All keeps the
    kernel busy could draw empty axes. This subclass opens the comm only at the end of the
    constructor, so the model starts with the complete figure (tests/launch checks it in
    Chromium).
    """
    global _WIDGET_CLASS
    if _WIDGET_CLASS is None:
        go, _ = _go()

        class CompleteFigureWidget(go.FigureWidget):
            """A ``go.FigureWidget`` whose comm opens with the complete figure."""

            def __init__(self, *args, **kwargs):
                self._defer_open = True
                super().__init__(*args, **kwargs)
                self._defer_open = False
                self.open()

            def open(self):
                if not getattr(self, "_defer_open", False):
                    super().open()

        _WIDGET_CLASS = CompleteFigureWidget
    return _WIDGET_CLASS(figure)


def _sync(figure) -> None:
    """Resend the widget's complete state, as ``FigureWidget._repr_mimebundle_`` does when a
    figure is displayed on its own (an explorer displays its ``VBox``, which skips it)."""
    from copy import deepcopy

    figure._widget_layout = deepcopy(figure._layout_obj._props)
    figure._widget_data = deepcopy(figure._data)


def _json_safe(values) -> list:
    """A (nested) list with NaN replaced by None: plotly draws a gap for both, but only
    None survives the JSON message to the browser."""
    a = np.asarray(values, dtype=float)
    return np.where(np.isnan(a), None, a).tolist()


def _vlines(xs: Sequence[float], top: float) -> tuple[list, list]:
    """x, y of vertical segments from 0 to ``top`` at each x (None-separated)."""
    x, y = [], []
    for v in xs:
        x += [v, v, None]
        y += [0, top, None]
    return x, y


def _style_control(control) -> None:
    """Sliders at least 480 px long, descriptions never cut off."""
    name = type(control).__name__
    if "Slider" in name:
        control.layout.width = _SLIDER_WIDTH
    if hasattr(control, "style") and hasattr(control.style, "description_width"):
        control.style.description_width = "initial"


class Explorer:
    """A plotly figure with ipywidgets controls above it and a text readout.

    Attributes: ``figure`` (a ``plotly.graph_objects.FigureWidget``), ``controls``
    (name -> widget), ``readout`` (an ``ipywidgets.HTML``), ``state`` (the numbers the
    readout shows), ``box`` (the whole layout, what Jupyter displays).
    """

    def __init__(self, figure, controls: Mapping[str, object]):
        """``figure``: the explorer's plain ``go.Figure`` with all its traces. It is drawn
        from the controls' current values (``update()``) before it becomes a widget, so the
        browser receives the first figure complete, not empty axes and a queue of updates.
        """
        import ipywidgets as W

        self.figure = figure
        self.controls = dict(controls)
        self.readout = W.HTML()
        self.state: dict = {}
        self.update()  # on the plain figure: nothing is sent to the browser yet
        self.figure = _widget(figure)
        for control in self.controls.values():
            _style_control(control)
        self.box = W.VBox([W.HBox(list(self.controls.values()),
                                  layout={"flex_flow": "row wrap"}), self.readout,
                           self.figure])
        for control in self.controls.values():
            control.observe(self._changed, names="value")

    def _changed(self, change=None) -> None:
        self.update()

    def update(self) -> None:
        """Redraw from the current control values."""
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        _sync(self.figure)
        return self.box._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        values = ", ".join(f"{k}={getattr(c, 'value', None)!r}" for k, c in self.controls.items())
        return f"{type(self).__name__}({values})"


# --------------------------------------------------------------------------- TWN threshold


class ThresholdExplorer(Explorer):
    """Slide the ternary threshold ``Delta = factor * E|W|`` over a weight histogram.

    Left: the histogram with the regions ``T = -1 / 0 / +1`` coloured, the current
    ``+-Delta`` (black), TWN's ``0.7 E|W|`` (orange) and the exact L2 optimum (green).
    Right: the relative error ``||W - alpha T||^2 / ||W||^2`` against the threshold.
    Attributes: ``slider`` (the factor), ``figure``, ``readout``, ``state``, and the data
    drawn: ``histogram`` (``figure_data.TernaryHistogram``; ``histogram.at(delta)`` at the
    slider's threshold) and ``curve`` (``figure_data.ErrorCurve``).
    """

    def __init__(self, w, factor: float = 0.7, *, max_factor: float = 2.5, bins: int = 80,
                 title: str | None = None):
        import ipywidgets as W

        go, _ = _go()
        self.histogram = FD.ternary_histogram_data(w, bins=bins)  # the bins, fixed
        h = self.histogram.bins
        self.weights, self.mean = self.histogram.weights, self.histogram.mean_abs
        self.centers, self.counts = h.centers, h.counts
        self.curve = FD.ternary_error_curve_data(self.weights, max_factor=max_factor, num=251)
        self.optimal = self.curve.marks["optimal"].factor
        self.factors, err = self.curve.factors, self.curve.error
        top = float(h.counts.max()) * 1.05
        self.slider = W.FloatSlider(value=factor, min=0.0, max=max_factor, step=0.01,
                                    description="Δ / E|W|", continuous_update=True,
                                    readout_format=".2f")
        fig = _figure(1, 2, ["weight histogram", "reconstruction error"],
                      title or f"Ternary threshold explorer ({self.weights.size:,} weights)",
                      column_widths=[0.62, 0.38])
        width = float(h.edges[1] - h.edges[0])
        for region in self.histogram.regions.values():
            fig.add_trace(go.Bar(x=h.centers.tolist(), y=h.counts.tolist(), width=width,
                                 name=region.label, marker_color=REGION_COLORS[region.name],
                                 marker_line_width=0), row=1, col=1)
        for name, f, color, dash in (
                ("±Δ (slider)", factor, FIGURE_COLORS["threshold"], "solid"),
                ("TWN 0.7 E|W|", self.curve.marks["twn"].factor, FIGURE_COLORS["twn"], "dash"),
                ("exact optimum", self.optimal, FIGURE_COLORS["optimal"], "dot")):
            x, y = _vlines([-f * self.mean, f * self.mean], top)
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=name,
                                     line={"color": color, "dash": dash}), row=1, col=1)
        fig.add_trace(go.Scatter(x=self.factors.tolist(), y=(100 * err).tolist(),
                                 mode="lines", name="error", line={"color": "black"},
                                 showlegend=False), row=1, col=2)
        # TWN's 0.7 and the optimum are often a few hundredths apart: a large ring and a small
        # filled diamond, so neither hides the other
        for name, key, marker in (
                ("TWN", "twn", {"color": FIGURE_COLORS["twn"], "size": 16,
                                "symbol": "circle-open", "line": {"width": 2.5}}),
                ("optimum", "optimal", {"color": FIGURE_COLORS["optimal"], "size": 9,
                                        "symbol": "diamond",
                                        "line": {"width": 1, "color": "black"}})):
            f, e = self.curve.marks[key].factor, self.curve.marks[key].error
            fig.add_trace(go.Scatter(x=[f], y=[100 * e], mode="markers", name=name,
                                     marker=marker, showlegend=False,
                                     hovertemplate=f"{name}: Δ = %{{x:.3f}} E|W|, "
                                                   "error %{y:.2f}%<extra></extra>"),
                          row=1, col=2)
        fig.add_trace(go.Scatter(x=[factor], y=[0], mode="markers", name="slider",
                                 marker={"color": "black", "size": 12, "symbol": "x"},
                                 showlegend=False), row=1, col=2)
        fig.update_layout(barmode="overlay", bargap=0)
        fig.update_xaxes(title_text="weight value", row=1, col=1)
        fig.update_yaxes(title_text="count (weights per bin)", row=1, col=1)
        fig.update_xaxes(title_text="threshold Δ / E|W| (multiples of mean |weight|)",
                         row=1, col=2)
        fig.update_yaxes(title_text="relative error ||W-αT||²/||W||² (%)", row=1, col=2)
        super().__init__(fig, {"slider": self.slider})

    def update(self) -> None:
        f = float(self.slider.value)
        data = self.histogram.at(f * self.mean)
        delta, fit = data.delta, data.fit
        top = float(self.counts.max()) * 1.05
        with self.figure.batch_update():
            for trace, region in zip(self.figure.data[:3], data.regions.values()):
                sel = region.bins
                trace.y = np.where(sel, self.counts, 0).tolist()
                # an empty region gets a hollow legend swatch (same name: the legend, and so
                # the panels, keep their width while the slider moves)
                shown = bool((self.counts[sel] > 0).any())
                trace.marker.color = REGION_COLORS[region.name] if shown else "rgba(0,0,0,0)"
                trace.marker.line = {"width": 0 if shown else 1, "color": "#7f7f7f"}
            self.figure.data[3].x, self.figure.data[3].y = _vlines([-delta, delta], top)
            self.figure.data[-1].x, self.figure.data[-1].y = [f], [100 * fit["error"]]
        self.state = {"factor": f, **fit, "twn_factor": self.curve.marks["twn"].factor,
                      "optimal_factor": self.optimal}
        self.readout.value = (
            f"Δ = {f:.2f}·E|W| = {delta:.4g} &nbsp;|&nbsp; sparsity "
            f"<b>{100 * fit['sparsity']:.1f}%</b> &nbsp;|&nbsp; α = {fit['alpha']:.4g} "
            f"&nbsp;|&nbsp; error <b>{100 * fit['error']:.2f}%</b> &nbsp;|&nbsp; "
            f"TWN: 0.70·E|W|, exact optimum: {self.optimal:.3f}·E|W|")


def threshold_explorer(w, factor: float = 0.7, **kwargs) -> ThresholdExplorer:
    """Interactive ternary threshold on the weights ``w`` (see :class:`ThresholdExplorer`);
    static fallback: ``viz.ternary_histogram``."""
    fallback = _static(lambda: viz.ternary_histogram(
        w, factor * float(np.abs(FD.flat(w)).mean())))
    return fallback if fallback is not None else ThresholdExplorer(w, factor, **kwargs)


# --------------------------------------------------------------------------- INQ levels


class LevelsExplorer(Explorer):
    """INQ's power-of-two levels for a bit width chosen with a slider.

    Left: the weight histogram with the levels ``{+-2^n1, ..., +-2^n2, 0}`` as lines.
    Right: how many weights round to each level (its signed index, 0 = zero).
    Attributes: ``slider`` (bits, 2..8), ``figure``, ``readout``, ``state``.
    """

    def __init__(self, w, bits: int = 5, *, bins: int = 100, title: str | None = None):
        import ipywidgets as W

        go, _ = _go()
        a = FD.flat(w)
        self.weights = torch.as_tensor(a)
        h = FD.histogram(a, bins)
        self.top = float(h.counts.max()) * 1.05
        self.slider = W.IntSlider(value=bits, min=2, max=8, description="bits b",
                                  continuous_update=True)
        fig = _figure(1, 2, ["weights and levels", "weights per level after rounding"],
                      title or f"INQ power-of-two levels ({a.size:,} weights)")
        fig.add_trace(go.Bar(x=h.centers.tolist(), y=h.counts.tolist(), name="weights",
                             marker_color=FIGURE_COLORS["weights"], marker_line_width=0,
                             width=float(h.edges[1] - h.edges[0])), row=1, col=1)
        fig.add_trace(go.Scatter(x=[], y=[], mode="lines", name="levels",
                                 line={"color": FIGURE_COLORS["levels"], "width": 1}),
                      row=1, col=1)
        fig.add_trace(go.Bar(x=[], y=[], name="after rounding",
                             marker_color=FIGURE_COLORS["levels"], showlegend=False),
                      row=1, col=2)
        fig.update_layout(bargap=0)
        fig.update_xaxes(title_text="weight value", row=1, col=1)
        fig.update_yaxes(title_text="count (weights per bin)", row=1, col=1)
        fig.update_xaxes(title_text="level index sign(W)·(n − n2 + 1) (0 = zero)", row=1,
                         col=2)
        fig.update_yaxes(title_text="count (weights)", row=1, col=2)
        super().__init__(fig, {"slider": self.slider})

    def update(self) -> None:
        bits = int(self.slider.value)
        lv = FD.pow2_levels_data(self.weights, bits)
        n1, n2, levels = lv.n1, lv.n2, lv.levels
        with self.figure.batch_update():
            self.figure.data[1].x, self.figure.data[1].y = _vlines(levels.tolist(), self.top)
            self.figure.data[2].x = list(lv.per_level)
            self.figure.data[2].y = list(lv.per_level.values())
            self.figure.data[2].hovertext = [f"level {v:+.4g}" for v in
                                             lv.level_values.values()]
        zeroed, err = lv.zeroed, lv.error
        self.state = {"bits": bits, "n1": n1, "n2": n2, "levels": len(levels),
                      "zeroed": zeroed, "error": err}
        self.readout.value = (
            f"b = {bits}: n1 = {n1}, n2 = {n2}, <b>{len(levels)} levels</b> "
            f"(±2^{n2} … ±2^{n1} and 0) &nbsp;|&nbsp; rounded to zero: {100 * zeroed:.1f}% "
            f"&nbsp;|&nbsp; error ||W−Q(W)||²/||W||²: <b>{100 * err:.2f}%</b>")


def levels_explorer(w, bits: int = 5, **kwargs) -> LevelsExplorer:
    """Interactive INQ levels for ``w`` (see :class:`LevelsExplorer`); static fallback:
    ``viz.pow2_histogram``."""
    fallback = _static(lambda: viz.pow2_histogram(w, bits))
    return fallback if fallback is not None else LevelsExplorer(w, bits, **kwargs)


# --------------------------------------------------------------------------- INQ partition


def inq_partitions(w, bits: int = 5, schedule: Sequence[float] = (0.5, 0.75, 0.875, 1.0),
                   strategy: str = "magnitude", seed: int = 0) -> list[tuple[torch.Tensor,
                                                                             torch.Tensor]]:
    """``(frozen_mask, frozen_values)`` after each step of ``ttqlab.INQ`` on the weight
    ``w`` alone (without re-training in between; step 0 = nothing frozen)."""
    from .inq import INQ

    w = torch.as_tensor(w).detach().float()
    w2 = w.reshape(w.shape[0], -1) if w.dim() > 1 else w.reshape(1, -1)
    layer = nn.Linear(w2.shape[1], w2.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(w2)
    model = nn.Sequential(layer)
    inq = INQ(model, bits=bits, schedule=schedule, strategy=strategy, seed=seed,
              keep_first_last=False)
    q = inq.layers[0][2]
    out = [(q.frozen_mask.clone().reshape(w.shape), q.frozen_values.clone().reshape(w.shape))]
    while not inq.done:
        inq.step()
        out.append((q.frozen_mask.clone().reshape(w.shape),
                    q.frozen_values.clone().reshape(w.shape)))
    return out


class PartitionExplorer(Explorer):
    """Step through INQ's partition of one layer: which weights are frozen at each step,
    largest-magnitude first (the paper) or at random (its ablation).

    Left: a map of the layer's weights (first ``max_rows`` x ``max_cols``), frozen cells
    coloured by their power-of-two value, free cells grey. Right: histogram of the free
    and the frozen weights. Attributes: ``slider`` (step), ``strategy``
    (``"magnitude"`` / ``"random"``), ``figure``, ``readout``, ``state``.
    """

    def __init__(self, w, bits: int = 5, schedule: Sequence[float] = (0.5, 0.75, 0.875, 1.0),
                 *, strategy: str = "magnitude", seed: int = 0, max_rows: int = 32,
                 max_cols: int = 64, bins: int = 60, title: str | None = None):
        import ipywidgets as W

        go, _ = _go()
        w = torch.as_tensor(w).detach().float()
        FD.flat(w)
        self.schedule = tuple(schedule)
        self.steps = {s: inq_partitions(w, bits, schedule, s, seed)
                      for s in ("magnitude", "random")}
        self.w, self._crop = w, {"max_rows": max_rows, "max_cols": max_cols}
        self.w_flat = w.flatten().numpy()
        self.edges = np.histogram_bin_edges(self.w_flat, bins=bins)
        self.w_map = self._data(torch.zeros_like(w, dtype=torch.bool), None).weight_map
        self.slider = W.IntSlider(value=1, min=0, max=len(self.schedule), description="step")
        if strategy not in self.steps:
            raise ValueError(f"strategy must be 'magnitude' or 'random', got {strategy!r}")
        self.strategy = W.ToggleButtons(options=["magnitude", "random"], value=strategy,
                                        description="partition")
        fig = _figure(1, 2, ["frozen (colour) and free (grey) weights", "weight histogram"],
                      title or f"INQ partition explorer, b = {bits} bits, "
                               f"schedule {self.schedule}", column_widths=[0.55, 0.45],
                      horizontal_spacing=0.2)
        vmax = float(np.abs(self.w_map).max()) or 1.0
        fig.add_trace(go.Heatmap(z=np.ones_like(self.w_map).tolist(), colorscale=[[0, "#bdbdbd"],
                                                                           [1, "#bdbdbd"]],
                                 showscale=False, name="free"), row=1, col=1)
        fig.add_trace(go.Heatmap(z=self.w_map.tolist(), colorscale="RdBu", reversescale=True,
                                 zmin=-vmax, zmax=vmax, name="frozen",
                                 colorbar={"title": {"text": "frozen<br>value", "side": "top"},
                                           "x": 0.46, "xanchor": "left", "thickness": 12,
                                           "len": 0.8}),
                      row=1, col=1)
        centers = ((self.edges[:-1] + self.edges[1:]) / 2).tolist()
        width = float(self.edges[1] - self.edges[0])
        fig.add_trace(go.Bar(x=centers, y=[], width=width, name="free",
                             marker_color=FIGURE_COLORS["weights"], marker_line_width=0),
                      row=1, col=2)
        fig.add_trace(go.Bar(x=centers, y=[], width=width, name="frozen (power of two)",
                             marker_color=FIGURE_COLORS["frozen"], marker_line_width=0),
                      row=1, col=2)
        fig.update_layout(barmode="stack", bargap=0)
        fig.update_yaxes(autorange="reversed", row=1, col=1)
        fig.update_xaxes(title_text=f"input index (flattened, first {self.w_map.shape[1]})",
                         row=1, col=1)
        fig.update_yaxes(title_text=f"output channel (first {self.w_map.shape[0]})", row=1,
                         col=1)
        fig.update_xaxes(title_text="latent weight value", row=1, col=2)
        fig.update_yaxes(title_text="count (weights per bin)", row=1, col=2)
        super().__init__(fig, {"slider": self.slider, "strategy": self.strategy})

    def _data(self, mask, values) -> FD.PartitionData:
        return FD.inq_partition_data(self.w, mask, frozen_values=values, bins=self.edges,
                                     **self._crop)

    def update(self) -> None:
        step = int(self.slider.value)
        data = self._data(*self.steps[self.strategy.value][step])
        m2, v2 = data.mask_map, data.value_map
        with self.figure.batch_update():
            self.figure.data[0].z = _json_safe(np.where(m2, np.nan, 1.0))
            self.figure.data[1].z = _json_safe(np.where(m2, v2, np.nan))
            self.figure.data[2].y = data.free.counts.tolist()
            self.figure.data[3].y = data.frozen.counts.tolist()
        frac = data.frozen_fraction
        self.state = {"step": step, "strategy": self.strategy.value, "frozen": frac,
                      "mean |W| frozen": data.mean_abs_frozen,
                      "mean |W| free": data.mean_abs_free}
        target = self.schedule[step - 1] if step else 0.0
        self.readout.value = (
            f"step {step} of {len(self.schedule)} ({self.strategy.value} partition): "
            f"<b>{100 * frac:.1f}%</b> frozen (schedule: {100 * target:g}%) &nbsp;|&nbsp; "
            f"mean |W| frozen {self.state['mean |W| frozen']:.3g}, "
            f"free {self.state['mean |W| free']:.3g}")


def partition_explorer(w, bits: int = 5, schedule: Sequence[float] = (0.5, 0.75, 0.875, 1.0),
                       **kwargs) -> PartitionExplorer:
    """Interactive INQ partition of ``w`` (see :class:`PartitionExplorer`); static
    fallback: ``viz.inq_partition`` after the first step."""
    def static():
        mask, values = inq_partitions(w, bits, schedule, kwargs.get("strategy", "magnitude"),
                                      kwargs.get("seed", 0))[1]
        return viz.inq_partition(w, mask, frozen_values=values)
    fallback = _static(static)
    return fallback if fallback is not None else PartitionExplorer(w, bits, schedule, **kwargs)


# --------------------------------------------------------------------------- trade-offs


class TradeoffExplorer(Explorer):
    """Accuracy of a set of runs against a quantity chosen from a dropdown, and the
    per-layer sparsity of the run chosen with a slider.

    ``rows``: dicts with at least ``test_acc`` and the x quantities (e.g. ``sparsity``,
    ``model bytes``, ``energy (nJ)``), optionally ``label`` and ``layers``
    (``{layer: sparsity}``); ``group`` names the key that splits them into lines.
    Attributes: ``x`` (dropdown), ``slider`` (run index), ``figure``, ``readout``,
    ``state``.
    """

    def __init__(self, rows: Sequence[Mapping], x: str = "sparsity", *,
                 group: str | None = None, y: str = "test_acc", title: str | None = None):
        import ipywidgets as W

        go, _ = _go()
        self.rows = FD.check_rows(rows, [y])
        numeric = [k for k in self.rows[0] if k != y and all(
            isinstance(r.get(k), int | float) and not isinstance(r.get(k), bool)
            for r in self.rows)]
        if x not in numeric:
            raise ValueError(f"x={x!r} is not a numeric key of every row; choose from "
                             f"{numeric}")
        self.y, self.group = y, group
        self.x = W.Dropdown(options=numeric, value=x, description="x axis")
        # the slider names the run (its label), not a bare index; its value is the index
        self.slider = W.SelectionSlider(options=[(self._label(i), i) for i in
                                                 range(len(self.rows))], value=0,
                                        description="run")
        fig = _figure(1, 2, ["accuracy trade-off", "sparsity per layer (chosen run)"],
                      title or "Trade-off explorer", column_widths=[0.6, 0.4],
                      horizontal_spacing=0.16)
        self.groups: dict[str, list[int]] = {}
        for i, r in enumerate(self.rows):
            self.groups.setdefault(str(r.get(group, "")) if group else "runs", []).append(i)
        for k, (g, idx) in enumerate(self.groups.items()):
            fig.add_trace(go.Scatter(x=[], y=[], mode="lines+markers", name=g,
                                     line={"color": method_color(g, k)},
                                     text=[self._label(i) for i in idx]), row=1, col=1)
        fig.add_trace(go.Scatter(x=[], y=[], mode="markers", name="chosen run",
                                 marker={"size": 16, "color": "rgba(0,0,0,0)",
                                         "line": {"color": "red", "width": 2}}), row=1, col=1)
        fig.add_trace(go.Bar(x=[], y=[], name="sparsity", marker_color="#1f77b4",
                             showlegend=False), row=1, col=2)
        fig.update_yaxes(title_text=FD.axis_label(y), row=1, col=1)
        fig.update_xaxes(title_text="layer", row=1, col=2)
        # range to 105: the "100" tick label then sits below the subplot title, not on it
        fig.update_yaxes(title_text="zero weights (%)", range=[0, 105], row=1, col=2)
        super().__init__(fig, {"x": self.x, "slider": self.slider})

    def _label(self, i: int) -> str:
        return setting_label(self.rows[i], self.group)

    def update(self) -> None:
        xkey = self.x.value
        chosen = self.rows[int(self.slider.value)]

        def sx(r):
            return FD.scaled(xkey, [r[xkey]])[0]

        def sy(r):
            return FD.scaled(self.y, [r[self.y]])[0]

        layers = chosen.get("layers") or {}
        with self.figure.batch_update():
            for trace, idx in zip(self.figure.data, self.groups.values()):
                order = sorted(idx, key=lambda i: self.rows[i][xkey])
                trace.x = _json_safe([sx(self.rows[i]) for i in order])
                trace.y = _json_safe([sy(self.rows[i]) for i in order])
                trace.text = [self._label(i) for i in order]
            hi = self.figure.data[len(self.groups)]
            hi.x, hi.y = [sx(chosen)], [sy(chosen)]
            bars = self.figure.data[len(self.groups) + 1]
            bars.x, bars.y = list(layers), [100 * float(v) for v in layers.values()]
            title = FD.axis_label(xkey)
            if xkey == "setting" and self.group and len(self.groups) > 1:
                # one axis, several kinds of setting (t and p): say which is which
                title += f" ({' / '.join(self.groups)}: see the legend)"
            self.figure.layout.xaxis.title.text = title
        self.state = {"x": xkey, "run": int(self.slider.value),
                      **{k: v for k, v in chosen.items() if k != "layers"}}
        self.readout.value = f"<b>{self._label(int(self.slider.value))}</b>: " + ", ".join(
            _readout(k, v) for k, v in chosen.items() if k not in ("layers", "label"))


#: keys that say what a run was set to, in the order a label names them
_SETTING_KEYS = ("method", "t", "p", "sparsity target", "factor", "bits", "epochs", "seed")


def setting_label(row: Mapping, group: str | None = None) -> str:
    """A run's name for sliders and hover text: its ``label``, else its setting with the
    setting's name (``"threshold t = 0.05"``, ``"t=0.05"``, ``"sparsity 50%"``), never a bare
    index, so that runs of different kinds (t and p) cannot be confused."""
    if "label" in row:
        return str(row["label"])
    if "setting" in row:
        kind = row.get(group) if group else row.get("mode")
        return f"{kind} = {row['setting']}" if kind is not None else f"setting {row['setting']}"
    parts = [f"{k}={row[k]:g}" if isinstance(row[k], float) else f"{k}={row[k]}"
             for k in _SETTING_KEYS if k in row]
    if parts:
        return ", ".join(parts)
    if "sparsity" in row:
        return f"sparsity {100 * float(row['sparsity']):.0f}%"
    return ", ".join(_readout(k, v) for k, v in row.items() if k != "layers")


def _readout(key: str, value) -> str:
    """One labelled value: percentages in %, whole numbers with thousands separators, other
    numbers (numpy's too; a NaN reads "nan") to 4 digits; a flag or a text as it is."""
    if not (is_number(value) or isinstance(value, float)):
        return f"{key}: {value}"
    if key in FD.PERCENT:
        return f"{FD.axis_label(key).split(' (')[0]} {100 * float(value):.2f}%"
    return f"{FD.axis_label(key)} {value:,}" if is_int(value) else \
        f"{FD.axis_label(key)} {float(value):.4g}"


def tradeoff_explorer(rows: Sequence[Mapping], x: str = "sparsity", **kwargs) -> TradeoffExplorer:
    """Interactive accuracy trade-off over result rows (see :class:`TradeoffExplorer`);
    static fallback: ``viz.tradeoff``."""
    fallback = _static(lambda: viz.tradeoff(rows, x, kwargs.get("y", "test_acc"),
                                            group=kwargs.get("group")))
    return fallback if fallback is not None else TradeoffExplorer(rows, x, **kwargs)


# --------------------------------------------------------------------------- dashboard


class TrainingDashboard:
    """Live loss, accuracy and per-layer curves, updated by ``fit`` after every epoch.

    Pass it as a callback: ``ttqlab.fit(model, data, callbacks=[dash])`` (it is callable
    as ``dash(history, model)``; ``dash.callback`` is the same). ``layer_key`` picks the
    per-layer column of the history (``"sparsity"``, ``"flips"``, ``"wp"``, ``"wn"``,
    ``"alpha"``, ``"frozen"``). Attributes: ``figure``, ``readout``, ``history``.
    """

    def __init__(self, layer_key: str = "sparsity", *, title: str | None = None):
        import ipywidgets as W

        go, _ = _go()
        self.layer_key = layer_key
        self.history = None
        # two wide panels on top, the per-layer panel below across the whole width; each
        # panel has its own legend (plotly's legend, legend2, legend3)
        self.figure = _figure(2, 2, ["loss (log axis: epoch 0 does not flatten the rest)",
                                     "accuracy", f"{layer_key} per quantized layer"],
                              title or "Training dashboard", height=720,
                              specs=[[{}, {}], [{"colspan": 2}, None]],
                              vertical_spacing=0.26, horizontal_spacing=0.14)
        for col, key, legend in ((1, "loss", "legend"), (2, "accuracy", "legend2")):
            for split in ("train", "test"):
                self.figure.add_trace(go.Scatter(
                    x=[], y=[], mode="lines+markers", name=f"{split} {key}", legend=legend,
                    line={"dash": SPLIT_DASH[split],
                          "color": "#222222" if split == "test" else "#888888"}),
                    row=1, col=col)
        # legends under each top panel's epoch axis (never over the curves), the layers' on
        # the right of the bottom panel
        legend = {"font": {"size": max(12, _FONT - 1)}, "orientation": "h",
                  "yanchor": "top", "xanchor": "center"}
        lay = self.figure.layout
        below = lay.yaxis.domain[0] - 0.1
        self.figure.update_layout(
            legend={**legend, "x": sum(lay.xaxis.domain) / 2, "y": below},
            legend2={**legend, "x": sum(lay.xaxis2.domain) / 2, "y": below},
            legend3={"font": {"size": max(12, _FONT - 1)}, "x": 1.0, "xanchor": "left",
                     "y": lay.yaxis3.domain[1], "yanchor": "top"})
        for row, col in ((1, 1), (1, 2), (2, 1)):
            self.figure.update_xaxes(title_text="epoch", row=row, col=col)
        self.figure.update_yaxes(title_text="cross-entropy (nats per sample)", type="log",
                                 row=1, col=1)
        self.figure.update_yaxes(title_text="accuracy (%)", row=1, col=2)
        self.figure.update_yaxes(title_text=FD.axis_label(layer_key), row=2, col=1)
        self.figure = _widget(self.figure)
        self.readout = W.HTML("waiting for the first epoch …")
        self.box = W.VBox([self.readout, self.figure])

    @property
    def callback(self):
        return self

    def __call__(self, history, model=None) -> None:
        go, _ = _go()
        self.history = history
        curves = FD.learning_series(history)
        ep, held = curves.epochs, curves.heldout  # "test", or "val" with a validation split
        series = [curves.train_loss, curves.heldout_loss, curves.train_acc, curves.heldout_acc]
        names = history.layer_names
        with self.figure.batch_update():
            for trace, ys in zip(self.figure.data[:4], series):
                trace.x, trace.y = ep, _json_safe(ys)
            split = {"val": "validation"}.get(held, held)  # the legend names the split shown
            self.figure.data[1].name = f"{split} loss"
            self.figure.data[3].name = f"{split} accuracy"
            have = {t.name for t in self.figure.data[4:]}
            for i, name in enumerate(names):
                if name not in have:
                    self.figure.add_trace(go.Scatter(x=[], y=[], mode="lines+markers",
                                                     name=name, legend="legend3",
                                                     line={"color": layer_color(i)}),
                                          row=2, col=1)
            per_layer = FD.layer_series(history, self.layer_key,
                                        layers=[t.name for t in self.figure.data[4:]])
            for trace in self.figure.data[4:]:
                trace.x, values = per_layer[trace.name]
                trace.y = _json_safe(values)
            # accuracy: the range of the data (every epoch shown), not a fixed 0-100
            accs = [a for k in (2, 3) for a in series[k] if not math.isnan(a)]
            if accs:
                self.figure.update_yaxes(range=[max(0.0, min(accs) - 3),
                                                min(100.5, max(accs) + 3)], row=1, col=2)
            self.figure.update_xaxes(dtick=max(1, math.ceil(max(ep) / 10)) if ep else 1)
            losses = [v for k in (0, 1) for v in series[k] if v > 0 and math.isfinite(v)]
            if losses:  # full-size labels at 1-2-5 steps (plotly's own log labels are tiny)
                ticks = _log_ticks(min(losses), max(losses))
                self.figure.update_yaxes(tickmode="array", tickvals=ticks,
                                         ticktext=[f"{t:g}" for t in ticks], row=1, col=1)
        last = history.last
        self.readout.value = (f"epoch {last['epoch']}: train loss {last['train_loss']:.4f}, "
                              f"{held} loss {last[f'{held}_loss']:.4f}, {held} accuracy "
                              f"<b>{100 * last[f'{held}_acc']:.2f}%</b>")

    def _repr_mimebundle_(self, **kwargs):
        _sync(self.figure)  # displayed again after training: the curves so far, complete
        return self.box._repr_mimebundle_(**kwargs)


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 tick values covering ``[lo, hi]`` on a log axis (at least two)."""
    ticks = []
    for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        ticks += [m * 10.0 ** e for m in (1, 2, 5)]
    inside = [t for t in ticks if lo / 1.5 <= t <= hi * 1.5]
    return inside if len(inside) >= 2 else [t for t in ticks if lo / 10 <= t <= hi * 10]


class StaticDashboard:
    """The dashboard without ipywidgets / plotly: prints one line per epoch; ``figure``
    draws ``viz.learning_curves`` of the last history it saw."""

    def __init__(self, layer_key: str = "sparsity", *, title: str | None = None):
        self.layer_key, self.title, self.history = layer_key, title, None

    @property
    def callback(self):
        return self

    def __call__(self, history, model=None) -> None:
        self.history = history
        last, held = history.last, history.heldout
        print(f"epoch {last['epoch']}: train loss {last['train_loss']:.4f}, {held} loss "
              f"{last[f'{held}_loss']:.4f}, {held} accuracy {100 * last[f'{held}_acc']:.2f}%")

    @property
    def figure(self):
        if self.history is None:
            raise ValueError("no epoch yet; pass the dashboard to fit(callbacks=[dash])")
        return viz.learning_curves(self.history, title=self.title)


def training_dashboard(layer_key: str = "sparsity", *,
                       title: str | None = None) -> TrainingDashboard | StaticDashboard:
    """A live training dashboard to pass to ``fit(callbacks=[dash])`` and display (see
    :class:`TrainingDashboard`); without the widget libraries a :class:`StaticDashboard`."""
    reason = missing_dependencies()
    if reason is not None:
        print(reason.replace("a static matplotlib figure", "one line per epoch"))
        return StaticDashboard(layer_key, title=title)
    return TrainingDashboard(layer_key, title=title)

