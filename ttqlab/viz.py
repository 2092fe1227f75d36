"""Static matplotlib figures for the course (and for readers who only look).

Every function draws the numbers of ``ttqlab.figure_data`` (which the widgets draw too)
and returns a ``matplotlib.figure.Figure`` with a title and labelled axes
(units in brackets), already closed in pyplot so that a notebook shows it exactly once:
as the last expression of a cell, or with ``display(fig)``; ``fig.savefig(path)`` works
anywhere. matplotlib is imported on first use, so ``import ttqlab`` stays light.

    from ttqlab import viz
    viz.ternary_histogram(layer.weight)            # the three regions of TWN's threshold
    viz.learning_curves({"fp32": h1, "twn": h2})   # loss and accuracy over epochs
    viz.ttq_scales(history)                        # W_p, W_n per layer over training
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import figure_data as FD
from .palette import METHOD_COLORS, REGION_COLORS, layer_color, method_color

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from .train import History

__all__ = [
    "COLORS",
    "FIGURE_COLORS",
    "LABELS",
    "REGION_COLORS",
    "accuracy_intervals",
    "accuracy_vs_sparsity",
    "inq_partition",
    "kernel_grid",
    "layer_bars",
    "layer_curves",
    "learning_curves",
    "method_bars",
    "pow2_histogram",
    "ste_plot",
    "ternary_error_curve",
    "ternary_fit",
    "ternary_histogram",
    "tradeoff",
    "ttq_scales",
]

#: colour of each method in every figure (``ttqlab.palette``, shared with the widgets)
COLORS = METHOD_COLORS
#: axis label (with unit) of each quantity the figures plot (``figure_data.LABELS``)
LABELS = FD.LABELS
_PERCENT = FD.PERCENT
#: the colours of the figures that are not a method's, a layer's or a region's
#: (``ttqlab.palette``), shared with the widgets: the current threshold, TWN's 0.7 E|W| (in
#: TWN's colour), the arXiv version's 0.75 E|W|, the exact L2 optimum, INQ's levels (in
#: INQ's colour), a plain weight histogram, INQ's frozen weights, and the magnitudes that
#: round to zero
FIGURE_COLORS = {"threshold": "black", "twn": METHOD_COLORS["twn"], "twn_v2": "#bcbd22",
                 "optimal": "#2ca02c", "levels": METHOD_COLORS["inq"],
                 "weights": REGION_COLORS["zero"], "frozen": "#1f77b4",
                 "rounds_to_zero": REGION_COLORS["negative"]}


# --------------------------------------------------------------------------- helpers


_SHARP = False


def _plt():
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - exercised only without matplotlib
        raise ImportError("ttqlab.viz needs matplotlib: pip install matplotlib "
                          "(or pip install 'ttqlab[notebooks]')") from None
    _sharp(plt)
    return plt


def _sharp(plt=None) -> None:
    """Sharp figures on HiDPI screens: ``fig.savefig`` writes 200 dpi, and in Jupyter
    matplotlib shows figures at double resolution ("retina"); both once."""
    global _SHARP
    if _SHARP:
        return
    _SHARP = True
    if plt is not None:
        plt.rcParams["savefig.dpi"] = 200
    sharp_in_jupyter()


def sharp_in_jupyter() -> None:
    """Make Jupyter's inline matplotlib figures "retina" (double resolution), for every
    figure of the kernel, the notebook's own ``plt`` calls included.

    Called by ``import ttqlab`` inside a Jupyter kernel. It sets the inline backend's
    configuration (which the backend reads when pyplot is first imported) and, when the
    backend is already active, switches its format now. Outside Jupyter it does nothing."""
    import sys

    if "ipykernel" not in sys.modules:
        return
    try:
        from IPython import get_ipython
        from matplotlib_inline.config import InlineBackend

        shell = get_ipython()
        if shell is None:
            return
        InlineBackend.instance(parent=shell).figure_formats = {"retina"}
        if "matplotlib.pyplot" in sys.modules:
            from matplotlib_inline.backend_inline import set_matplotlib_formats

            set_matplotlib_formats("retina")
    except Exception:  # no matplotlib-inline: nothing to configure
        pass


def _figure(nrows: int = 1, ncols: int = 1, *, width: float = 6.4, height: float = 4.0,
            **kwargs):
    plt = _plt()
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                             layout="constrained", squeeze=False, **kwargs)
    return fig, axes


def _done(fig) -> Figure:
    """Close the figure in pyplot (so Jupyter's inline backend does not show it a second
    time) and return it."""
    _plt().close(fig)
    return fig


# the data helpers live in figure_data (shared with the widgets); the old names still work
_flat = FD.flat
_label = FD.axis_label
_scaled = FD.scaled
_check_rows = FD.check_rows
_error_curve = FD.error_curve
ternary_fit = FD.ternary_fit


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


# --------------------------------------------------------------------------- ternary


def ternary_histogram(w, delta: float | None = None, *, marks: Mapping[str, float] | None = None,
                      bins: int = 80, title: str | None = None) -> Figure:
    """Histogram of ``w`` with the three regions of a ternary threshold coloured.

    ``T_i = -1`` (red) where ``W_i < -delta``, ``0`` (grey) where ``|W_i| <= delta``,
    ``+1`` (blue) where ``W_i > delta``. ``delta`` defaults to TWN's ``0.7 E|W|``.
    ``marks`` adds dashed lines at other thresholds, e.g. ``{"optimal": d_opt}``.
    """
    data = FD.ternary_histogram_data(w, delta, bins=bins)
    delta, fit, h = data.delta, data.fit, data.bins
    fig, axes = _figure(width=7.5)
    ax = axes[0, 0]
    for region in data.regions.values():
        sel = region.bins
        ax.bar(h.centers[sel], h.counts[sel], width=h.widths[sel],
               color=REGION_COLORS[region.name], label=region.label, edgecolor="none")
    ax.axvline(delta, color=FIGURE_COLORS["threshold"], lw=1.5, label=f"±Δ = {delta:.3g}")
    ax.axvline(-delta, color=FIGURE_COLORS["threshold"], lw=1.5)
    for (name, d), style in zip((marks or {}).items(), ("--", ":", "-.", (0, (5, 1)))):
        color = FIGURE_COLORS["optimal" if "opt" in name else "twn"]
        ax.axvline(d, color=color, ls=style, lw=1.5, label=f"{name}: ±{d:.3g}")
        ax.axvline(-d, color=color, ls=style, lw=1.5)
    ax.text(0.02, 0.97, f"sparsity {100 * fit['sparsity']:.1f}%\nα = {fit['alpha']:.3g}\n"
            f"error ||W-αT||²/||W||² = {100 * fit['error']:.1f}%",
            transform=ax.transAxes, va="top", fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "#cccccc"})
    ax.set_xlabel("weight value")
    ax.set_ylabel("count (weights per bin)")
    ax.set_title(title or f"Ternary regions of {data.weights.size:,} weights at threshold "
                          f"Δ = {delta:.3g}")
    handles, labels = ax.get_legend_handles_labels()
    for region in data.regions.values():
        if not region.bins.any() and region.label in labels:
            # an empty region: a hollow swatch that says so (not the default colour)
            j = labels.index(region.label)
            n = region.count
            handles[j] = _hollow_patch()
            labels[j] = f"{region.label} ({'none' if n == 0 else f'{n:,}, under one bin'})"
    ax.legend(handles, labels, fontsize=8, loc="upper right")
    return _done(fig)


def _hollow_patch():
    """A legend swatch for an empty region: an outline, no fill (never a default colour)."""
    from matplotlib.patches import Rectangle

    return Rectangle((0, 0), 0, 0, facecolor="none", edgecolor="#7f7f7f", lw=0.8)


def ternary_error_curve(w, *, max_factor: float = 2.5, num: int = 400,
                        title: str | None = None) -> Figure:
    """Relative L2 error ``||W - alpha T||^2 / ||W||^2`` (with the best alpha for each
    threshold) and the sparsity, against the threshold in multiples of ``E|W|``.

    Marks TWN's ``0.7 E|W|`` (authors' code), ``0.75 E|W|`` (latest arXiv version) and
    the exact optimum (:func:`ttqlab.quantizers.optimal_ternary_params`).
    """
    data = FD.ternary_error_curve_data(w, max_factor=max_factor, num=num)
    fig, axes = _figure(width=7.5)
    ax = axes[0, 0]
    ax.plot(data.factors, 100 * data.error, color="black", label="error (left axis)")
    ax2 = ax.twinx()
    ax2.plot(data.factors, 100 * data.sparsity, color="#7f7f7f", ls="--",
             label="sparsity (right axis)")
    ax2.set_ylabel("sparsity (% of weights that are zero)")
    ax2.set_ylim(0, 100)
    # the three marks often lie within a few hundredths of each other: distinct shapes and
    # sizes, largest hollow at the back, smallest filled in front, so none hides another
    f_opt = data.marks["optimal"].factor
    marks = (("twn", "TWN 0.7 E|W|", {"marker": "o", "ms": 14, "mfc": "none", "mew": 2}),
             ("twn_v2", "arXiv v2 0.75 E|W|", {"marker": "s", "ms": 9, "mfc": "none", "mew": 2}),
             ("optimal", f"exact optimum {f_opt:.3f} E|W|",
              {"marker": "D", "ms": 5, "mec": "black", "mew": 0.5}))
    for z, (key, name, style) in enumerate(marks):
        mark = data.marks[key]
        ax.plot([mark.factor], [100 * mark.error], ls="none", color=FIGURE_COLORS[key],
                zorder=3 + z, label=f"{name}: {100 * mark.error:.2f}%", **style)
    ax.set_xlabel("threshold Δ / E|W| (multiples of the mean |weight|)")
    ax.set_ylabel("relative error ||W-αT||²/||W||² (%)")
    ax.set_title(title or "Ternary reconstruction error against the threshold")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper left")
    return _done(fig)


def ste_plot(delta: float = 0.5, alpha: float = 1.0, *, title: str | None = None) -> Figure:
    """The straight-through estimator: the forward staircase ``q(w) = alpha T(w)`` and the
    two candidate backward rules, the true derivative (0 almost everywhere) and the
    STE's ``dq/dw := 1``."""
    w = np.linspace(-2 * max(delta, alpha), 2 * max(delta, alpha), 801)
    q = np.where(w > delta, alpha, np.where(w < -delta, -alpha, 0.0))
    fig, axes = _figure(1, 2, width=5.2)
    ax = axes[0, 0]
    ax.plot(w, w, color="#aaaaaa", ls="--", label="identity q = w")
    ax.plot(w, q, color="#1f77b4", lw=2, label=f"q(w) = α·T(w), Δ = {delta:g}, α = {alpha:g}")
    ax.set_xlabel("latent weight w")
    ax.set_ylabel("quantized weight q(w)")
    ax.set_title("Forward: a staircase")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.plot(w, np.zeros_like(w), color="#d62728", lw=2, label="true dq/dw: 0 (undefined at ±Δ)")
    for d in (-delta, delta):
        ax.annotate("", xy=(d, 1.35), xytext=(d, 0.0),
                    arrowprops={"arrowstyle": "->", "color": "#d62728"})
    ax.plot(w, np.ones_like(w), color="#2ca02c", lw=2, label="straight-through: dq/dw := 1")
    ax.set_ylim(-0.2, 1.5)
    ax.set_xlabel("latent weight w")
    ax.set_ylabel("dq/dw used by the backward pass")
    ax.set_title("Backward: the STE pretends q(w) = w")
    ax.legend(fontsize=8, loc="center right")
    fig.suptitle(title or "The straight-through estimator (STE)")
    return _done(fig)


