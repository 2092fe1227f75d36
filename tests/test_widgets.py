"""ttqlab.widgets: every explorer responds to its controls with new figure data (no
browser needed), and everything degrades to static figures without the widget libraries."""

import copy

import matplotlib
import numpy as np
import pytest
import torch

import ttqlab
from ttqlab import quantizers as Q
from ttqlab import viz, widgets

matplotlib.use("Agg")
from matplotlib.figure import Figure

pytest.importorskip("plotly")
pytest.importorskip("ipywidgets")


def snapshot(fig):
    assert_json_safe(fig)
    return copy.deepcopy([t.to_plotly_json() for t in fig.data])


def assert_json_safe(fig):
    """No NaN / inf anywhere in the trace data: the widget's JSON message to the browser
    would fail (Jupyter only prints a warning, and the figure does not update)."""
    def walk(v, where):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{where}.{k}")
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x, where)
        elif isinstance(v, np.ndarray):
            if v.dtype.kind == "f":
                assert np.isfinite(v).all(), f"NaN/inf in {where}"
            else:
                walk(v.tolist(), where)
        elif isinstance(v, float):
            assert np.isfinite(v), f"NaN/inf in {where}"
    walk([t.to_plotly_json() for t in fig.data], "data")
    for i, trace in enumerate(fig.data):
        arrays = _numpy_arrays(trace._props, f"data[{i}]")
        assert not arrays, (
            f"numpy arrays in trace data {arrays}: when the browser sends its trace deltas "
            f"back, plotly's FigureWidget tests them for truth and raises; pass lists")


def _numpy_arrays(v, where) -> list[str]:
    if isinstance(v, np.ndarray):
        return [where]
    if isinstance(v, dict):
        return [p for k, x in v.items() for p in _numpy_arrays(x, f"{where}.{k}")]
    return []


def changed(before, fig) -> bool:
    after = snapshot(fig)
    return len(before) != len(after) or any(
        _differs(a, b) for a, b in zip(before, after))


def _differs(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() != b.keys() or any(_differs(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray | list | tuple) or isinstance(b, np.ndarray | list | tuple):
        try:
            return not np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object))
        except ValueError:
            return True
    return a != b and not (a is None and b is None)


@pytest.fixture(scope="module")
def w():
    torch.manual_seed(3)
    return torch.randn(48, 16, 3, 3) * 0.05


def test_threshold_explorer_slider_recolours_the_histogram(w):
    ex = widgets.threshold_explorer(w)
    assert isinstance(ex, widgets.ThresholdExplorer)
    mean = float(w.abs().mean())
    assert ex.state["delta"] == pytest.approx(0.7 * mean)
    zero_before = np.asarray(ex.figure.data[1].y).sum()
    before = snapshot(ex.figure)
    ex.slider.value = 1.5
    assert changed(before, ex.figure)
    assert np.asarray(ex.figure.data[1].y).sum() > zero_before  # more weights in T = 0
    assert ex.state["sparsity"] == pytest.approx(float((w.abs() <= 1.5 * mean).float().mean()))
    assert ex.state["alpha"] == pytest.approx(float(Q.twn_scale(w, 1.5 * mean)), rel=1e-6)
    assert ex.figure.data[3].x[1] == pytest.approx(-1.5 * mean)  # the ±Δ line moved
    d_opt, _, _ = Q.optimal_ternary_params(w)
    assert ex.state["optimal_factor"] == pytest.approx(float(d_opt) / mean, rel=1e-6)
    assert "sparsity" in ex.readout.value
    counts = sum(np.asarray(t.y).sum() for t in ex.figure.data[:3])
    assert counts == w.numel()


def test_levels_explorer_bits_slider_changes_the_levels(w):
    ex = widgets.levels_explorer(w, bits=5)
    assert ex.state["levels"] == 17
    before = snapshot(ex.figure)
    ex.slider.value = 3
    assert changed(before, ex.figure)
    n1, n2 = Q.inq_exponent_range(w, 3)
    assert (ex.state["n1"], ex.state["n2"], ex.state["levels"]) == (n1, n2, 5)
    xs = sorted({x for x in ex.figure.data[1].x if x is not None})
    assert xs == pytest.approx(Q.pow2_levels(w, 3).tolist())
    per_level = dict(zip(ex.figure.data[2].x, ex.figure.data[2].y))
    codes = Q.pow2_exponents(w, 3)
    assert per_level[0] == int((codes == 0).sum())
    assert sum(per_level.values()) == w.numel()


