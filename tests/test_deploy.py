"""ttqlab.deploy / ttqlab.export.to_onnx: 2-bit MatMulNBits graphs that give the answers
of ttqlab's own model (issue 26)."""

import importlib.util
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from test_hostile_export import quantize_by  # tests/ is on sys.path (no __init__)
from torch import nn

import ttqlab
from ttqlab import deploy, export

HAVE_DEPLOY = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
needs_deploy = pytest.mark.skipif(not HAVE_DEPLOY, reason='onnx / onnxruntime are not '
                                  'installed: pip install "ttqlab[deploy]"')

#: the stated tolerance: int8 activations per block (accuracy_level=4) round the inputs of
#: every 2-bit layer; measured 0.1-0.9% of the output's largest magnitude on a batch of
#: 32, up to 3.1% over 1000 test images of a trained transformer (7 layers in a row)
TOL = 0.05


def _quantized(method, model=None, **options):
    model = quantize_by(model or ttqlab.models.mlp(input_shape=(1, 40), seed=0), method,
                        **options)
    if method == "ttq":  # trained TTQ scales differ: W_p != W_n, the asymmetric case
        with torch.no_grad():
            for _, _, q in ttqlab.quantized_layers(model):
                q.wp.mul_(1.3)
                q.wn.mul_(0.8)
    model.train()
    with torch.no_grad():  # BatchNorm running statistics that are not the defaults
        model(torch.randn(64, 1, 40, generator=torch.Generator().manual_seed(1)))
    return model.eval()


def _graph(path):
    import onnx
    return onnx.load(str(path)).graph


def _decoded(graph, node):
    """The weight a MatMulNBits node holds, decoded from the file's bytes: (c - 2) * s."""
    from onnx import numpy_helper
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    b, s = consts[node.input[1]], consts[node.input[2]]
    k = next(a.i for a in node.attribute if a.name == "K")
    c = np.stack([(b >> sh) & 3 for sh in (0, 2, 4, 6)], -1).reshape(b.shape[0], -1)
    assert c.max() <= 3
    bs = next(a.i for a in node.attribute if a.name == "block_size")
    w = (c.astype(np.float32) - 2).reshape(b.shape[0], -1, bs) * s[..., None]
    return w.reshape(b.shape[0], -1)[:, :k]


def _error(session, model, x):
    with torch.no_grad():
        ref = model(x)
    got = deploy.predict(session, x)
    return float((got - ref).abs().max() / ref.abs().max())


@needs_deploy
@pytest.mark.parametrize("method,options", [("twn", {}), ("twn", {"per_channel": True}),
                                            ("ttq", {}), ("binary", {}), ("bitnet", {}),
                                            ("inq", {"bits": 2})],
                         ids=["twn", "twn-per-channel", "ttq", "binary", "bitnet", "inq2"])
def test_outputs_match_and_codes_are_exact(tmp_path, method, options):
    model = _quantized(method, **options)
    path = export.to_onnx(model, tmp_path / "m.onnx")
    graph = _graph(path)
    nodes = [n for n in graph.node if n.op_type == "MatMulNBits"]
    baked = dict(ttqlab.bake(model).named_modules())
    layers = [name for name, _, _ in ttqlab.quantized_layers(model)]
    assert len(nodes) == len(layers) > 0
    for node, name in zip(nodes, layers):
        attrs = {a.name: a.i for a in node.attribute}
        assert attrs["bits"] == 2 and attrs["accuracy_level"] == 4
        w = baked[name].weight.detach().numpy()
        rows = _decoded(graph, node)
        if method == "ttq":  # two halves: the positive part and the negative part
            assert attrs["N"] == 2 * w.shape[0]
            rows = rows[:w.shape[0]] + rows[w.shape[0]:]
        else:
            assert attrs["N"] == w.shape[0]
        np.testing.assert_array_equal(rows, w)  # the file holds the weights bit for bit
    session = export.onnx_session(path)
    x = torch.randn(32, 1, 40, generator=torch.Generator().manual_seed(2))
    assert _error(session, model, x) <= TOL
    assert _error(session, model, x[:1]) <= TOL  # the batch dimension is dynamic


@needs_deploy
def test_weight_bytes_are_about_two_bits(tmp_path):
    model = _quantized("twn", ttqlab.models.mlp(input_shape=(1, 40), hidden=(256, 256), seed=0))
    path = export.to_onnx(model, tmp_path / "m.onnx")
    sizes = deploy.weight_bytes(path)
    n = sum(m.weight.numel() for _, m, _ in ttqlab.quantized_layers(model))
    assert sizes["2bit"] == pytest.approx(n * 2.25 / 8, rel=0.05)  # codes + 1 scale per 128
    assert sizes["total"] == sizes["2bit"] + sizes["float"]