# --------------------------------------------------------------------------- training


def _histories(histories) -> dict[str, History]:
    from .train import History

    if isinstance(histories, History):
        return {"model": histories}
    if isinstance(histories, Mapping) and all(isinstance(h, History) for h in histories.values()):
        return dict(histories)
    raise TypeError("pass a ttqlab History or a dict {label: History}, e.g. "
                    "{'fp32': h1, 'twn': h2}")


def _color(label: str, i: int) -> str:
    """A method's own colour (``ttqlab.palette``), else the i-th of a few other colours."""
    return method_color(label, i)


def learning_curves(histories, *, title: str | None = None) -> Figure:
    """Loss (log axis) and accuracy over epochs, test (solid) and train (dashed), one colour
    per run. The accuracy axis zooms in on epochs >= 1 (epoch 0 is the untrained model).

    ``histories``: a ``History`` or ``{label: History}``.
    """
    runs = _histories(histories)
    fig, axes = _figure(1, 2, width=5.6)
    for i, (label, h) in enumerate(runs.items()):
        c = _color(label, i)
        s = FD.learning_series(h)  # held-out: "test", or "val" with a validation split
        ep, held = s.epochs, s.heldout
        axes[0, 0].plot(ep, s.heldout_loss, color=c, marker=".", label=f"{label} {held}")
        axes[0, 0].plot(ep, s.train_loss, color=c, ls="--", alpha=0.7, label=f"{label} train")
        axes[0, 1].plot(ep, s.heldout_acc, color=c, marker=".", label=f"{label} {held}")
        axes[0, 1].plot(ep, s.train_acc, color=c, ls="--", alpha=0.7, label=f"{label} train")
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_ylabel("cross-entropy loss (nats per sample, log axis)")
    axes[0, 0].set_title("Loss")
    trained = [100 * a for h in runs.values() for key in (f"{h.heldout}_acc", "train_acc")
               for e, a in zip(h["epoch"], h[key]) if e > 0 and not math.isnan(a)]
    if trained:  # zoom in on the trained epochs (epoch 0, at chance, may fall below)
        axes[0, 1].set_ylim(max(0.0, min(trained) - 2.0), 100.5)
    axes[0, 1].set_ylabel("accuracy (%)")
    axes[0, 1].set_title("Accuracy (zoomed to the trained epochs)" if trained else "Accuracy")
    for ax in axes[0]:
        ax.set_xlabel("epoch")
        _integer_epochs(ax)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title or "Learning curves")
    return _done(fig)


