"""quantize / extract / bake / unquantize on real models."""

import copy
import io

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

import ttqlab
from ttqlab.convert import latent_weight

METHODS = ["binary", "twn", "ttq", "inq"]


def small_cnn(seed=0):
    return ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=seed)


def _full_inq(model):
    inq = ttqlab.INQ(model, bits=5, schedule=(1.0,))
    inq.step()
    return model


def quantized(method, seed=0, **kw):
    m = small_cnn(seed)
    if method == "inq":
        ttqlab.INQ(m, bits=5, schedule=(1.0,), **kw).step()
    else:
        ttqlab.quantize(m, method, **kw)
    return m


@pytest.mark.parametrize("method", METHODS)
def test_layers_stay_their_class_and_first_last_stay_float(method):
    m = quantized(method)
    assert isinstance(m.conv2, nn.Conv2d) and isinstance(m.fc1, nn.Linear)
    names = [n for n, _, _ in ttqlab.quantized_layers(m)]
    assert names == ["conv2", "fc1"]
    assert not hasattr(m.conv1, "parametrizations") and not hasattr(m.fc2, "parametrizations")
    assert m.conv2.bias is None or not hasattr(m.conv2.parametrizations, "bias")


def test_keep_first_last_false_and_exclude():
    m = ttqlab.quantize(small_cnn(), "twn", keep_first_last=False, exclude=["fc1"])
    assert [n for n, _, _ in ttqlab.quantized_layers(m)] == ["conv1", "conv2", "fc2"]


@pytest.mark.parametrize("method", ["binary", "twn", "ttq"])
def test_weight_values_are_in_the_level_set(method):
    m = quantized(method)
    for _, layer, _ in ttqlab.quantized_layers(m):
        vals = layer.weight.detach().unique()
        assert len(vals) <= 3, vals


def test_inq_weights_are_powers_of_two():
    m = quantized("inq")
    for _, layer, q in ttqlab.quantized_layers(m):
        levels = ttqlab.quantizers.pow2_levels(layer.weight, 5, int(q.n1))
        assert bool(torch.isin(layer.weight.detach(), levels).all())


@pytest.mark.parametrize("method", METHODS)
def test_forward_passes_never_touch_latent_weights(method):
    m = quantized(method)
    before = {n: latent_weight(ly).detach().clone() for n, ly, _ in ttqlab.quantized_layers(m)}
    m.train()
    for _ in range(3):
        m(torch.randn(16, 1, 8, 8))
    m.eval()
    m(torch.randn(4, 1, 8, 8))
    for n, layer, _ in ttqlab.quantized_layers(m):
        assert torch.equal(latent_weight(layer), before[n])
        if method != "inq":
            assert not torch.equal(layer.weight, before[n])


@pytest.mark.parametrize("method", METHODS)
def test_state_dict_round_trip_through_safetensors(method):
    m = quantized(method, seed=1)
    if method == "ttq":
        with torch.no_grad():
            m.conv2.parametrizations.weight[0].wp.fill_(0.123)
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    loaded = st_load(st_save(sd))
    fresh = small_cnn(seed=2)
    if method == "inq":
        ttqlab.INQ(fresh, bits=5, schedule=(1.0,))
    else:
        ttqlab.quantize(fresh, method)
    fresh.load_state_dict(loaded)
    x = torch.randn(8, 1, 8, 8)
    m.eval(), fresh.eval()
    assert torch.equal(m(x), fresh(x))
    for (n, a, _), (_, b, _) in zip(ttqlab.quantized_layers(m), ttqlab.quantized_layers(fresh)):
        assert torch.equal(latent_weight(a), latent_weight(b)), n


def test_state_dict_also_round_trips_with_torch_save_weights_only():
    m = quantized("ttq")
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    fresh = ttqlab.quantize(small_cnn(5), "ttq")
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.conv2.weight, m.conv2.weight)


