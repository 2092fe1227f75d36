"""The method registry and interface (ttqlab/methods), and the fidelity fixes of issue 13:
TTQ's units, binary's three scales, INQ's n1 in float64, the Larq-named STE functions,
and weights that already carry another parametrization (issue 15)."""

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations, parametrize

import ttqlab
import ttqlab.export
from ttqlab import methods
from ttqlab import quantizers as Q
from ttqlab.methods.base import WeightQuantizer, ste

# --------------------------------------------------------------------------- registry


class ToySign(WeightQuantizer):
    """A method defined outside ttqlab: ``max|w| * sign(w)`` (one file = one class)."""

    method = "toy_sign"
    OPTIONS = ("gain",)
    scale_names = ("alpha",)
    bits = 1

    def __init__(self, gain: float = 1.0):
        super().__init__()
        self.gain = float(gain)

    def options(self):
        return {"gain": self.gain}

    def _alpha(self, w):
        return self.gain * w.detach().abs().amax()

    def forward(self, w):
        return ste(w, torch.copysign(self._alpha(w), w.detach()))

    def codes(self, w):
        return 1 - 2 * torch.signbit(w.detach()).to(torch.int8)

    def scales(self, w):
        return {"alpha": self._alpha(w)}

    @staticmethod
    def dequantize(codes, scales):
        return torch.copysign(scales["alpha"], codes.to(scales["alpha"].dtype))

    @classmethod
    def scheme(cls, bits, packing):
        return "binary", None


@pytest.fixture
def toy_method():
    methods.register(ToySign)
    yield ToySign
    methods.unregister("toy_sign")


def test_registry_lists_the_four_methods_and_rejects_unknown_names():
    assert set(ttqlab.METHODS) >= {"binary", "twn", "ttq", "inq"}
    assert ttqlab.METHODS["ttq"] == ("t", "sparsity", "reduce", "init")
    assert methods.get("twn") is ttqlab.layers.TWNWeight
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        methods.get("nope")
    with pytest.raises(TypeError, match="WeightQuantizer"):
        methods.register(int)


#: (method, option, a bad value, what the error says): one check for each option, the
#: constructor's, the packed file's and the command line's
BAD_OPTIONS = [("binary", "scale", "row", "scale must be 'layer'"),
               ("twn", "factor", -1.0, "factor must be positive"),
               ("twn", "per_channel", 1, "per_channel must be True or False"),
               ("ttq", "t", 2.0, "t must lie strictly between 0 and 1"),
               ("ttq", "reduce", "max", "reduce must be 'sum'"),
               ("ttq", "init", -1.0, "init must be 'mean' or a positive number"),
               ("inq", "bits", 9, "bits must be an integer from 2 to 8"),
               ("bitnet", "eps", 2.0, "eps must be a small non-negative number")]


def test_every_option_is_declared_once_with_a_default_that_passes_its_check():
    for name in methods.names():
        cls = methods.get(name)
        assert cls.OPTIONS == tuple(o.name for o in cls.OPTIONS_SPEC), name
        assert cls.tag and cls.color and cls.color.startswith("#"), name
        for o in cls.OPTIONS_SPEC:
            assert o.help and o.check is not None, (name, o.name)
            o.check(o.default)
        w = torch.randn(4, 3)
        built = cls.build(w)
        assert set(built.options()) == set(cls.OPTIONS), name
        assert {o.name: o.default for o in cls.OPTIONS_SPEC} == built.options(), name


