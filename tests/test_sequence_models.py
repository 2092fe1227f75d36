"""Sequence models, weight coverage (nothing left float silently), optimizer check."""

import warnings

import pytest
import torch
from torch import nn

import ttqlab
from ttqlab import export
from ttqlab.coverage import float_weights

SEQ = ["transformer", "gru", "lstm", "bag_of_tokens"]


def _x(n=6, seed=0):
    return torch.randn(n, 1, 40, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", SEQ)
def test_sequence_models_shape_seed_and_only_linear_weights(name):
    a, b = ttqlab.models.get(name, seed=3), ttqlab.models.get(name, seed=3)
    assert a(_x()).shape == (6, 10)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert float_weights(a) == {}  # every weight matrix is in an nn.Linear
    with pytest.raises(ValueError, match="patch must be a positive integer dividing"):
        ttqlab.models.get(name, patch=3)


@pytest.mark.parametrize("name", SEQ)
@pytest.mark.parametrize("method", ["twn", "ttq", "bitnet"])
def test_quantize_train_export_reload_identical(tmp_path, name, method):
    model = ttqlab.models.get(name, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no weight left float, no warning
        ttqlab.quantize(model, method, keep_first_last=False, act_bits=8)
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert len(list(ttqlab.quantized_layers(model))) == n_linear
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = _x(16, 1), torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(2))
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    model.eval()
    path = tmp_path / "s.ttq.safetensors"
    export.save(model, path)
    loaded = export.load(path)  # rebuilt from the file alone
    with torch.no_grad():
        assert torch.equal(loaded(_x(5, 3)), model(_x(5, 3)))


def test_multihead_attention_in_proj_is_quantized_and_embedding_reported_float():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 16)
            self.enc = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
            self.head = nn.Linear(16, 2)

        def forward(self, tokens):
            return self.head(self.enc(self.emb(tokens)).mean(1))

    model = Net()
    with pytest.warns(UserWarning, match=r"1 weight.*emb\.weight \(an embedding table") as rec:
        ttqlab.quantize(model, "twn", keep_first_last=False)
    assert "in_proj_weight" not in str(rec[0].message)
    rows = {r["layer"]: r for r in ttqlab.layer_report(model).rows}
    assert rows["enc.self_attn.in_proj_weight"]["method"] == "twn"
    assert rows["enc.self_attn.in_proj_weight"]["shape"] == (48, 16)  # q, k, v stacked
    assert rows["enc.self_attn.out_proj"]["method"] == "twn"
    assert rows["emb.weight"]["method"] == "fp32 (not quantizable)"
    # the float weight moved out of "(other)", which keeps the biases and LayerNorms
    assert rows["(other)"]["params"] == sum(p.numel() for p in model.parameters()
                                            if p.dim() < 2)
    assert rows["(total)"]["params"] == sum(p.numel() for n, p in model.named_parameters()
                                            if not n.endswith((".wp", ".wn")))
    assert model.enc.self_attn.in_proj_weight.unique().numel() <= 3


def test_gru_lstm_weights_are_quantized_embedding_reported_float():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)
            self.rnn = nn.GRU(8, 8, num_layers=2)
            self.lstm = nn.LSTM(8, 8)
            self.c = nn.Linear(8, 2)

    with pytest.warns(UserWarning, match="1 weight") as rec:
        model = ttqlab.quantize(Net(), "twn")
    assert "emb.weight" in str(rec[0].message) and "rnn" not in str(rec[0].message)
    names = [n for n, _, _ in ttqlab.quantized_layers(model)]
    assert names == ["b", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.weight_ih_l1",
                     "rnn.weight_hh_l1", "lstm.weight_ih_l0", "lstm.weight_hh_l0"]


def test_model_with_no_quantizable_weight():
    with pytest.raises(ValueError, match=r"no Linear or Conv layer.*pass keep_first_last"):
        ttqlab.quantize(nn.LSTM(3, 4), "ttq")  # weight_ih_l0 and weight_hh_l0: first, last
    with pytest.raises(ValueError, match=r"no Linear or Conv.*\['weight'\].*nn\.Linear"):
        ttqlab.quantize(nn.Embedding(3, 4), "ttq", keep_first_last=False)
    with pytest.raises(ValueError, match=r"no Linear or Conv layer.*to quantize$"):
        ttqlab.quantize(nn.Sequential(nn.ReLU()), "twn")


def test_fit_warns_when_optimizer_misses_ttq_scales(digits_small):
    train, test = digits_small
    model = ttqlab.models.mlp(hidden=(16, 16), seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)  # built before quantize
    ttqlab.quantize(model, "ttq")
    q = next(q for _, _, q in ttqlab.quantized_layers(model))
    wp = float(q.wp.detach())
    with pytest.warns(UserWarning, match=r"does not hold 2 trainable.*\d\.parametrizations\."
                                         r"weight\.0\.wp"):
        ttqlab.fit(model, train, test, epochs=1, optimizer=opt, progress=False)
    assert float(q.wp.detach()) == wp  # and indeed W_p never moved
    model2 = ttqlab.quantize(ttqlab.models.mlp(hidden=(16, 16), seed=0), "ttq")
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ttqlab.fit(model2, train, test, epochs=1, optimizer=opt2, progress=False)


def test_lstm_computes_what_torch_lstm_computes():
    model = ttqlab.models.lstm(hidden=8, seed=0)
    ref = nn.LSTM(8, 8, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(model.ih.weight)
        ref.bias_ih_l0.copy_(model.ih.bias)
        ref.weight_hh_l0.copy_(model.hh.weight)
        ref.bias_hh_l0.copy_(model.hh.bias)
        x = _x(4, 5)
        tokens = model.embed(x.reshape(4, 1, 10, 4).permute(0, 2, 1, 3).reshape(4, 10, 4))
        out, _ = ref(tokens)
        assert torch.allclose(model(x), model.head(out[:, -1]), atol=1e-6)


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_quantized_recurrent_weight_is_computed_once_per_forward(name):
    model = ttqlab.quantize(ttqlab.models.get(name, seed=0), "ttq")
    calls = []
    quantizer = model.hh.parametrizations.weight[0]
    handle = quantizer.register_forward_hook(lambda *a: calls.append(1))
    x = _x(3, 2)
    y = model(x)
    handle.remove()
    assert len(calls) == 1  # not once per step (10 steps)
    y.sum().backward()      # and the gradient still reaches the latent weight and the scales
    assert model.hh.parametrizations.weight.original.grad is not None
    assert quantizer.wp.grad is not None


def test_bag_of_tokens_ignores_the_order():
    model = ttqlab.models.bag_of_tokens(seed=0)
    x = _x(2, 4)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    shuffled = x.reshape(2, 1, 10, 4)[:, :, perm].reshape(2, 1, 40)  # the same 10 tokens
    with torch.no_grad():
        assert torch.allclose(model(x), model(shuffled), atol=1e-6)
