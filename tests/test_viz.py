"""ttqlab.viz: every figure is a Figure with a title and labelled axes, and draws the
right thing."""

import math

import matplotlib
import numpy as np
import pytest
import torch

import ttqlab
from ttqlab import quantizers as Q
from ttqlab import viz
from ttqlab.train import History

matplotlib.use("Agg")
from matplotlib.figure import Figure


def assert_labelled(fig):
    """A title, and an x and y label on every plotting axes (or a figure-wide one)."""
    assert isinstance(fig, Figure)
    sup = fig._suptitle.get_text() if fig._suptitle else ""
    supx = fig._supxlabel.get_text() if fig._supxlabel else ""
    supy = fig._supylabel.get_text() if fig._supylabel else ""
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.axison]
    assert axes, "the figure has no axes"
    for ax in axes:
        siblings = ax.get_shared_x_axes().get_siblings(ax)  # twinx() axes share x
        assert sup or any(s.get_title() for s in siblings), "figure without a title"
        assert supx or any(s.get_xlabel() for s in siblings), f"no x label on {ax}"
        assert supy or ax.get_ylabel(), f"no y label on {ax}"


def trained_history(method="ttq", epochs=2):
    torch.manual_seed(0)
    x, y = torch.randn(96, 1, 8, 8), torch.randint(0, 4, (96,))
    model = ttqlab.quantize(ttqlab.models.mlp(input_shape=(1, 8, 8), num_classes=4,
                                              hidden=(16, 16), seed=0), method)
    return ttqlab.fit(model, (x, y), (x[:32], y[:32]), epochs=epochs, progress=False), model


@pytest.fixture(scope="module")
def w():
    torch.manual_seed(1)
    return torch.randn(32, 8, 5, 5) * 0.05


def test_ternary_fit_is_twn_scale_sparsity_and_l2_error(w):
    delta = 0.7 * float(w.abs().mean())
    fit = viz.ternary_fit(w, delta)
    alpha = float(Q.twn_scale(w, delta))
    assert fit["alpha"] == pytest.approx(alpha, rel=1e-6)
    assert fit["sparsity"] == pytest.approx(float((w.abs() <= delta).float().mean()))
    q = Q.ternary_codes(w, delta).double() * alpha
    err = float(((w.double() - q) ** 2).sum() / (w.double() ** 2).sum())
    assert fit["error"] == pytest.approx(err, rel=1e-6)


def test_error_curve_matches_ternary_fit_and_is_smallest_at_the_optimum(w):
    deltas = np.linspace(0, 0.1, 50)
    err, sparsity = viz._error_curve(w, deltas)
    for d, e, s in zip(deltas[::7], err[::7], sparsity[::7]):
        fit = viz.ternary_fit(w, d)
        assert e == pytest.approx(fit["error"], abs=1e-9)
        assert s == pytest.approx(fit["sparsity"])
    d_opt, _, _ = Q.optimal_ternary_params(w)
    best = viz._error_curve(w, np.array([float(d_opt)]))[0][0]
    assert best <= err.min() + 1e-12


def test_ternary_histogram_colours_the_three_regions(w):
    delta = 0.03
    fig = viz.ternary_histogram(w, delta, marks={"optimal": 0.02}, bins=40)
    assert_labelled(fig)
    ax = fig.axes[0]
    by_region = {}
    for container in ax.containers:
        centers = [p.get_x() + p.get_width() / 2 for p in container.patches]
        by_region[container.get_label()] = centers
    assert max(by_region["T = -1"]) < -delta < min(by_region["T = 0"])
    assert max(by_region["T = 0"]) <= delta < min(by_region["T = +1"])
    heights = sum(p.get_height() for c in ax.containers for p in c.patches)
    assert heights == w.numel()
    assert any("optimal" in t.get_text() for t in ax.get_legend().get_texts())


def test_error_curve_and_ste_figures_are_labelled(w):
    assert_labelled(viz.ternary_error_curve(w))
    fig = viz.ste_plot(delta=0.3, alpha=0.8)
    assert_labelled(fig)
    forward = fig.axes[0].get_lines()[1]
    x, y = forward.get_data()
    assert set(np.round(y, 6)) == {-0.8, 0.0, 0.8}
    assert np.all(y[x > 0.3] == 0.8)