def layer_curves(history: History, key: str = "sparsity", *, title: str | None = None,
                 ylabel: str | None = None) -> Figure:
    """One line per quantized layer: ``history.layer(name, key)`` over epochs.

    ``key``: ``"sparsity"`` (plotted in %), ``"flips"``, ``"alpha"``, ``"wp"``, ``"wn"``,
    ``"frozen"``.
    """
    names = history.layer_names
    if not names:
        raise ValueError("the history has no quantized layers; train a model quantized "
                         "with ttqlab.quantize(...)")
    fig, axes = _figure(width=7)
    ax = axes[0, 0]
    for i, (name, (ep, values)) in enumerate(FD.layer_series(history, key).items()):
        ax.plot(ep, values, marker=".", color=layer_color(i), label=name)
    ax.set_xlabel("epoch")
    _integer_epochs(ax)
    ax.set_ylabel(ylabel or _label(key))
    ax.set_title(title or f"{key} per layer over training")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _done(fig)


def ttq_scales(history: History, *, title: str | None = None) -> Figure:
    """TTQ's learned scales per layer over epochs: W_p solid, W_n dashed.

    A scale at or below zero (the region flips sign: a known TTQ failure) is marked with
    a red cross and listed under the title; the zero line is drawn.
    """
    import textwrap

    names = FD.ttq_layers(history)
    if not names:
        raise ValueError("the history has no TTQ layers (no 'wp' column); train a model "
                         "quantized with ttqlab.quantize(model, 'ttq')")
    fig, axes = _figure(width=8.5)
    ax = axes[0, 0]
    negative = []
    series = {key: FD.layer_series(history, key, layers=names) for key in ("wp", "wn")}
    for i, name in enumerate(names):
        for key, ls in (("wp", "-"), ("wn", "--")):
            label = f"{name} {'W_p' if key == 'wp' else 'W_n'}"
            ep, v = series[key][name]
            ax.plot(ep, v, color=layer_color(i), ls=ls, marker=".", label=label)
            bad = [(e, x) for e, x in zip(ep, v) if x <= 0]
            if bad:
                ax.plot(*zip(*bad), "x", color="red", ms=10, mew=2)
                negative.append(f"{label} at epoch {bad[0][0]}")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("epoch")
    _integer_epochs(ax)
    ax.set_ylabel("scale value (weight units)")
    text = title or "TTQ scales W_p (solid) and W_n (dashed) per layer"
    if negative:
        note = "scale <= 0 (sign flipped): " + ", ".join(negative)
        text += "\n" + "\n".join(textwrap.wrap(note, 90))
    ax.set_title(text)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return _done(fig)


