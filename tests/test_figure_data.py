"""ttqlab.figure_data: the numbers of the figures against hand-computed values on small
tensors, and ``viz`` / ``widgets`` draw exactly these numbers (one computation, two
drawing stacks)."""

import math

import matplotlib
import numpy as np
import pytest
import torch

from ttqlab import figure_data as FD
from ttqlab import quantizers as Q
from ttqlab import viz
from ttqlab.palette import REGION_COLORS
from ttqlab.train import History

matplotlib.use("Agg")

#: 7 weights whose every number below is worked out by hand
W7 = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 2.0, 4.0])


@pytest.fixture(scope="module")
def w():
    torch.manual_seed(5)
    return torch.randn(24, 6, 3, 3) * 0.05


def _spy(monkeypatch, name):
    """Count the calls of ``figure_data.<name>`` (still returning its real result)."""
    real, calls = getattr(FD, name), []

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(FD, name, spy)
    return calls


# --------------------------------------------------------------------------- basics


def test_flat_is_float64_and_rejects_empty_and_nan():
    a = FD.flat(torch.tensor([[1.0, 2.0]], dtype=torch.float16))
    assert a.dtype == np.float64 and a.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="empty weight tensor; pass a layer's weight"):
        FD.flat(torch.zeros(0))
    with pytest.raises(ValueError, match="NaN or inf"):
        FD.flat([1.0, math.inf])


def test_scaled_labels_and_rows():
    assert FD.scaled("sparsity", [0.25, None]) == [25.0, pytest.approx(math.nan, nan_ok=True)]
    assert FD.scaled("wp", [0.5]) == [0.5]
    assert FD.axis_label("test_acc") == "test accuracy (%)" and FD.axis_label("xyz") == "xyz"
    assert viz.LABELS is FD.LABELS  # one table of labels and units for both stacks
    with pytest.raises(KeyError, match=r"\['t'\]"):
        FD.check_rows([{"sparsity": 0.1}], ["sparsity", "t"])
    with pytest.raises(ValueError, match="no results to plot"):
        FD.check_rows([], ["sparsity"])


# --------------------------------------------------------------------------- ternary


def test_ternary_histogram_data_by_hand():
    d = FD.ternary_histogram_data(W7, 1.0, bins=7)  # range -3..4: bins of width 1
    assert d.bins.edges.tolist() == [-3, -2, -1, 0, 1, 2, 3, 4]
    assert d.bins.counts.tolist() == [1, 0, 2, 2, 0, 1, 1]
    assert d.bins.centers.tolist() == [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5]
    neg, zero, pos = d.regions["negative"], d.regions["zero"], d.regions["positive"]
    # bins by centre; weights with -1 in T = 0 (|W| <= delta includes the ends)
    assert neg.bins.tolist() == [True, True, False, False, False, False, False]
    assert zero.bins.tolist() == [False, False, True, True, False, False, False]
    assert pos.bins.tolist() == [False, False, False, False, True, True, True]
    assert (neg.count, zero.count, pos.count) == (1, 4, 2)
    assert (neg.fraction, zero.fraction, pos.fraction) == (1 / 7, 4 / 7, 2 / 7)
    assert [r.code for r in d.regions.values()] == [-1, 0, 1]
    assert [r.label for r in d.regions.values()] == ["T = -1", "T = 0", "T = +1"]
    assert (neg.low, neg.high, zero.low, zero.high, pos.low, pos.high) == (
        -math.inf, -1.0, -1.0, 1.0, 1.0, math.inf)
    # alpha = mean |W| over |W| > 1 = (3 + 2 + 4) / 3; error = (30.5 - 9^2 / 3) / 30.5
    assert d.fit == pytest.approx({"delta": 1.0, "alpha": 3.0, "sparsity": 4 / 7,
                                   "error": 3.5 / 30.5, "kept": 3})
    assert d.mean_abs == pytest.approx(11 / 7) and d.factor == pytest.approx(7 / 11)


def test_ternary_histogram_data_defaults_to_twn_and_moves_the_threshold():
    d = FD.ternary_histogram_data(W7, bins=7)
    assert d.delta == pytest.approx(0.7 * 11 / 7)
    moved = d.at(2.5)  # same bins, 2 is now in T = 0
    assert moved.bins is d.bins
    assert [r.count for r in moved.regions.values()] == [1, 5, 1]
    assert moved.fit["alpha"] == pytest.approx(3.5)  # (3 + 4) / 2
    assert moved.regions["positive"].bins.tolist() == [False] * 6 + [True]