@pytest.mark.parametrize("method, option, bad, message", BAD_OPTIONS)
def test_a_bad_option_gets_the_same_error_from_the_constructor_a_file_and_the_cli(
        method, option, bad, message, tmp_path, capsys):
    cls = methods.get(method)
    with pytest.raises(ValueError, match=message):
        cls.build(torch.randn(4, 3), **{option: bad})
    with pytest.raises(ValueError, match=message):
        cls.check_options(**{option: bad})
    m = ttqlab.models.mlp(input_shape=(1, 8, 8), hidden=(8, 8), seed=0)
    if method == "inq":
        ttqlab.INQ(m, schedule=(1.0,)).step()  # fully frozen: exportable
    else:
        ttqlab.quantize(m, method)
    tensors, manifest = ttqlab.export.pack(m)
    manifest["quantized"][0]["options"][option] = bad
    path = tmp_path / "bad.ttq.safetensors"
    ttqlab.export.write(path, tensors, manifest)
    with pytest.raises(ttqlab.export.FormatError, match=f"option '{option}' has an invalid"):
        ttqlab.export.load(path)
    flag = "--" + option.replace("_", "-")
    spec = {o.name: o for o in cls.OPTIONS_SPEC}[option]
    if spec.cli and spec.type is not bool and not spec.choices:
        from ttqlab import cli
        with pytest.raises(SystemExit):
            cli.main(["train", "--method", method, flag, str(bad)])
        assert f"{flag}: {message}" in capsys.readouterr().err


def test_a_method_registered_from_outside_quantizes_extracts_reports_and_exports(
        toy_method, tmp_path, digits_small):
    assert "toy_sign" in ttqlab.METHODS and ttqlab.METHODS["toy_sign"] == ("gain",)
    m = ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=0)
    ttqlab.quantize(m, "toy_sign", gain=0.5)
    layers = list(ttqlab.quantized_layers(m))
    assert layers and all(q.method == "toy_sign" for _, _, q in layers)
    for name, qw in ttqlab.extract(m).items():
        w = dict(m.named_modules())[name].weight
        assert torch.equal(qw.dequantize(), w.detach())
        assert len(torch.unique(w.abs())) == 1  # every weight is +-alpha
    report = ttqlab.layer_report(m)
    rows = [r for r in report.rows if r.get("method") == "toy_sign"]
    assert len(rows) == len(layers) and all(r["bits/weight"] == 1.0 for r in rows)
    assert all(r["scales"].startswith("alpha=") for r in rows)
    h = ttqlab.fit(m, digits_small[0], digits_small[1], epochs=1, progress=False)
    assert h.layer(layers[0][0], "alpha")[-1] > 0  # the stats row reached the history
    path = tmp_path / "toy.ttq.safetensors"
    ttqlab.export.save(m, path)
    loaded = ttqlab.export.load(path)
    x = digits_small[1][0][:16]
    m.eval()
    torch.testing.assert_close(loaded.eval()(x), m(x), rtol=0, atol=0)


# --------------------------------------------------------------------------- TTQ units


class _ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 6, 3, bias=False), nn.BatchNorm2d(6, eps=1e-12)
        self.c2, self.b2 = nn.Conv2d(6, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-12)
        self.head = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        return self.head(x.flatten(1))