def kernel_grid(kernels, *, max_kernels: int = 16, title: str | None = None) -> Figure:
    """Convolution kernels as images: one row per tensor (e.g. ``{"float": w0,
    "TTQ": w1}``), one column per output channel (input channel 0), shared colour scale
    per row (red positive, blue negative)."""
    if isinstance(kernels, torch.Tensor | np.ndarray):
        kernels = {"weights": kernels}
    rows = {}
    for name, k in kernels.items():
        k = torch.as_tensor(k).detach().cpu().float()
        if k.dim() == 3:
            k = k[:, :, None, :]
        if k.dim() != 4:
            raise ValueError(f"kernel_grid expects Conv weights [out, in, kh, kw] (or Conv1d "
                             f"[out, in, k]); {name!r} has shape {tuple(k.shape)}")
        rows[name] = k[:max_kernels, 0].numpy()
    n = max(r.shape[0] for r in rows.values())
    plt = _plt()
    fig = plt.figure(figsize=(min(1.0 * n + 1.5, 18), 1.25 * len(rows) + 1.0),
                     layout="constrained")
    grid = fig.subplots(len(rows), n, squeeze=False)
    for r, (name, ks) in enumerate(rows.items()):
        vmax = float(np.abs(ks).max()) or 1.0
        for c in range(n):
            ax = grid[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= ks.shape[0]:
                ax.axis("off")
                continue
            im = ax.imshow(ks[c], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            if r == len(rows) - 1:
                ax.set_xlabel(f"#{c}", fontsize=8)
        grid[r, 0].set_ylabel(name, fontsize=9)
        fig.colorbar(im, ax=grid[r, :].tolist(), shrink=0.9, label="weight value")
    kh, kw = next(iter(rows.values())).shape[1:]
    fig.supxlabel(f"output channel (each tile: {kh}×{kw} kernel pixels, input channel 0)")
    fig.supylabel("weights")
    fig.suptitle(title or "Convolution kernels")
    return _done(fig)


# --------------------------------------------------------------------------- INQ


def pow2_histogram(w, bits: int = 5, *, n1: int | None = None, bins: int = 100,
                   title: str | None = None) -> Figure:
    """INQ's power-of-two levels ``P_l = {+-2^n1, ..., +-2^n2, 0}`` over the weights.

    Left: the weight histogram on a linear axis with the levels as vertical lines.
    Right: ``|W|`` on a log2 axis, where the levels are evenly spaced; weights below
    ``2^(n2-1)`` (shaded) round to zero.
    """
    lv = FD.pow2_levels_data(w, bits, n1=n1)
    h = FD.histogram(_flat(w), bins)
    fig, axes = _figure(1, 2, width=5.8)
    ax = axes[0, 0]
    ax.hist(h.centers, bins=h.edges, weights=h.counts, color=FIGURE_COLORS["weights"],
            label="weights")
    for i, level in enumerate(lv.levels):
        ax.axvline(level, color=FIGURE_COLORS["levels"], lw=0.9, alpha=0.8,
                   label="levels" if i == 0 else None)
    ax.set_xlabel("weight value")
    ax.set_ylabel("count (weights per bin)")
    ax.set_title(f"{len(lv.levels)} levels on a linear axis")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    logh, lo = FD.log2_histogram(w, lv, bins)  # the smallest 1% (or fewer) in the first bin
    ax.hist(logh.centers, bins=logh.edges, weights=logh.counts, color=FIGURE_COLORS["weights"],
            label="|weights|")
    for i, n in enumerate(range(lv.n2, lv.n1 + 1)):
        ax.axvline(2.0**n, color=FIGURE_COLORS["levels"], lw=1.2,
                   label="levels 2^n" if i == 0 else None)
    ax.axvspan(lo, lv.zero_below, color=FIGURE_COLORS["rounds_to_zero"], alpha=0.15,
               label="rounds to 0")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("|weight value| (log2 axis)")
    ax.set_ylabel("count (weights per bin)")
    ax.set_title(f"n1 = {lv.n1}, n2 = {lv.n2}: evenly spaced in log2")
    ax.legend(fontsize=8)
    fig.suptitle(title or f"INQ power-of-two levels, b = {bits} bits "
                          f"(zeroed {100 * lv.zeroed:.1f}%, error {100 * lv.error:.2f}%)")
    return _done(fig)


def inq_partition(w, frozen_mask, *, frozen_values=None, max_rows: int = 32,
                  max_cols: int = 64, title: str | None = None) -> Figure:
    """Which weights INQ has frozen: a map of the layer (frozen cells coloured by their
    power-of-two value, free cells grey) and the histogram of free vs frozen weights.

    With the magnitude partition the frozen weights are the histogram's tails; with the
    random partition they are spread everywhere.
    """
    data = FD.inq_partition_data(w, frozen_mask, frozen_values=frozen_values,
                                 max_rows=max_rows, max_cols=max_cols, bins=60)
    m2, v2 = data.mask_map, data.value_map
    fig, axes = _figure(1, 2, width=6.0)
    ax = axes[0, 0]
    vmax = float(np.abs(v2).max()) or 1.0
    from matplotlib.colors import ListedColormap

    ax.imshow(np.where(m2, np.nan, 1.0), cmap=ListedColormap([REGION_COLORS["zero"]]),
              aspect="auto", interpolation="nearest")
    im = ax.imshow(np.where(m2, v2, np.nan), cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                   aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="frozen power-of-two value")
    ax.set_xlabel(f"input index (flattened, first {m2.shape[1]})")
    ax.set_ylabel(f"output channel (first {m2.shape[0]})")
    ax.set_title("frozen (colour) and free (grey) weights")
    ax = axes[0, 1]
    edges = data.free.edges
    ax.hist([data.free.centers, data.frozen.centers], bins=edges, stacked=True,
            weights=[data.free.counts, data.frozen.counts],
            color=[FIGURE_COLORS["weights"], FIGURE_COLORS["frozen"]],
            label=["free", "frozen (power of two)"])
    ax.set_xlabel("latent weight value")
    ax.set_ylabel("count (weights per bin)")
    ax.set_title("which weights are frozen")
    ax.legend(fontsize=8)
    fig.suptitle(title or f"INQ partition: {100 * data.frozen_fraction:.1f}% of the weights "
                          "frozen")
    return _done(fig)


# --------------------------------------------------------------------------- trade-offs


def _tradeoff_ax(ax, rows, x, y, group, annotate):
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(r.get(group, "")) if group else "", []).append(r)
    for i, (g, rs) in enumerate(groups.items()):
        rs = sorted(rs, key=lambda r: r[x])
        xs, ys = _scaled(x, [r[x] for r in rs]), _scaled(y, [r[y] for r in rs])
        ax.plot(xs, ys, marker="o", color=_color(g, i), label=g or None)
        if annotate:
            for j, (r, xv, yv) in enumerate(zip(rs, xs, ys)):
                if r.get(annotate) is not None:  # alternate above / below: neighbours
                    ax.annotate(f"{r[annotate]:g}" if isinstance(r[annotate], float)
                                else str(r[annotate]), (xv, yv), textcoords="offset points",
                                xytext=(4, 6 if j % 2 == 0 else -13), fontsize=9)
    ax.set_xlabel(_label(x))
    ax.set_ylabel(_label(y))
    ax.grid(alpha=0.3)
    if group:
        ax.legend(fontsize=8)


def tradeoff(rows: Sequence[Mapping], x: str = "sparsity", y: str = "test_acc", *,
             group: str | None = None, annotate: str | None = None,
             title: str | None = None) -> Figure:
    """``y`` against ``x`` for a list of result rows, one line per value of ``group``;
    ``annotate`` writes each point's value of that key (e.g. ``"t"``) next to it.
    Accuracies and sparsities (0..1) are plotted in %."""
    rows = _check_rows(rows, [x, y])
    fig, axes = _figure(width=7)
    _tradeoff_ax(axes[0, 0], rows, x, y, group, annotate)
    axes[0, 0].set_title(title or f"{_label(y)} against {_label(x)}")
    return _done(fig)


def accuracy_vs_sparsity(rows: Sequence[Mapping], *, group: str | None = None,
                         annotate: str | None = None,
                         xs: Sequence[str] = ("sparsity", "model bytes", "energy (nJ)"),
                         title: str | None = None) -> Figure:
    """One panel per x quantity: test accuracy against sparsity, model size (bytes) and
    energy per inference (nJ) by default, for rows with keys ``test_acc`` and those in
    ``xs`` (quantities missing from some row are skipped)."""
    rows = _check_rows(rows, ["test_acc", "sparsity"])
    xs = [k for k in xs if all(k in r for r in rows)]
    fig, axes = _figure(1, len(xs), width=4.8)
    for ax, x in zip(axes[0], xs):
        _tradeoff_ax(ax, rows, x, "test_acc", group, annotate)
        ax.set_title(f"accuracy vs {x.split(' (')[0]}")
    fig.suptitle(title or "Accuracy against sparsity, size and energy")
    return _done(fig)


def _acc_stats(row: Mapping) -> tuple[float, float, list[float]]:
    """(mean %, std %, per-seed %) of a result row: ``compare``'s rows (percent, over
    seeds) or a single run's row with ``test_acc`` as a fraction."""
    if "test_acc_mean" in row:
        runs = [float(a) for a in row.get("test_acc", [row["test_acc_mean"]])]
        return float(row["test_acc_mean"]), float(row.get("test_acc_std") or 0.0), runs
    a = 100 * float(row["test_acc"])
    return a, 0.0, [a]


def _size(row: Mapping) -> float:
    return float(row["model_bytes"] if "model_bytes" in row else row["model bytes"])


def accuracy_intervals(rows: Sequence[Mapping], *, test_images: int | None = None,
                       title: str | None = None) -> Figure:
    """Methods compared without misleading bars: test accuracy as dots with mean ± std
    over seeds (each seed a small dot), Δ vs fp32 in points (the per-seed differences'
    mean and 95% interval when the rows carry ``delta_vs_fp32_low`` / ``_high``, else
    mean ± std), and model size in KiB on a linear axis from 0.

    ``rows``: ``compare``'s table rows (``test_acc_mean``, ``test_acc_std``, ``test_acc``
    per seed, ``delta_vs_fp32_*``, ``model_bytes``) or single-run rows (``test_acc`` as a
    fraction, ``model bytes``); for single runs pass ``test_images`` to draw the ± one
    test image band (what one image more or less right would change).
    """
    rows = _check_rows(rows, ["method"])
    for r in rows:
        if "test_acc_mean" not in r and "test_acc" not in r:
            raise KeyError("every row needs test_acc_mean (compare's rows) or test_acc; "
                           f"got {sorted(r)}")
    labels = [str(r["method"]) for r in rows]
    colors = [_color(m, i) for i, m in enumerate(labels)]
    stats = [_acc_stats(r) for r in rows]
    seeds = max(len(s[2]) for s in stats)
    has_delta = any(r.get("delta_vs_fp32_mean") is not None for r in rows) or (
        "fp32" in labels and seeds == 1)
    ncols = 3 if has_delta else 2
    fig, axes = _figure(1, ncols, width=3.9, height=0.45 * len(rows) + 2.2)
    y = np.arange(len(rows))[::-1]
    ax = axes[0, 0]
    if seeds == 1 and test_images:
        one = 100.0 / test_images
        for yi, (m, _, _) in zip(y, stats):
            ax.fill_betweenx([yi - 0.3, yi + 0.3], m - one, m + one, color="#dddddd", lw=0)
    for yi, c, (m, sd, runs) in zip(y, colors, stats):
        ax.errorbar([m], [yi], xerr=[sd] if sd else None, fmt="o", color=c, ms=7,
                    capsize=4, lw=2)
        if len(runs) > 1:
            ax.plot(runs, [yi] * len(runs), "|", color=c, ms=10, alpha=0.7)
        ax.annotate(f"{m:.2f}" + (f" ± {sd:.2f}" if len(runs) > 1 else ""), (m, yi),
                    textcoords="offset points", xytext=(0, 9), ha="center", fontsize=9)
    ax.set_yticks(y, labels)
    ax.set_ylabel("method")
    ax.set_ylim(-0.7, len(rows) - 0.3)
    lo = min(min(s[2]) for s in stats)
    hi = max(max(s[2]) for s in stats)
    pad = max(0.5, 0.15 * (hi - lo))
    ax.set_xlim(lo - pad, min(100.0, hi + pad) if hi < 100 else 100.5)
    ax.set_xlabel("test accuracy (%)")
    how = (f"mean ± std over {seeds} seeds (ticks: seeds)" if seeds > 1 else
           f"one run; grey: ± one test image ({100 / test_images:.2f} points)"
           if test_images else "one run (no seeds: differences may be noise)")
    ax.set_title(f"Accuracy\n{how}", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    col = 1
    if has_delta:
        ax = axes[0, col]
        col += 1
        base = next((s for lab, s in zip(labels, stats) if lab == "fp32"), None)
        has_ci = any(r.get("delta_vs_fp32_low") is not None for r in rows)
        for yi, c, r, lab, (m, _, _) in zip(y, colors, rows, labels, stats):
            if r.get("delta_vs_fp32_mean") is not None:
                d, sd = float(r["delta_vs_fp32_mean"]), float(r.get("delta_vs_fp32_std") or 0)
            else:
                d, sd = m - base[0], 0.0
            err = [sd] if sd else None
            if has_ci and r.get("delta_vs_fp32_low") is not None and lab != "fp32":
                err = [[d - float(r["delta_vs_fp32_low"])],
                       [float(r["delta_vs_fp32_high"]) - d]]
            ax.errorbar([d], [yi], xerr=err, fmt="o", color=c, ms=7, capsize=4, lw=2)
            ax.annotate("reference" if lab == "fp32" else f"{d:+.2f}", (d, yi),
                        textcoords="offset points", xytext=(0, 9),
                        ha="right" if lab == "fp32" else "center", fontsize=9)
        ax.axvline(0, color=COLORS["fp32"], lw=1)
        ax.set_yticks(y, labels)
        ax.set_ylabel("method")
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_xlabel("Δ test accuracy vs fp32 (points)")
        ax.set_title("Difference to full precision\n" + (
            "mean and 95% CI of per-seed differences" if has_ci else
            "mean ± std of per-seed differences" if seeds > 1 else "one run"), fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    ax = axes[0, col]
    if all("model_bytes" in r or "model bytes" in r for r in rows):
        kib = [_size(r) / 1024 for r in rows]
        ax.barh(y, kib, color=colors, height=0.6)
        for yi, v in zip(y, kib):
            ax.annotate(f"{v:.1f} KiB", (v, yi), textcoords="offset points", xytext=(3, 0),
                        va="center", fontsize=9)
        ax.set_xlim(0, 1.3 * max(kib))
        ax.set_yticks(y, labels)
        ax.set_ylabel("method")
        ax.set_xlabel("model size, packed (KiB, axis from 0)")
        ax.set_title("Size", fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    else:
        ax.set_visible(False)
    fig.suptitle(title or "Methods compared")
    return _done(fig)


def method_bars(rows: Sequence[Mapping], *, test_images: int | None = None,
                title: str | None = None) -> Figure:
    """The methods compared: accuracy and Δ as dots with seed error bars, size in KiB.
    (Kept under its old name; it no longer draws accuracy bars on a truncated axis:
    see :func:`accuracy_intervals`.)"""
    return accuracy_intervals(rows, test_images=test_images, title=title)


def layer_bars(values: Mapping[str, Mapping[str, float]], key: str = "sparsity", *,
               title: str | None = None) -> Figure:
    """Grouped bars: one group per layer, one bar per run.

    ``values``: ``{run label: {layer name: value}}``, e.g. per-layer sparsity of two
    models. ``key`` chooses the axis label (and % scaling for sparsity)."""
    if not values:
        raise ValueError("no runs to plot; pass {run label: {layer: value}}")
    layers = list(dict.fromkeys(n for v in values.values() for n in v))
    fig, axes = _figure(width=max(6.0, 1.2 * len(layers) * max(1, len(values)) / 2))
    ax = axes[0, 0]
    width = 0.8 / len(values)
    for i, (run, v) in enumerate(values.items()):
        xs = [j + (i - (len(values) - 1) / 2) * width for j in range(len(layers))]
        ax.bar(xs, _scaled(key, [v.get(n) for n in layers]), width=width,
               color=_color(run, i), label=run)
    ax.set_xticks(range(len(layers)), layers)
    ax.set_xlabel("layer")
    ax.set_ylabel(_label(key))
    ax.set_title(title or f"{key} per layer")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # never over a bar
    ax.grid(alpha=0.3, axis="y")
    return _done(fig)