def test_partition_explorer_steps_and_strategies(w):
    ex = widgets.partition_explorer(w, bits=5, schedule=(0.5, 0.75, 1.0))
    assert ex.state["frozen"] == pytest.approx(0.5, abs=1e-3)
    magnitude_gap = ex.state["mean |W| frozen"] - ex.state["mean |W| free"]
    assert magnitude_gap > 0  # largest |W| frozen first
    before = snapshot(ex.figure)
    ex.slider.value = 2
    assert changed(before, ex.figure)
    assert ex.state["frozen"] == pytest.approx(0.75, abs=1e-3)
    before = snapshot(ex.figure)
    ex.strategy.value = "random"
    assert changed(before, ex.figure)
    random_gap = ex.state["mean |W| frozen"] - ex.state["mean |W| free"]
    assert abs(random_gap) < magnitude_gap / 3
    ex.slider.value = 0
    assert_json_safe(ex.figure)
    assert ex.state["frozen"] == 0.0
    assert np.isnan(np.asarray(ex.figure.data[1].z, dtype=float)).all()  # nothing coloured


def test_inq_partitions_match_the_inq_schedule(w):
    steps = widgets.inq_partitions(w, bits=4, schedule=(0.5, 1.0))
    assert [float(m.float().mean()) for m, _ in steps] == pytest.approx([0.0, 0.5, 1.0],
                                                                        abs=1e-3)
    _, values = steps[-1]
    assert torch.equal(values, Q.quantize_pow2(w, 4))


def rows():
    return [{"label": f"t={t}", "mode": "threshold t", "t": t, "sparsity": s, "test_acc": a,
             "model bytes": b, "layers": {"conv2": s, "fc1": s / 2}}
            for t, s, a, b in [(0.05, 0.3, 0.98, 5000), (0.1, 0.5, 0.97, 4800),
                               (0.2, 0.8, 0.93, 4700)]]


def test_tradeoff_explorer_axis_dropdown_and_run_slider():
    ex = widgets.tradeoff_explorer(rows(), group="mode")
    assert list(ex.figure.data[0].x) == [30.0, 50.0, 80.0]
    before = snapshot(ex.figure)
    ex.x.value = "model bytes"
    assert changed(before, ex.figure)
    assert list(ex.figure.data[0].x) == [4700, 4800, 5000]
    assert ex.figure.layout.xaxis.title.text == "model size (bytes)"
    before = snapshot(ex.figure)
    ex.slider.value = 2
    assert changed(before, ex.figure)
    assert list(ex.figure.data[-1].y) == [80.0, 40.0]  # per-layer sparsity of run 2
    assert ex.state["t"] == 0.2
    # the slider names the run; the readout is labelled values in percent
    assert [label for label, _ in ex.slider.options][2] == rows()[2]["label"]
    shown = ex.readout.value.split("</b>")[1]
    assert "test accuracy 93.00%" in shown and "=" not in shown
    with pytest.raises(ValueError, match="numeric key"):
        widgets.tradeoff_explorer(rows(), x="label")


def test_training_dashboard_updates_during_fit():
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 3, (64,))
    model = ttqlab.quantize(ttqlab.models.mlp(input_shape=(1, 8, 8), num_classes=3,
                                              hidden=(8, 8, 8), seed=0), "ttq")
    dash = widgets.training_dashboard(layer_key="wp")
    assert isinstance(dash, widgets.TrainingDashboard) and dash.callback is dash
    before = snapshot(dash.figure)
    seen = []
    history = ttqlab.fit(model, (x, y), (x, y), epochs=2, progress=False,
                         callbacks=[dash, lambda h, m: seen.append(len(dash.figure.data[3].y))])
    assert changed(before, dash.figure)
    assert_json_safe(dash.figure)  # epoch 0 has no train loss and no flips: gaps, not NaN
    assert seen == [1, 2, 3]  # the test-accuracy curve grew after every epoch
    assert list(dash.figure.data[3].y) == pytest.approx([100 * a for a in history["test_acc"]])
    layer_traces = {t.name: t for t in dash.figure.data[4:]}
    assert set(layer_traces) == set(history.layer_names)
    name = history.layer_names[0]
    assert list(layer_traces[name].y) == pytest.approx(history.layer(name, "wp"))
    assert "epoch 2" in dash.readout.value
    assert dash.figure.data[3].name == "test accuracy"


def test_training_dashboard_names_the_validation_split():
    data = ttqlab.data.load("synthetic", n_train=96, n_test=32, seed=0).split_validation()
    model = ttqlab.models.mlp(input_shape=data.input_shape, num_classes=data.num_classes,
                              hidden=(8,), seed=0)
    dash = widgets.training_dashboard()
    ttqlab.fit(model, data, epochs=1, progress=False, callbacks=[dash])
    assert [t.name for t in dash.figure.data[:4]] == [
        "train loss", "validation loss", "train accuracy", "validation accuracy"]