def test_ttq_scales_are_trainable_parameters():
    m = quantized("ttq")
    names = [n for n, _ in m.named_parameters()]
    assert "conv2.parametrizations.weight.0.wp" in names
    assert "conv2.parametrizations.weight.0.wn" in names
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    wp0 = m.conv2.parametrizations.weight[0].wp.item()
    m(torch.randn(8, 1, 8, 8)).sum().backward()
    opt.step()
    assert m.conv2.parametrizations.weight[0].wp.item() != wp0


def test_ttq_default_init_matches_layer_scale_and_paper_init_is_available():
    m = small_cnn()
    w = m.conv2.weight.detach().clone()
    ttqlab.quantize(m, "ttq")
    q = m.conv2.parametrizations.weight[0]
    delta = 0.05 * w.abs().max()
    eff = q.scales()
    assert eff["wp"].item() == pytest.approx(float(w[w > delta].mean()), rel=1e-5)
    assert eff["wn"].item() == pytest.approx(float(-w[w < -delta].mean()), rel=1e-5)
    assert q.scale.item() == pytest.approx(float(w.abs()[w.abs() > delta].mean()), rel=1e-5)
    assert 0.8 < q.wp.item() < 1.25 and 0.8 < q.wn.item() < 1.25  # near the paper's 1.0
    vals = m.conv2.weight.detach().unique()
    assert torch.allclose(vals, torch.stack([-eff["wn"], torch.tensor(0.0), eff["wp"]]))
    m2 = ttqlab.quantize(small_cnn(), "ttq", init=1.0)
    q2 = m2.conv2.parametrizations.weight[0]
    assert q2.wp.item() == 1.0 and q2.scale.item() == 1.0
    assert m2.conv2.weight.abs().max().item() == 1.0


def test_ttq_scale_gradient_is_the_papers_sum_in_scale_units():
    m = small_cnn()
    ttqlab.quantize(m, "ttq")
    q = m.conv2.parametrizations.weight[0]
    w = latent_weight(m.conv2)
    out = m.conv2.weight
    g = torch.randn_like(out)
    out.backward(g)
    pos = w.detach() > q.threshold(w)
    neg = w.detach() < -q.threshold(w)
    assert q.wp.grad.item() == pytest.approx(q.scale.item() * g[pos].sum().item(), rel=1e-4)
    assert q.wn.grad.item() == pytest.approx(-q.scale.item() * g[neg].sum().item(), rel=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_extract_dequantizes_bit_exactly(method):
    m = quantized(method)
    codes = ttqlab.extract(m)
    assert set(codes) == {"conv2", "fc1"}
    for name, qw in codes.items():
        layer = dict(m.named_modules())[name]
        assert qw.codes.dtype == torch.int8 and qw.codes.shape == layer.weight.shape
        assert torch.equal(qw.dequantize(), layer.weight.detach())
        if method in ("binary",):
            assert set(qw.codes.unique().tolist()) <= {-1, 1}
        elif method in ("twn", "ttq"):
            assert set(qw.codes.unique().tolist()) <= {-1, 0, 1}


def test_extract_twn_per_channel():
    m = ttqlab.quantize(small_cnn(), "twn", per_channel=True)
    qw = ttqlab.extract(m)["conv2"]
    assert qw.scales["alpha"].shape == (64, 1, 1, 1)
    assert torch.equal(qw.dequantize(), m.conv2.weight.detach())


def test_extract_refuses_partial_inq():
    m = small_cnn()
    ttqlab.INQ(m, schedule=(0.5, 1.0)).step()
    with pytest.raises(ValueError, match=r"inq.step"):
        ttqlab.extract(m)


@pytest.mark.parametrize("method", METHODS)
def test_bake_gives_plain_model_with_identical_outputs(method):
    m = quantized(method).eval()
    baked = ttqlab.bake(m).eval()
    assert not any(True for _ in ttqlab.quantized_layers(baked))
    assert any(True for _ in ttqlab.quantized_layers(m)), "bake must not change the original"
    x = torch.randn(8, 1, 8, 8)
    assert torch.equal(m(x), baked(x))
    assert set(baked.state_dict()) == set(small_cnn().state_dict())


def test_unquantize_restores_latent_weights():
    m = small_cnn()
    w = m.conv2.weight.detach().clone()
    ttqlab.quantize(m, "twn")
    ttqlab.unquantize(m)
    assert torch.equal(m.conv2.weight, w)
    ttqlab.quantize(m, "ttq")  # can quantize again afterwards


def test_deepcopy_of_quantized_model():
    m = quantized("ttq")
    c = copy.deepcopy(m)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(m.eval()(x), c.eval()(x))


def test_user_model_works_unchanged():
    class Mine(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 8)
            self.b = nn.Conv1d(1, 2, 3)
            self.c = nn.Linear(12, 3)

        def forward(self, x):
            h = self.a(x).unsqueeze(1)
            return self.c(self.b(h).flatten(1))

    m = ttqlab.quantize(Mine(), "ttq", keep_first_last=False)
    assert len(list(ttqlab.quantized_layers(m))) == 3
    m(torch.randn(5, 4)).sum().backward()
    assert m.b.parametrizations.weight.original.grad is not None


# --------------------------------------------------------------------------- bad input


def test_unknown_method():
    with pytest.raises(ValueError, match=r"unknown method 'ternary'.*binary"):
        ttqlab.quantize(small_cnn(), "ternary")


def test_unknown_option():
    with pytest.raises(ValueError, match=r"unknown option.*'t'"):
        ttqlab.quantize(small_cnn(), "twn", t=0.1)


def test_quantizing_twice_is_an_error():
    m = ttqlab.quantize(small_cnn(), "twn")
    with pytest.raises(ValueError, match=r"already quantized.*unquantize"):
        ttqlab.quantize(m, "ttq")


def test_nothing_to_quantize():
    with pytest.raises(ValueError, match="no Linear or Conv"):
        ttqlab.quantize(nn.Sequential(nn.ReLU()), "twn")
    with pytest.raises(ValueError, match="keep_first_last=False"):
        ttqlab.quantize(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), "twn")