def test_error_curve_by_hand_and_against_ternary_fit(w):
    err, sparsity = FD.error_curve(W7, [0.0, 1.0, 4.0])
    assert err.tolist() == pytest.approx([1 - 11**2 / 6 / 30.5, 3.5 / 30.5, 1.0])
    assert sparsity.tolist() == pytest.approx([1 / 7, 4 / 7, 1.0])
    deltas = np.linspace(0, 0.12, 13)
    err, sparsity = FD.error_curve(w, deltas)
    for d, e, s in zip(deltas, err, sparsity):
        fit = FD.ternary_fit(w, d)
        assert (e, s) == (pytest.approx(fit["error"], abs=1e-12), pytest.approx(fit["sparsity"]))


def test_ternary_error_curve_data_marks(w):
    c = FD.ternary_error_curve_data(w, max_factor=2.0, num=21)
    mean = float(w.double().abs().mean())
    assert c.factors.tolist() == pytest.approx([0.1 * i for i in range(21)])
    assert c.mean_abs == pytest.approx(mean)
    assert list(c.marks) == ["twn", "twn_v2", "optimal"]
    assert (c.marks["twn"].factor, c.marks["twn_v2"].factor) == (0.7, 0.75)
    d_opt, _, _ = Q.optimal_ternary_params(w.double())
    assert c.marks["optimal"].delta == pytest.approx(float(d_opt))
    for m in c.marks.values():
        assert m.error == pytest.approx(FD.ternary_fit(w, m.delta)["error"], abs=1e-12)
    assert c.marks["optimal"].error <= c.error.min() + 1e-12


# --------------------------------------------------------------------------- INQ


def test_pow2_levels_data_by_hand():
    w5 = torch.tensor([0.75, -0.3, 0.1, 0.0, 0.02])
    lv = FD.pow2_levels_data(w5, bits=3)
    # n1 = floor(log2(4 * 0.75 / 3)) = 0, n2 = 0 + 1 - 2^2 / 2 = -1
    assert (lv.n1, lv.n2, lv.zero_below) == (0, -1, 0.25)
    assert lv.levels.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert lv.quantized.tolist() == [1.0, -0.5, 0.0, 0.0, 0.0]  # 0.75 is a tie: up, to 1
    assert lv.codes.tolist() == [2, -1, 0, 0, 0]
    assert lv.per_level == {-2: 0, -1: 1, 0: 3, 1: 0, 2: 1}  # empty levels listed too
    assert lv.level_values == {-2: -1.0, -1: -0.5, 0: 0.0, 1: 0.5, 2: 1.0}
    assert lv.zeroed == pytest.approx(3 / 5)
    sq = [0.25**2, 0.2**2, 0.1**2, 0.0, 0.02**2]
    assert lv.error == pytest.approx(sum(sq) / (0.75**2 + 0.3**2 + 0.1**2 + 0.02**2))
    given = FD.pow2_levels_data(w5, bits=3, n1=1)
    assert (given.n1, given.n2) == (1, 0) and given.levels.tolist() == [-2, -1, 0, 1, 2]


def test_log2_histogram_counts_every_nonzero_weight(w):
    lv = FD.pow2_levels_data(w, bits=4)
    h, lo = FD.log2_histogram(w, lv, bins=30)
    assert int(h.counts.sum()) == int((w != 0).sum())
    assert len(h.edges) == 30 and h.edges[0] == pytest.approx(lo)
    assert np.allclose(np.diff(np.log2(h.edges)), np.log2(h.edges[1] / h.edges[0]))
    assert lo <= 2.0 ** (lv.n2 - 3)