def test_learning_and_layer_curves():
    h, _ = trained_history("twn")
    fig = viz.learning_curves({"twn": h, "again": h}, title="curves")
    assert_labelled(fig)
    assert fig._suptitle.get_text() == "curves"
    acc = fig.axes[1].get_lines()[0].get_ydata()
    assert acc[-1] == pytest.approx(100 * h["test_acc"][-1])
    fig = viz.layer_curves(h, "sparsity")
    assert_labelled(fig)
    assert len(fig.axes[0].get_lines()) == len(h.layer_names)
    with pytest.raises(TypeError, match="History"):
        viz.learning_curves([h])
    with pytest.raises(ValueError, match="no quantized layers"):
        viz.layer_curves(History(epochs=h.epochs, layers=[]))


def test_ttq_scales_marks_a_scale_that_went_negative():
    h, _ = trained_history("ttq")
    fig = viz.ttq_scales(h)
    assert_labelled(fig)
    assert "<= 0" not in fig.axes[0].get_title()
    assert len(fig.axes[0].get_lines()) == 2 * len(h.layer_names) + 1  # + the zero line
    name = h.layer_names[0]
    bad = History(epochs=h.epochs, layers=[dict(r) for r in h.layers])
    for r in bad.layers:
        if r["layer"] == name and r["epoch"] == 2:
            r["wn"] = -0.01
    fig = viz.ttq_scales(bad)
    assert f"{name} W_n at epoch 2" in fig.axes[0].get_title()
    crosses = [ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "x"]
    assert [tuple(ln.get_xdata()) for ln in crosses] == [(2,)]
    twn, _ = trained_history("twn", epochs=1)
    with pytest.raises(ValueError, match="no TTQ layers"):
        viz.ttq_scales(twn)


def test_kernel_grid_rows_and_columns(w):
    fig = viz.kernel_grid({"float": w, "ternary": Q.ternarize_twn(w)}, max_kernels=6)
    assert_labelled(fig)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 12
    data = images[6].images[0].get_array()
    assert len(np.unique(np.round(np.asarray(data), 6))) <= 3  # ternary row
    with pytest.raises(ValueError, match="Conv weights"):
        viz.kernel_grid(torch.zeros(3, 4))


def test_pow2_histogram_draws_every_level(w):
    fig = viz.pow2_histogram(w, bits=4)
    assert_labelled(fig)
    levels = Q.pow2_levels(w, 4)
    vlines = [ln for ln in fig.axes[0].get_lines() if ln.get_xdata()[0] == ln.get_xdata()[-1]]
    xs = sorted(float(ln.get_xdata()[0]) for ln in vlines)
    assert xs == pytest.approx(levels.tolist())


def test_inq_partition_map_and_histogram(w):
    mask = w.abs() > w.abs().median()
    fig = viz.inq_partition(w, mask, frozen_values=Q.quantize_pow2(w))
    assert_labelled(fig)
    assert "50.0%" in fig._suptitle.get_text()
    hist = next(ax for ax in fig.axes if ax.get_title() == "which weights are frozen")
    free, frozen = (sum(p.get_height() for p in c.patches) for c in hist.containers)
    assert free == frozen == w.numel() // 2
    # nothing is re-trained here: the free weights are called free
    legend = [t.get_text() for t in hist.get_legend().get_texts()]
    assert legend == ["free", "frozen (power of two)"]
    with pytest.raises(ValueError, match="frozen_mask"):
        viz.inq_partition(w, mask[0])


def test_tradeoff_figures():
    rows = [{"mode": "t", "t": t, "sparsity": s, "test_acc": a, "model bytes": b,
             "energy (nJ)": e}
            for t, s, a, b, e in [(0.2, 0.8, 0.9, 10, 1), (0.05, 0.3, 0.95, 12, 3)]]
    fig = viz.tradeoff(rows, "sparsity", group="mode", annotate="t")
    assert_labelled(fig)
    x, y = fig.axes[0].get_lines()[0].get_data()
    assert list(x) == [30.0, 80.0] and list(y) == pytest.approx([95.0, 90.0])
    fig = viz.accuracy_vs_sparsity(rows, group="mode")
    assert_labelled(fig)
    assert len(fig.axes) == 3
    with pytest.raises(KeyError, match="model bytes"):
        viz.tradeoff([{"sparsity": 0.1, "test_acc": 0.9}], "model bytes")
    with pytest.raises(ValueError, match="no results"):
        viz.tradeoff([])