def test_explorers_show_in_jupyter(w):
    ex = widgets.threshold_explorer(w)
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "slider=" in repr(ex)


def test_static_fallback_without_widget_libraries(monkeypatch, capsys, w):
    monkeypatch.setattr(widgets, "missing_dependencies",
                        lambda: "ttqlab.widgets: needs plotly; showing a static figure")
    for make in (lambda: widgets.threshold_explorer(w), lambda: widgets.levels_explorer(w),
                 lambda: widgets.partition_explorer(w),
                 lambda: widgets.tradeoff_explorer(rows())):
        fig = make()
        assert isinstance(fig, Figure)
        assert "needs plotly" in capsys.readouterr().out
    dash = widgets.training_dashboard()
    assert isinstance(dash, widgets.StaticDashboard)
    capsys.readouterr()
    with pytest.raises(ValueError, match="no epoch yet"):
        dash.figure  # noqa: B018
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    ttqlab.fit(model, (x, y), (x, y), epochs=1, progress=False, callbacks=[dash])
    out = capsys.readouterr().out
    assert "epoch 0" in out and "epoch 1" in out
    assert isinstance(dash.figure, Figure)


def test_missing_dependencies_is_none_here():
    assert widgets.missing_dependencies() is None


def test_import_ttqlab_stays_light():
    """``import ttqlab`` (and even ``ttqlab.viz`` / ``ttqlab.widgets``) imports none of the
    heavy optional libraries; they load when a figure or widget is made."""
    import subprocess
    import sys

    code = ("import sys, ttqlab; ttqlab.viz; ttqlab.widgets; "
            "print(sorted(m for m in ('matplotlib', 'plotly', 'ipywidgets', 'anywidget') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def _fonts(figure) -> list[float]:
    """Every font size a plotly layout sets (None = plotly's default 12 px)."""
    sizes = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("font"), dict) and node["font"].get("size") is not None:
                sizes.append(node["font"]["size"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(figure.to_plotly_json()["layout"])
    return sizes


def test_dashboard_has_a_legend_per_panel_and_readable_fonts():
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 3, (64,))
    model = ttqlab.quantize(ttqlab.models.mlp(input_shape=(1, 8, 8), num_classes=3,
                                              hidden=(8, 8, 8), seed=0), "twn")
    dash = widgets.training_dashboard()
    history = ttqlab.fit(model, (x, y), (x, y), epochs=2, progress=False, callbacks=[dash])
    legends = {t.legend or "legend" for t in dash.figure.data}
    assert legends == {"legend", "legend2", "legend3"}  # loss, accuracy, layers
    assert dash.figure.layout.yaxis.type == "log"  # epoch 0's loss does not flatten the rest
    lo, hi = dash.figure.layout.yaxis2.range
    accs = [100 * a for a in history["test_acc"] + history["train_acc"][1:]]
    assert lo <= min(accs) and hi >= max(accs) and (lo, hi) != (0, 100)
    assert min(_fonts(dash.figure)) >= 12
    assert dash.figure.layout.width is None  # fills the output area
    from ttqlab.palette import layer_color
    for i, trace in enumerate(dash.figure.data[4:]):
        assert trace.line.color == layer_color(i)


def test_explorer_sliders_are_long_and_fonts_readable(w):
    for ex in (widgets.threshold_explorer(w), widgets.levels_explorer(w),
               widgets.partition_explorer(w), widgets.tradeoff_explorer(rows())):
        assert ex.slider.layout.width == "480px"
        assert min(_fonts(ex.figure)) >= 12


def test_threshold_explorer_empty_region_has_a_hollow_swatch(w):
    ex = widgets.threshold_explorer(w)
    zero = ex.figure.data[1]
    assert zero.marker.color == viz.REGION_COLORS["zero"]
    ex.slider.value = 0.0  # no weight has |W| <= 0: T = 0 is empty
    assert sum(zero.y) == 0 and zero.marker.color == "rgba(0,0,0,0)" and zero.marker.line.width
    ex.slider.value = 0.7
    assert zero.marker.color == viz.REGION_COLORS["zero"]


def test_twn_and_optimum_markers_differ_in_shape_and_size(w):
    ex = widgets.threshold_explorer(w)
    twn, opt = (t for t in ex.figure.data if t.name in ("TWN", "optimum"))
    assert twn.marker.symbol != opt.marker.symbol and twn.marker.size > opt.marker.size


def test_tradeoff_runs_without_a_label_are_named_by_their_setting():
    mixed = [{k: v for k, v in r.items() if k != "label"} for r in rows()]
    mixed[2] = {**mixed[2], "mode": "fixed sparsity p", "t": None}
    for r in mixed:
        r["setting"] = r.pop("t") or 0.9
    ex = widgets.tradeoff_explorer(mixed, group="mode")
    names = [label for label, _ in ex.slider.options]
    assert names == ["threshold t = 0.05", "threshold t = 0.1", "fixed sparsity p = 0.9"]
    assert not any(n.startswith("run") for n in names)
    ex.x.value = "setting"  # t and p on one axis: the title says which is which
    assert "threshold t" in ex.figure.layout.xaxis.title.text
    assert "fixed sparsity p" in ex.figure.layout.xaxis.title.text
    bare = [{"test_acc": 0.9, "sparsity": 0.5, "t": 0.05}, {"test_acc": 0.8, "sparsity": 0.7}]
    assert [label for label, _ in widgets.tradeoff_explorer(bare).slider.options] == \
        ["t=0.05", "sparsity 70%"]


def test_readout_labels_numbers_numpy_ones_too_and_shows_flags_and_text_as_they_are():
    assert widgets._readout("test_acc", np.float32(0.93)) == "test accuracy 93.00%"
    assert widgets._readout("test_acc", 1) == "test accuracy 100.00%"
    assert widgets._readout("model bytes", np.int64(4700)) == "model size (bytes) 4,700"
    assert widgets._readout("model bytes", 0.123456) == "model size (bytes) 0.1235"
    assert widgets._readout("test_acc", float("nan")) == "test accuracy nan%"
    assert widgets._readout("test_acc", True) == "test_acc: True"  # a flag, not 100%
    assert widgets._readout("mode", "fixed") == "mode: fixed"


def test_partition_explorer_calls_the_free_weights_free(w):
    ex = widgets.partition_explorer(w, bits=5)
    names = {t.name for t in ex.figure.data}
    assert "free" in names and not any("train" in (n or "") for n in names)


def _all_explorers(w):
    return {"threshold": lambda: widgets.threshold_explorer(w),
            "levels": lambda: widgets.levels_explorer(w),
            "partition": lambda: widgets.partition_explorer(w),
            "tradeoff": lambda: widgets.tradeoff_explorer(rows(), group="mode"),
            "dashboard": lambda: widgets.training_dashboard(title="live")}


def _opened_figures(monkeypatch) -> list[dict]:
    """The state of every plotly FigureWidget model as its ``comm_open`` carries it."""
    import ipywidgets.widgets.widget as ipw

    opened, create = [], ipw.comm.create_comm

    def spy(**kwargs):
        state = kwargs["data"]["state"]
        if "_widget_data" in state:
            opened.append(state)
        return create(**kwargs)

    monkeypatch.setattr(ipw.comm, "create_comm", spy)
    return opened


def test_explorers_reach_the_browser_complete_at_creation(w, monkeypatch):
    """The browser builds a FigureWidget's model from its ``comm_open`` message and may draw
    a view from that state before any later message is applied (tests/launch checks it in
    Chromium). So every explorer's comm opens with the complete first figure (every trace
    with its data, the layout with its title) and no edit message follows."""
    opened = _opened_figures(monkeypatch)
    for name, make in _all_explorers(w).items():
        ex = make()
        fig = ex.figure
        state = opened[-1]
        assert fig._last_trace_edit_id == 0 and fig._last_layout_edit_id == 0, (
            f"{name}: {fig._last_trace_edit_id} trace edits were sent after the comm opened")
        assert state["_widget_layout"]["title"]["text"] == fig.layout.title.text, name
        assert len(state["_widget_data"]) == len(fig.data), name
        if name == "dashboard":
            continue  # empty until the first epoch, by design; its curves come as restyles
        for trace, sent in zip(fig.data, state["_widget_data"]):
            data = [sent[k] for k in ("x", "y", "z") if sent.get(k) is not None]
            assert data and all(len(v) for v in data), f"{name}: trace {trace.name!r} empty"
            for k in ("x", "y", "z"):
                if sent.get(k) is not None:
                    assert list(sent[k]) == list(getattr(trace, k)), (name, trace.name, k)


def test_displaying_an_explorer_again_sends_its_current_state(w):
    ex = widgets.levels_explorer(w, bits=5)
    ex.slider.value = 3  # an update message; the model's state is still the first figure
    ex._repr_mimebundle_()
    levels = ex.figure._widget_data[1]["x"]
    assert sorted({x for x in levels if x is not None}) == pytest.approx(
        Q.pow2_levels(w, 3).tolist())