def test_inq_partition_data_by_hand():
    w6 = torch.tensor([[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]])
    d = FD.inq_partition_data(w6, w6.abs() > 3, max_cols=2, bins=2)
    assert d.weight_map.tolist() == [[1.0, -2.0], [-4.0, 5.0]]
    assert d.mask_map.tolist() == [[False, False], [True, True]]
    assert d.free.edges.tolist() == [-6.0, -0.5, 5.0]
    assert d.free.counts.tolist() == [1, 2] and d.frozen.counts.tolist() == [2, 1]
    assert (d.frozen_fraction, d.mean_abs_frozen, d.mean_abs_free) == (0.5, 5.0, 2.0)
    none = FD.inq_partition_data(w6, torch.zeros(2, 3, dtype=torch.bool), bins=d.free.edges)
    assert none.frozen_fraction == 0.0 and math.isnan(none.mean_abs_frozen)
    assert none.free.counts.tolist() == [3, 3]
    with pytest.raises(ValueError, match=r"quantizer\.frozen_mask"):
        FD.inq_partition_data(w6, w6[0] > 0)


# --------------------------------------------------------------------------- training


def _history():
    epochs = [{"epoch": e, "train_loss": loss, "test_loss": 2.0 - e, "train_acc": acc,
               "test_acc": 0.5 + 0.1 * e} for e, loss, acc in
              [(0, None, None), (1, 1.5, 0.6), (2, 1.0, 0.8)]]
    layers = [{"layer": n, "epoch": e, "sparsity": 0.1 * e, "wp": wp}
              for e in range(3) for n, wp in (("fc1", 0.5 + e), ("fc2", None))]
    return History(epochs=epochs, layers=layers)


def test_learning_and_layer_series_by_hand():
    s = FD.learning_series(_history())
    assert (s.epochs, s.heldout) == ([0, 1, 2], "test")
    assert s.heldout_acc == pytest.approx([50.0, 60.0, 70.0])
    assert math.isnan(s.train_loss[0]) and s.train_loss[1:] == [1.5, 1.0]
    assert math.isnan(s.train_acc[0]) and s.train_acc[1:] == pytest.approx([60.0, 80.0])
    per_layer = FD.layer_series(_history(), "sparsity")
    assert list(per_layer) == ["fc1", "fc2"]
    assert per_layer["fc2"] == ([0, 1, 2], pytest.approx([0.0, 10.0, 20.0]))
    assert FD.layer_series(_history(), "wp", layers=["fc1"]) == {"fc1": ([0, 1, 2],
                                                                         [0.5, 1.5, 2.5])}
    assert FD.ttq_layers(_history()) == ["fc1"]


# --------------------------------------------------------------------------- viz draws it


def test_viz_ternary_histogram_draws_the_data(w, monkeypatch):
    calls = _spy(monkeypatch, "ternary_histogram_data")
    fig = viz.ternary_histogram(w, 0.03, bins=40)
    assert len(calls) == 1
    d = FD.ternary_histogram_data(w, 0.03, bins=40)
    ax = fig.axes[0]
    for container, region in zip(ax.containers, d.regions.values()):
        assert container.get_label() == region.label
        assert [p.get_height() for p in container.patches] == d.bins.counts[region.bins].tolist()
        assert [p.get_x() + p.get_width() / 2 for p in container.patches] == pytest.approx(
            d.bins.centers[region.bins].tolist())
        assert matplotlib.colors.to_hex(container.patches[0].get_facecolor()) == \
            REGION_COLORS[region.name]
    assert f"sparsity {100 * d.fit['sparsity']:.1f}%" in ax.texts[0].get_text()


def test_viz_error_curve_pow2_and_partition_draw_the_data(w, monkeypatch):
    c = FD.ternary_error_curve_data(w)
    ax = viz.ternary_error_curve(w).axes[0]
    assert ax.lines[0].get_ydata() == pytest.approx(100 * c.error)
    marks = [ln for ln in ax.lines if len(ln.get_xdata()) == 1]
    assert [ln.get_xdata()[0] for ln in marks] == pytest.approx(
        [m.factor for m in c.marks.values()])
    assert [ln.get_ydata()[0] for ln in marks] == pytest.approx(
        [100 * m.error for m in c.marks.values()])
    assert [ln.get_color() for ln in marks] == [viz.FIGURE_COLORS[k] for k in c.marks]

    calls = _spy(monkeypatch, "pow2_levels_data")
    fig = viz.pow2_histogram(w, bits=4, bins=50)
    assert len(calls) == 1
    lv = FD.pow2_levels_data(w, 4)
    h = FD.histogram(FD.flat(w), 50)
    assert [p.get_height() for p in fig.axes[0].patches] == h.counts.tolist()
    assert f"zeroed {100 * lv.zeroed:.1f}%, error {100 * lv.error:.2f}%" in \
        fig._suptitle.get_text()
    logh, _ = FD.log2_histogram(w, lv, 50)
    assert [p.get_height() for p in fig.axes[1].patches[:-1]] == logh.counts.tolist()

    mask = w.abs() > w.abs().median()
    calls = _spy(monkeypatch, "inq_partition_data")
    fig = viz.inq_partition(w, mask)
    assert len(calls) == 1
    d = FD.inq_partition_data(w, mask)
    hist = next(ax for ax in fig.axes if ax.get_title() == "which weights are frozen")
    free, frozen = ([p.get_height() for p in c.patches] for c in hist.containers)
    assert free == d.free.counts.tolist() and frozen == d.frozen.counts.tolist()