def test_method_and_layer_bars():
    rows = [{"method": "fp32", "test_acc": 0.99, "model bytes": 700_000},
            {"method": "ttq", "test_acc": 0.98, "model bytes": 50_000}]
    fig = viz.method_bars(rows, test_images=450)
    assert_labelled(fig)
    size_ax = fig.axes[2]
    widths = [p.get_width() for p in size_ax.patches]
    assert widths == pytest.approx([700_000 / 1024, 50_000 / 1024])  # KiB
    assert size_ax.get_xscale() == "linear" and size_ax.get_xlim()[0] == 0  # no log, from 0
    # no accuracy bars at all (a truncated baseline would exaggerate the gap): dots, and
    # for a single run the ± one test image band
    assert not fig.axes[0].patches or all(p.get_width() < 1 for p in fig.axes[0].patches)
    assert "one test image (0.22 points)" in fig.axes[0].get_title()
    fig = viz.layer_bars({"a": {"conv2": 0.5, "fc1": 0.25}, "b": {"conv2": 0.1}})
    assert_labelled(fig)
    bars = [p.get_height() for p in fig.axes[0].patches]
    assert bars[:2] == [50.0, 25.0] and bars[2] == 10.0 and math.isnan(bars[3])


def test_bad_weights_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="empty"):
        viz.ternary_histogram(torch.zeros(0))
    with pytest.raises(ValueError, match="NaN"):
        viz.ternary_error_curve(torch.tensor([1.0, float("nan")]))


def test_accuracy_intervals_show_seed_spread_and_delta():
    rows = [{"method": "fp32", "test_acc_mean": 74.0, "test_acc_std": 2.0,
             "test_acc": [72.0, 74.0, 76.0], "delta_vs_fp32_mean": 0.0,
             "delta_vs_fp32_std": 0.0, "model_bytes": 10_000},
            {"method": "binary", "test_acc_mean": 61.0, "test_acc_std": 1.0,
             "test_acc": [60.0, 61.0, 62.0], "delta_vs_fp32_mean": -13.0,
             "delta_vs_fp32_std": 1.5, "model_bytes": 4_000}]
    fig = viz.accuracy_intervals(rows)
    assert_labelled(fig)
    acc_ax, delta_ax, _ = fig.axes
    assert "3 seeds" in acc_ax.get_title()
    # the error bar of binary spans mean ± std
    segments = [c for c in acc_ax.collections if hasattr(c, "get_segments")]
    spans = sorted(tuple(np.round(seg[:, 0], 6)) for c in segments for seg in c.get_segments())
    assert (60.0, 62.0) in spans
    dots = [tuple(line.get_xdata()) for line in delta_ax.get_lines() if line.get_marker() == "o"]
    assert (-13.0,) in dots
    assert acc_ax.get_xlim()[1] <= 100.5


def test_one_colour_per_method_and_layer_everywhere():
    from ttqlab import palette

    assert viz.COLORS is palette.METHOD_COLORS
    assert len(set(palette.METHOD_COLORS.values())) == len(palette.METHOD_COLORS)
    assert not set(palette.LAYER_COLORS) & set(palette.METHOD_COLORS.values())
    assert palette.method_color("TTQ") == palette.method_color("ttq t=0.05") == \
        palette.METHOD_COLORS["ttq"]
    h, _ = trained_history("twn")
    fig = viz.layer_curves(h, "sparsity")
    for i, line in enumerate(fig.axes[0].get_lines()):
        assert line.get_color() == palette.layer_color(i)


def test_an_empty_region_gets_a_hollow_swatch_that_says_so(w):
    fig = viz.ternary_histogram(w, 0.0)  # nothing has |W| <= 0
    legend = fig.axes[0].get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    zero = next(i for i, t in enumerate(texts) if t.startswith("T = 0"))
    assert texts[zero] == "T = 0 (none)", texts
    assert legend.legend_handles[zero].get_facecolor()[3] == 0  # no fill, no default colour
    fig = viz.ternary_histogram(w, float(w.abs().mean()))
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "T = 0" in texts


def test_error_curve_marks_are_distinct_shapes(w):
    ax = viz.ternary_error_curve(w).axes[0]
    marks = [ln for ln in ax.lines if len(ln.get_xdata()) == 1]
    assert len({ln.get_marker() for ln in marks}) == len(marks) == 3
    assert len({ln.get_markersize() for ln in marks}) == 3