def _train(model, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(32, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(
            0, 10, (32,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("seed", [0, 1])
def test_ttq_default_units_train_like_the_paper_behind_batchnorm(optimizer, seed):
    """Behind BatchNorm, init="mean" (W = scale * wp) and init=1.0 (the paper, W = wp)
    started from the same wp, wn give the same training: same codes, latent weights and
    wp, wn at every step; only the effective W_p, W_n differ, by the factor scale."""
    torch.manual_seed(seed)
    a = _ConvBN().double()
    b = _ConvBN().double()
    b.load_state_dict(a.state_dict())
    ttqlab.quantize(a, "ttq", keep_first_last=False, exclude=["head"])
    ttqlab.quantize(b, "ttq", keep_first_last=False, exclude=["head"], init=1.0)
    qa = {n: q for n, _, q in ttqlab.quantized_layers(a)}
    qb = {n: q for n, _, q in ttqlab.quantized_layers(b)}
    assert all(float(q.scale) < 0.5 for q in qa.values())  # really different units
    with torch.no_grad():
        for n in qa:
            qb[n].wp.copy_(qa[n].wp)
            qb[n].wn.copy_(qa[n].wn)
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
            "adam": lambda p: torch.optim.Adam(p, lr=1e-2)}[optimizer]
    _train(a, make(a.parameters()), 8, seed)
    _train(b, make(b.parameters()), 8, seed)
    for n in qa:
        la = dict(a.named_modules())[n].parametrizations.weight.original
        lb = dict(b.named_modules())[n].parametrizations.weight.original
        torch.testing.assert_close(la, lb, rtol=1e-7, atol=1e-10)
        assert torch.equal(qa[n].codes(la), qb[n].codes(lb))
        torch.testing.assert_close(qa[n].wp, qb[n].wp, rtol=1e-7, atol=1e-10)
        torch.testing.assert_close(qa[n].wn, qb[n].wn, rtol=1e-7, atol=1e-10)
        torch.testing.assert_close(qa[n].scales()["wp"], qa[n].scale * qb[n].scales()["wp"])


def test_ttq_latent_gradient_multipliers_are_scale_times_wp_one_wn():
    w = torch.tensor([0.5, 0.01, -0.5], requires_grad=True)
    q = ttqlab.layers.TTQWeight(w.detach(), t=0.1)
    s, wp, wn = float(q.scale), float(q.wp.detach()), float(q.wn.detach())
    q(w).backward(torch.ones(3))
    torch.testing.assert_close(w.grad, torch.tensor([s * wp, s, s * wn]))


# --------------------------------------------------------------------------- binary


def test_binary_scales_layer_channel_none():
    w = torch.tensor([[1.0, -3.0], [1.0, 0.0], [-2.0, -2.0]])
    torch.testing.assert_close(Q.binarize(w), torch.copysign(torch.tensor(1.5), w))
    per = torch.tensor([[2.0], [0.5], [2.0]])
    torch.testing.assert_close(Q.binarize(w, scale="channel"), torch.copysign(per, w))
    torch.testing.assert_close(Q.binarize(w, scale="none"), torch.copysign(torch.ones(()), w))
    with pytest.raises(ValueError, match="'channel'"):
        Q.binarize(w, scale="row")


@pytest.mark.parametrize("scale", ["layer", "channel", "none"])
def test_binary_scale_options_extract_and_export(scale, tmp_path):
    m = ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=0)
    ttqlab.quantize(m, "binary", scale=scale)
    x = torch.randn(4, 1, 8, 8)
    for name, qw in ttqlab.extract(m).items():
        layer = dict(m.named_modules())[name]
        assert torch.equal(qw.dequantize(), layer.weight.detach())
        mags = layer.weight.detach().abs().reshape(layer.weight.shape[0], -1)
        if scale == "channel":
            assert torch.equal(mags, mags[:, :1].expand_as(mags))
            assert len(torch.unique(mags)) > 1
        else:
            assert len(torch.unique(mags)) == 1
            assert (float(mags[0, 0]) == 1.0) == (scale == "none")
    path = tmp_path / "b.ttq.safetensors"
    ttqlab.export.save(m, path)
    m.eval()
    torch.testing.assert_close(ttqlab.export.load(path).eval()(x), m(x), rtol=0, atol=0)


# --------------------------------------------------------------------------- STE (Larq)


def test_ste_sign_and_ste_tern_differ_from_larq_as_documented():
    w = torch.tensor([2.0, -3.0, 0.5, 0.0], requires_grad=True)
    Q.ste_sign(w).sum().backward()
    assert torch.equal(w.grad, torch.ones(4))  # Larq's clips to 0 where |w| > 1
    assert "Larq" in Q.ste_sign.__doc__ and "clip" in Q.ste_sign.__doc__
    assert torch.equal(Q.ste_sign(w, scale="none"), torch.tensor([1.0, -1.0, 1.0, 1.0]))
    w = torch.tensor([1.0, 0.7, -2.0, 0.2], requires_grad=True)  # 0.7 * E|w| = 0.685
    out = Q.ste_tern(w)
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones(4))
    assert out[1] != 0 and out[3] == 0 and torch.unique(out.abs()).numel() == 2  # scaled
    tie = torch.tensor([1.0, -1.0, 0.5, 0.5])  # delta = 0.7 * 0.75 = 0.525; a weight at delta
    delta = Q.twn_threshold(tie)
    assert float(Q.ste_tern(torch.cat([tie, delta.reshape(1)]))[-1]) >= 0
    assert "Larq" in Q.ste_tern.__doc__ and "threshold" in Q.ste_tern.__doc__


# --------------------------------------------------------------------------- INQ float64


@pytest.mark.parametrize("k", [-12, -7, -3, -1, 0, 2, 5])
def test_inq_n1_in_float64_at_power_of_two_boundaries(k):
    edge = 0.75 * 2.0**k
    below = float(np.nextafter(edge, 0.0))
    assert np.float32(below) == np.float32(edge)  # float32 cannot tell them apart
    for s, n1 in ((edge, k), (below, k - 1)):
        w = torch.tensor([s, -0.1 * s, 0.3 * s], dtype=torch.float64)
        assert Q.inq_exponent_range(w, bits=5)[0] == n1
        assert Q.inq_exponent_range(w.float(), bits=5)[0] == k  # float32 rounds below up
    assert math.floor(math.log2(4 * edge / 3)) == k


# --------------------------------------------------------------------------- chains


def _chained(kind):
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    torch.manual_seed(0)
    if kind == "spectral_norm":
        parametrizations.spectral_norm(m[0])
    else:
        parametrizations.weight_norm(m[0])
    return m


@pytest.mark.parametrize("kind", ["spectral_norm", "weight_norm"])
@pytest.mark.parametrize("method", ["twn", "ttq"])
def test_weight_with_another_parametrization(kind, method, tmp_path):
    m = _chained(kind)
    m.train()
    m(torch.randn(2, 8))  # one spectral-norm power iteration
    m.eval()
    float_weight = m[0].weight.detach().clone()
    ttqlab.quantize(m, method, keep_first_last=False, exclude=["2"])
    chain = m[0].parametrizations.weight
    assert len(chain) == 2 and isinstance(chain[-1], WeightQuantizer)
    # the quantizer reads the chain's output (the weight the float layer used)
    torch.testing.assert_close(ttqlab.convert.latent_weight(m[0]), float_weight)
    q = chain[-1]
    assert torch.equal(m[0].weight, q(float_weight))
    qw = ttqlab.extract(m)["0"]
    assert torch.equal(qw.dequantize(), m[0].weight.detach())
    # what export writes is the model that runs
    x = torch.randn(5, 8)
    ttqlab.export.save(m, tmp_path / "m.ttq.safetensors")
    plain = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    loaded = ttqlab.export.load(tmp_path / "m.ttq.safetensors", model=plain)
    torch.testing.assert_close(loaded(x), m(x), rtol=0, atol=0)
    baked = ttqlab.bake(m)
    torch.testing.assert_close(baked(x), m(x), rtol=0, atol=0)
    # unquantize removes only ttqlab's entry: the other parametrization stays
    ttqlab.unquantize(m)
    assert parametrize.is_parametrized(m[0], "weight") and len(m[0].parametrizations.weight) == 1
    assert not isinstance(m[0].parametrizations.weight[0], WeightQuantizer)
    torch.testing.assert_close(m[0].weight, float_weight)


def test_extract_refuses_a_parametrization_registered_after_the_quantizer():
    class Double(nn.Module):
        def forward(self, w: Tensor) -> Tensor:
            return 2 * w

    m = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    ttqlab.quantize(m, "twn", keep_first_last=False)
    parametrize.register_parametrization(m[0], "weight", Double())
    with pytest.raises(ValueError, match="after ttqlab's quantizer"):
        ttqlab.extract(m)