def test_viz_matches_the_old_computation(w):
    """The numbers the figures showed before ``figure_data`` (the old code, inline here)."""
    a = w.detach().double().numpy().ravel()
    delta = 0.7 * float(np.abs(a).mean())
    counts, edges = np.histogram(a, bins=80)
    centers = (edges[:-1] + edges[1:]) / 2
    d = FD.ternary_histogram_data(w)
    assert np.array_equal(d.bins.counts, counts) and np.array_equal(d.bins.edges, edges)
    for sel, region in zip((centers < -delta, np.abs(centers) <= delta, centers > delta),
                           d.regions.values()):
        assert np.array_equal(region.bins, sel)
    t = torch.as_tensor(a)
    n1, n2 = Q.inq_exponent_range(t, 4)
    q = Q.quantize_pow2(t, 4, n1).numpy()
    lv = FD.pow2_levels_data(w, 4)
    assert (lv.n1, lv.n2) == (n1, n2) and np.array_equal(lv.quantized, q)
    assert lv.error == float(((a - q) ** 2).sum() / max((a * a).sum(), 1e-30))
    assert lv.zeroed == float((q == 0).mean())


# --------------------------------------------------------------------------- widgets draw it


def test_widgets_draw_the_same_data(w, monkeypatch):
    pytest.importorskip("plotly")
    pytest.importorskip("ipywidgets")
    from ttqlab import widgets

    calls = _spy(monkeypatch, "ternary_histogram_data")
    ex = widgets.threshold_explorer(w, 1.2, bins=40)
    assert len(calls) == 1
    d = FD.ternary_histogram_data(w, bins=40).at(1.2 * float(np.abs(FD.flat(w)).mean()))
    for trace, region in zip(ex.figure.data[:3], d.regions.values()):
        assert trace.name == region.label and trace.marker.color == REGION_COLORS[region.name]
        assert list(trace.y) == np.where(region.bins, d.bins.counts, 0).tolist()
    assert {k: ex.state[k] for k in d.fit} == pytest.approx(d.fit)
    marks = {t.name: t for t in ex.figure.data if t.name in ("TWN", "optimum")}
    c = FD.ternary_error_curve_data(w, num=251)
    assert marks["optimum"].y[0] == pytest.approx(100 * c.marks["optimal"].error)
    assert marks["TWN"].marker.color == viz.FIGURE_COLORS["twn"]

    calls = _spy(monkeypatch, "pow2_levels_data")
    ex = widgets.levels_explorer(w, bits=4)
    assert len(calls) == 1
    lv = FD.pow2_levels_data(w, 4)
    assert dict(zip(ex.figure.data[2].x, ex.figure.data[2].y)) == lv.per_level
    assert (ex.state["zeroed"], ex.state["error"]) == (lv.zeroed, lv.error)
    # the static figure shows the same zeroed / error numbers as the widget's readout
    assert f"{100 * lv.error:.2f}%" in viz.pow2_histogram(w, 4)._suptitle.get_text()
    assert f"{100 * lv.error:.2f}%" in ex.readout.value

    ex = widgets.partition_explorer(w, bits=5, schedule=(0.5, 1.0))
    mask, values = ex.steps["magnitude"][1]
    d = FD.inq_partition_data(w, mask, frozen_values=values)
    assert list(ex.figure.data[2].y) == d.free.counts.tolist()
    assert list(ex.figure.data[3].y) == d.frozen.counts.tolist()
    assert ex.state["frozen"] == d.frozen_fraction
    assert ex.figure.data[3].marker.color == viz.FIGURE_COLORS["frozen"]