@needs_deploy
@pytest.mark.parametrize("name", ["transformer", "gru", "cnn1d"])
def test_course_models(tmp_path, name):
    model = _quantized("twn", ttqlab.models.get(name, input_shape=(1, 40), seed=0))
    path = export.to_onnx(model, tmp_path / "m.onnx")
    ops = [n.op_type for n in _graph(path).node]
    convs = sum(isinstance(m, nn.Conv1d) for _, m, _ in ttqlab.quantized_layers(model))
    linears = sum(isinstance(m, nn.Linear) for _, m, _ in ttqlab.quantized_layers(model))
    # one set of codes per quantized Linear (the GRU's hh runs once per step, reusing them)
    assert len({n.input[1] for n in _graph(path).node if n.op_type == "MatMulNBits"}) == linears
    assert ops.count("Conv") == sum(isinstance(m, nn.Conv1d) for m in model.modules())
    assert convs == 0 or "Conv" in ops  # quantized convolutions stay float Conv nodes
    x = torch.randn(8, 1, 40, generator=torch.Generator().manual_seed(3))
    assert _error(export.onnx_session(path), model, x) <= TOL


@needs_deploy
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow),
                                  pytest.param(2, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name,build", [
    ("mlp", lambda s: ttqlab.models.mlp(input_shape=(1, 40), hidden=(128, 128), seed=s)),
    ("transformer", lambda s: ttqlab.models.transformer(seed=s))])
def test_trained_model_same_answers(tmp_path, name, build, seed):
    """A trained model's test predictions, several seeds: exact with float compute
    (accuracy_level=1), so the same test accuracy to the image. The fast int8 kernel
    (accuracy_level=4) cannot promise that (benchmarks/deploy_accuracy.py: up to 9 flips and
    5 images on converged MNIST-1D models at block_size 32-128): every disagreement is a near tie
    that the stated tolerance explains, and they are few."""
    data = ttqlab.data.load("mnist1d").split_validation(0.1, seed=0)
    model = ttqlab.quantize(build(seed), "twn")
    ttqlab.fit(model, data, epochs=4, lr=3e-3, seed=seed, progress=False)
    model.eval()
    x, y = data.test.tensors
    with torch.no_grad():
        ref = model(x)
    right = int((ref.argmax(1) == y).sum())
    # it learned something (more than one class predicted), so agreement means something
    assert len(set(ref.argmax(1).tolist())) > 1
    exact = export.onnx_session(export.to_onnx(model, tmp_path / "e.onnx", accuracy_level=1))
    got = deploy.predict(exact, x)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    assert int((got.argmax(1) == y).sum()) == right  # the same test accuracy, to the image
    fast = export.onnx_session(export.to_onnx(model, tmp_path / "f.onnx"))
    got = deploy.predict(fast, x)
    scale = float(ref.abs().max())
    assert float((got - ref).abs().max()) <= TOL * scale
    top2 = ref.topk(2, dim=1).values
    near_tie = (top2[:, 0] - top2[:, 1]) <= 2 * TOL * scale
    differ = got.argmax(1) != ref.argmax(1)
    assert not bool((differ & ~near_tie).any())  # only near ties can change their answer
    assert int(differ.sum()) <= 0.02 * len(y)
    assert abs(int((got.argmax(1) == y).sum()) - right) <= int(differ.sum())


@needs_deploy
def test_float_model_exports_with_a_warning(tmp_path):
    model = ttqlab.models.mlp(input_shape=(1, 40), seed=0).eval()
    with pytest.warns(UserWarning, match="no quantized layer"):
        path = export.to_onnx(model, tmp_path / "m.onnx")
    assert "MatMulNBits" not in [n.op_type for n in _graph(path).node]
    x = torch.randn(4, 1, 40)
    with torch.no_grad():
        np.testing.assert_allclose(deploy.predict(export.onnx_session(path), x), model(x),
                                   rtol=1e-4, atol=1e-5)


@needs_deploy
def test_many_level_inq_stays_float_with_a_warning(tmp_path):
    model = _quantized("inq", bits=5)
    with pytest.warns(UserWarning, match="kept in float"):
        path = export.to_onnx(model, tmp_path / "m.onnx")
    assert "MatMulNBits" not in [n.op_type for n in _graph(path).node]


class _Bessel(nn.Module):
    def forward(self, x):
        return torch.special.bessel_j0(x)


class _Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.mid, self.out = nn.Linear(40, 32), nn.Linear(32, 32), nn.Linear(32, 10)
        self.strange = _Bessel()

    def forward(self, x):
        return self.out(self.strange(self.mid(self.fc(x.flatten(1)))))


@needs_deploy
def test_unsupported_layer_is_named(tmp_path):
    model = ttqlab.quantize(_Odd(), "twn").eval()
    with pytest.raises(deploy.OnnxExportError, match=r"layer 'strange'.*bessel_j0"):
        export.to_onnx(model, tmp_path / "m.onnx", example=torch.randn(2, 1, 40))
    assert not (tmp_path / "m.onnx").exists()


