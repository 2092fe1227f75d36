"""Attention and recurrent weights (not named ``weight``) are quantized like Linear ones:
nn.MultiheadAttention's packed in_proj_weight (or separate q/k/v_proj_weight) and the
weight_ih/hh(/hr)_l* of nn.GRU / nn.LSTM, through quantize, training, extract, export,
layer_report, the training history, bake and unquantize."""

import copy
import warnings

import pytest
import torch
from torch import nn

import ttqlab
from ttqlab import export
from ttqlab.convert import quantized_weights, state_key
from ttqlab.coverage import float_weights

METHODS = ["twn", "ttq", "bitnet"]
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")


class Seq(nn.Module):
    """Linear -> (TransformerEncoderLayer | GRU | bidirectional projected LSTM | MHA with
    separate q/k/v) -> Linear, on (batch, time, 3) inputs; every output uses every
    weight (the mean over time)."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.inp = nn.Linear(3, 16)
        if kind == "transformer":
            self.body = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
        elif kind == "gru":
            self.body = nn.GRU(16, 16, num_layers=2, batch_first=True)
        elif kind == "lstm":
            self.body = nn.LSTM(16, 8, batch_first=True, bidirectional=True, proj_size=4)
        else:  # kdim / vdim != embed_dim: separate q/k/v_proj_weight
            self.body = nn.MultiheadAttention(16, 2, kdim=3, vdim=3, batch_first=True)
        self.head = nn.Linear(16 if kind != "lstm" else 8, 2)

    def forward(self, x):
        h = self.inp(x)
        if self.kind == "qkv":
            h = self.body(h, x, x, need_weights=False)[0]
        else:
            h = self.body(h)
        h = h[0] if isinstance(h, tuple) else h
        return self.head(h.mean(1))


EXPECTED = {
    "transformer": ["body.self_attn.in_proj_weight"],
    "gru": ["body.weight_ih_l0", "body.weight_hh_l0", "body.weight_ih_l1",
            "body.weight_hh_l1"],
    "lstm": [f"body.weight_{k}_l0{r}" for r in ("", "_reverse") for k in ("ih", "hh", "hr")],
    "qkv": [f"body.{k}_proj_weight" for k in "qkv"],
}


def _x(n=4, seed=0):
    return torch.randn(n, 5, 3, generator=torch.Generator().manual_seed(seed))


def _quantized(kind, method, seed=0, **kw):
    torch.manual_seed(seed)
    model = Seq(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left float, so no warning
        ttqlab.quantize(model, method, keep_first_last=False, **kw)
    return model


@pytest.mark.parametrize("kind", list(EXPECTED))
@pytest.mark.parametrize("method", METHODS)
def test_quantized_trained_exported_reloaded_identical(tmp_path, kind, method):
    acts = {"act_bits": 8} if method == "bitnet" else {}  # BitNet's 8-bit activations
    model = _quantized(kind, method, **acts)
    names = [n for n, _, _ in ttqlab.quantized_layers(model)]
    assert set(EXPECTED[kind]) <= set(names)
    # no float matrix left: every 2-D+ parameter is the latent of a quantized weight
    assert float_weights(model) == {}
    latent = {n for n, p in model.named_parameters() if p.dim() >= 2}
    assert latent == {f"{state_key(n).rsplit('.', 1)[0]}.parametrizations."
                      f"{state_key(n).rsplit('.', 1)[1]}.original" for n in names}
    # each quantized weight is what extract's codes and scales say, codes ternary
    qws = ttqlab.extract(model)
    for name, module, param, _ in quantized_weights(model):
        w = getattr(module, param)
        assert torch.equal(w, qws[name].dequantize()), name
        assert set(qws[name].codes.unique().tolist()) <= {-1, 0, 1}
        assert w.unique().numel() <= 3
    # one training step moves every quantized weight's latent
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    y = torch.randint(0, 2, (8,), generator=torch.Generator().manual_seed(1))
    nn.functional.cross_entropy(model(_x(8, 1)), y).backward()
    opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert latent <= moved
    stats = ttqlab.train.layer_stats(model)
    assert set(EXPECTED[kind]) <= set(stats)
    assert all(stats[n]["method"] == method for n in EXPECTED[kind])
    report = {r["layer"]: r for r in ttqlab.layer_report(model).rows}
    for n in EXPECTED[kind]:
        assert report[n]["method"] == method and report[n]["bits/weight"] == 2
    assert report["(total)"]["params"] == sum(p.numel() for n, p in model.named_parameters()
                                              if not n.endswith((".wp", ".wn")))
    # export, reload into a fresh float model: identical outputs
    model.eval()
    path = tmp_path / "m.ttq.safetensors"
    export.save(model, path)
    loaded = export.load(path, Seq(kind))
    baked = ttqlab.bake(model)
    out = model(_x(3, 2))
    assert torch.equal(loaded(_x(3, 2)), out)
    assert torch.equal(baked(_x(3, 2)), out)
    with torch.no_grad():  # no weight requires grad: on a CPU a GRU takes oneDNN's kernel,
        out = model(_x(3, 2))  # so compare with a model whose weights do not either
        assert torch.equal(loaded.requires_grad_(False)(_x(3, 2)), out)
    if acts:  # the file says which inputs are quantized, and load puts them back
        assert set(ttqlab.activations.act_quantized_layers(loaded)) == \
            set(ttqlab.activations.act_quantized_layers(model)) >= \
            {n.rsplit(".", 1)[0] for n in EXPECTED[kind]}
    sizes = {r["layer"]: r for r in export.size_report(path).rows}
    assert all(sizes[n]["method"] == method for n in EXPECTED[kind])
    # unquantize gives back the latent float weights, as plain parameters
    latents = {n: ttqlab.convert.latent_weight(m, p).detach().clone()
               for n, m, p, _ in quantized_weights(model)}
    ttqlab.unquantize(model)
    assert not list(ttqlab.quantized_layers(model))
    state = model.state_dict()
    for n, w in latents.items():
        assert torch.equal(state[state_key(n)], w)


def test_file_names_the_parameters():
    model = _quantized("gru", "twn")
    _, manifest = export.pack(model)
    layers = {n for g in manifest["quantized"] for n in g["layers"]}
    assert "body.weight_hh_l1" in layers and "inp" in layers
    assert state_key("inp") == "inp.weight" and state_key("") == "weight"
    assert state_key("body.weight_hh_l1") == "body.weight_hh_l1"
    assert state_key("a.self_attn.in_proj_weight") == "a.self_attn.in_proj_weight"


@pytest.mark.parametrize("method", METHODS)
def test_deepcopy_of_a_trained_gru(method):
    model = _quantized("gru", method)
    model(_x()).sum().backward()  # the GRU now holds computed weights with a history
    twin = copy.deepcopy(model)
    with torch.no_grad():
        assert torch.equal(twin(_x(2, 5)), model(_x(2, 5)))
    latent = model.body.parametrizations.weight_hh_l0.original
    with torch.no_grad():
        latent.mul_(-1)  # the original changes, the copy does not follow
        assert not torch.equal(twin(_x(2, 5)), model(_x(2, 5)))


def test_first_last_and_exclude_by_layer_or_weight():
    model = ttqlab.quantize(Seq("gru"), "twn", exclude=["body.weight_hh_l1"])
    names = [n for n, _, _ in ttqlab.quantized_layers(model)]
    # first = inp (a Linear), last = head; the GRU's four matrices but the excluded one
    assert names == ["body.weight_ih_l0", "body.weight_hh_l0", "body.weight_ih_l1"]
    report = {r["layer"]: r.get("method") for r in ttqlab.layer_report(model).rows}
    assert report["body.weight_hh_l1"] == "fp32" and report["inp"] == "fp32"
    model = ttqlab.quantize(Seq("gru"), "ttq", exclude=["body"], keep_first_last=False)
    assert [n for n, _, _ in ttqlab.quantized_layers(model)] == ["inp", "head"]
    with pytest.raises(ValueError, match=r"not quantizable layers or weights.*body\.weight_"):
        ttqlab.quantize(Seq("gru"), "twn", exclude=["body.bias_ih_l0"])


def test_activations_of_attention_are_quantized():
    """act_bits quantizes the query, key and value an nn.MultiheadAttention receives."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    ref = copy.deepcopy(mha)
    model = ttqlab.quantize(nn.Sequential(mha), "twn", keep_first_last=False,
                            act_bits=4)
    assert "0" in ttqlab.activations.act_quantized_layers(model)
    q, k = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    ttqlab.quantize(nn.Sequential(ref), "twn", keep_first_last=False)
    aq = ttqlab.activations.ActivationQuantizer(4)
    with torch.no_grad():
        want = ref(aq(q), aq(k), aq(k), need_weights=False)[0]
        assert torch.equal(mha(q, k, k, need_weights=False)[0], want)