def test_nan_weights_refused_and_all_zero_warns():
    m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
    with torch.no_grad():
        m[1].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ttqlab.quantize(m, "twn")
    with torch.no_grad():
        m[1].weight.zero_()
    with pytest.warns(UserWarning, match="all-zero"):
        ttqlab.quantize(m, "ttq")
    assert torch.isfinite(m[1].weight).all()


@pytest.mark.parametrize("t", [0, 1, 2, -0.5])
def test_bad_ttq_threshold(t):
    with pytest.raises(ValueError, match="between 0 and 1"):
        ttqlab.quantize(small_cnn(), "ttq", t=t)


def test_bad_exclude_name():
    with pytest.raises(ValueError, match="exclude names"):
        ttqlab.quantize(small_cnn(), "twn", exclude=["nope"])


def test_not_a_module():
    with pytest.raises(TypeError, match=r"nn.Module"):
        ttqlab.quantize(torch.randn(3), "twn")


@pytest.mark.parametrize("method,options", [
    ("binary", {}), ("twn", {}), ("inq", {}), ("bitnet", {}), ("ttq", {"init": 1.0})])
def test_meta_model_quantizes_then_takes_real_weights(method, options):
    """Large models are built on the meta device, quantized, then given storage and
    weights: quantize attaches the parametrizations without reading any value."""
    with torch.device("meta"):
        model = ttqlab.models.mlp(input_shape=(1, 8, 8), seed=0)
    ttqlab.quantize(model, method, **options)
    assert all(t.is_meta for t in model.state_dict().values())
    real = ttqlab.quantize(ttqlab.models.mlp(input_shape=(1, 8, 8), seed=0), method, **options)
    model.to_empty(device="cpu")
    model.load_state_dict(real.state_dict())
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.eval()(x), real.eval()(x))


def test_meta_model_with_value_dependent_setup_is_a_clear_error():
    with torch.device("meta"):
        model = ttqlab.models.mlp(input_shape=(1, 8, 8), seed=0)
    with pytest.raises(ValueError, match=r"'ttq'.*meta device.*to_empty.*then quantize"):
        ttqlab.quantize(model, "ttq")
    assert not any(True for _ in ttqlab.convert.quantized_layers(model))  # left as it was