@needs_deploy
def test_bad_arguments(tmp_path):
    model = ttqlab.quantize(_Odd(), "twn").eval()
    with pytest.raises(ValueError, match=r"example=torch\.randn"):
        export.to_onnx(model, tmp_path / "m.onnx")  # a custom model: no recorded shape
    with pytest.raises(ValueError, match=r"block_size must be one of 16, 32, 64, 128; got 256 "
                                         r"\(int\); a power of two with a fast ONNX Runtime"):
        export.to_onnx(_quantized("twn"), tmp_path / "m.onnx", block_size=256)
    with pytest.raises(ValueError, match=r"accuracy_level must be one of 0, 1, 2, 3, 4; got 5"):
        export.to_onnx(_quantized("twn"), tmp_path / "m.onnx", accuracy_level=5)
    with pytest.raises(TypeError, match=r"path must be a path .*got None \(NoneType\)"):
        export.to_onnx(_quantized("twn"), None)
    assert not (tmp_path / "m.onnx").exists()  # each refused before anything was written
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        export.to_onnx("model", tmp_path / "m.onnx")
    with pytest.raises(FileNotFoundError, match="to_onnx"):
        export.onnx_session(tmp_path / "missing.onnx")
    path = export.to_onnx(_quantized("twn"), tmp_path / "m.onnx")
    for threads in (0, True, 2.0):
        with pytest.raises(ValueError, match=rf"threads must be a whole number .*>= 1, got "
                                             rf"{threads} \({type(threads).__name__}\); ONNX "
                                             rf"Runtime's intra-op thread count"):
            export.onnx_session(path, threads=threads)
    assert export.onnx_session(path).get_session_options().intra_op_num_threads == 1
    assert export.onnx_session(path, threads=2).get_session_options().intra_op_num_threads == 2
    assert export.onnx_session(str(path), threads=np.int64(2)) \
        .get_session_options().intra_op_num_threads == 2  # numpy's ints are ints


def test_missing_extra_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r'pip install "ttqlab\[deploy\]"'):
        export.to_onnx(_quantized("twn"), tmp_path / "m.onnx")
    with pytest.raises(ImportError, match=r'pip install "ttqlab\[deploy\]"'):
        export.onnx_session(tmp_path / "m.onnx")


def test_import_is_lazy():
    code = ("import sys, ttqlab, ttqlab.export, ttqlab.deploy; "
            "print(any(m in sys.modules for m in ('onnx', 'onnxruntime')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@needs_deploy
def test_export_prints_nothing(tmp_path, capfd):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for a quantized model either
        export.to_onnx(_quantized("ttq"), tmp_path / "m.onnx")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


@needs_deploy
def test_inference_benchmark_rows_and_report(tmp_path):
    """benchmarks/inference.py's rows for one small layer, and the report's section and
    figure drawn from them (the full run is `python -m benchmarks.inference`)."""
    from benchmarks import inference, report, write_results

    threads = torch.get_num_threads()
    try:
        rows = inference.measure("layer", 256, (1,), (1,), repeats=2, block_ms=1.0, seed=0,
                                 folder=tmp_path)
        rows += inference.conv_check(repeats=1, block_ms=1.0, seed=0)
    finally:
        torch.set_num_threads(threads)
    arms = [r["arm"] for r in rows if r["kind"] == "layer"]
    assert arms == list(inference.ARMS)
    for r in rows:
        assert 0 < r["min_us"] <= r["median_us"] <= r["max_us"]
    two = next(r for r in rows if r["arm"] == "2-bit onnx")
    assert two["weight_bytes"] == 256 * 256 * 2.25 / 8 and two["max_rel_error"] <= TOL
    doc = write_results(None, "inference", rows, [])
    text = report.inference_section(doc, "inference.png")
    assert "MatMulNBits" in text and "layer 256" in text and "Convolution at batch 1" in text
    assert report.plot_inference(doc, tmp_path / "inference.png")
    assert (tmp_path / "inference.png").stat().st_size > 0


@pytest.mark.slow
@needs_deploy
def test_deploy_accuracy_benchmark_rows_and_table(tmp_path):
    """benchmarks/deploy_accuracy.py: one row per model, method and block size, flips that
    bound the accuracy difference, and a table that names every block size."""
    from benchmarks import deploy_accuracy as bench
    rows = bench.measure(seeds=(0,), recipe=ttqlab.starts.Recipe(epochs=1),
                         finetune={"epochs": 1, "lr": 3e-3}, root=tmp_path)
    assert len(rows) == len(bench.BUILDS) * len(bench.METHODS) * len(bench.BLOCK_SIZES)
    for r in rows:
        assert 0 <= abs(r["acc_diff_images"]) <= r["flips"] <= 1000
    text = bench.table(rows)
    assert all(f"block {b}" in text for b in bench.BLOCK_SIZES)
    assert text.count("| mlp |") == len(bench.METHODS)