def test_activations_of_attention_passed_by_keyword_are_quantized():
    """query=, key=, value= as keywords are quantized as positional ones are."""
    torch.manual_seed(0)
    model = ttqlab.quantize(nn.Sequential(nn.MultiheadAttention(8, 2, batch_first=True)),
                            "twn", keep_first_last=False, act_bits=3)
    mha = model[0]
    q, k = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    with torch.no_grad():
        positional = mha(q, k, k, need_weights=False)[0]
        assert torch.equal(mha(query=q, key=k, value=k, need_weights=False)[0], positional)
        assert torch.equal(mha(q, key=k, value=k, need_weights=False)[0], positional)
        ttqlab.activations.detach(model)
        assert not mha._forward_pre_hooks and not mha._forward_pre_hooks_with_kwargs
        assert not torch.equal(mha(query=q, key=k, value=k, need_weights=False)[0],
                               positional)  # 3-bit inputs did change the output


@pytest.mark.needs_compile  # skips where torch.compile does not work (tests/conftest.py)
@pytest.mark.parametrize("kind", list(EXPECTED))
@pytest.mark.parametrize("method, options", [("ttq", {}), ("bitnet", {"act_bits": 8})],
                         ids=["ttq", "bitnet-act8"])
def test_compiled_attention_recurrent_equal_eager(kind, method, options):
    """torch.compile(fullgraph=True): no graph break in a quantized attention or recurrent
    model (activation quantizers included), and the same outputs and gradients. (Dynamo
    itself breaks the graph at every nn.RNN / GRU / LSTM unless ``allow_rnn`` is set: that
    is PyTorch's default, not ttqlab's doing.)"""
    eager = _quantized(kind, method, **options).train()
    torch._dynamo.reset()
    x, y = _x(6, 2), torch.randint(0, 2, (6,), generator=torch.Generator().manual_seed(2))
    outs = []
    with torch._dynamo.config.patch(allow_rnn=kind in ("gru", "lstm")):
        compiled = torch.compile(copy.deepcopy(eager), backend="aot_eager", fullgraph=True)
        for model in (eager, compiled):
            out = model(x)
            nn.functional.cross_entropy(out, y).backward()
            outs.append(out.detach())
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_inq_freezes_recurrent_weights():
    torch.manual_seed(0)
    model = Seq("gru")
    inq = ttqlab.INQ(model, bits=3, schedule=[0.5, 1.0], keep_first_last=False)
    assert inq.step() == 0.5 and inq.step() == 1.0
    w = model.body.weight_hh_l0
    levels = ttqlab.extract(model)["body.weight_hh_l0"].dequantize()
    assert torch.equal(w, levels)
    nonzero = w[w != 0].abs()
    assert torch.equal(torch.exp2(torch.log2(nonzero).round()), nonzero)  # powers of two


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["gru", "lstm", "transformer"])
def test_cuda_quantized_attention_recurrent_equal_cpu(kind):
    """On a GPU the recurrent kernel (cuDNN, which flattens the weights in place) gets the
    quantized weights and their gradients reach the latent ones, as on a CPU."""
    cpu = _quantized(kind, "ttq")
    gpu = copy.deepcopy(cpu).cuda()
    x, y = _x(8, 1), torch.randint(0, 2, (8,), generator=torch.Generator().manual_seed(1))
    for model, dev in ((cpu, "cpu"), (gpu, "cuda")):
        for _ in range(2):  # the second forward re-reads the weights
            nn.functional.cross_entropy(model(x.to(dev)), y.to(dev)).backward()
    for (name, a), b in zip(cpu.named_parameters(), gpu.parameters()):
        torch.testing.assert_close(b.grad.cpu(), a.grad, rtol=1e-3, atol=1e-4, msg=name)
