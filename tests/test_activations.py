"""Activation quantization: BitNet's per-token absmax and INQ-style powers of two."""

import pytest
import torch
from torch import nn

import ttqlab
from ttqlab import activations as A
from ttqlab import export


def test_absmax_per_token_hand_computed():
    x = torch.tensor([[0.5, -1.0, 0.25, 0.1],
                      [2.0, 0.0, -0.6, 1.0]])
    codes, gamma = A.absmax_codes(x, bits=8)
    # token 0: max|x| = 1, Q_b = 127: 63.5 -> 64 (half to even), -127, 31.75 -> 32, 12.7 -> 13
    # token 1: max|x| = 2: 127, 0, -38.1 -> -38, 63.5 -> 64
    assert gamma.squeeze(-1).tolist() == [1.0, 2.0]
    assert codes.tolist() == [[64, -127, 32, 13], [127, 0, -38, 64]]
    xq = A.quantize_absmax(x, bits=8)
    assert torch.equal(xq, codes * gamma / 127)
    # 3 bits: Q_b = 3
    c3, _ = A.absmax_codes(x, bits=3)
    assert c3.tolist() == [[2, -3, 1, 0], [3, 0, -1, 2]]


def test_absmax_error_bound_and_levels():
    x = torch.randn(64, 7, 16, generator=torch.Generator().manual_seed(0))
    for bits in (2, 4, 8, 16):
        q = A.quantize_absmax(x, bits)
        gamma = x.abs().amax(-1, keepdim=True)
        step = gamma / (2 ** (bits - 1) - 1)
        assert bool(((q - x).abs() <= step / 2 + 1e-6 * gamma).all())
        # at most 2^b - 1 distinct values per token
        assert max(len(torch.unique(row)) for row in q.reshape(-1, 16)) <= 2 ** bits - 1


def test_pow2_tokens():
    x = torch.tensor([[1.0, -0.3, 0.05, 0.7], [0.0, 0.0, 0.0, 0.0]])
    q = A.quantize_pow2_tokens(x, bits=3)  # n1 = 0 (max 1), n2 = -1: levels 0, 0.5, 1
    assert q.tolist() == [[1.0, -0.5, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]]
    y = torch.randn(10, 32, generator=torch.Generator().manual_seed(1))
    q = A.quantize_pow2_tokens(y, bits=5)
    nz = q[q != 0].abs()
    assert torch.equal(torch.log2(nz), torch.round(torch.log2(nz)))


@pytest.mark.parametrize("fn", [A.quantize_absmax, A.quantize_pow2_tokens])
def test_straight_through_gradient(fn):
    x = torch.randn(3, 8, requires_grad=True, generator=torch.Generator().manual_seed(2))
    g = torch.randn(3, 8, generator=torch.Generator().manual_seed(3))
    fn(x, 4).backward(g)
    assert torch.equal(x.grad, g)


def test_quantize_act_bits_hooks_the_layer_input():
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(),
                          nn.Linear(5, 3))
    ttqlab.quantize(model, "bitnet", act_bits=4)
    layer = model[2]
    assert isinstance(layer, nn.Linear)
    seen = {}
    layer.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    x = torch.randn(9, 6, generator=torch.Generator().manual_seed(4))
    y = model(x)
    h = torch.relu(model[0](x))
    assert torch.equal(seen["x"], A.quantize_absmax(h, 4))  # the layer saw the quantized input
    assert torch.equal(y, model[4](torch.relu(nn.functional.linear(
        A.quantize_absmax(h, 4), layer.weight, layer.bias))))
    assert list(A.act_quantized_layers(model)) == ["2"]
    assert "act bits" in ttqlab.layer_report(model).columns
    # bake keeps the activation quantizer, so its outputs are the quantized model's
    assert torch.equal(ttqlab.bake(model)(x), y)
    ttqlab.unquantize(model)
    assert not A.act_quantized_layers(model)
    assert not model[2]._forward_pre_hooks


@pytest.mark.parametrize("bad", [1, 17, 8.0, True, "8"])
def test_act_bits_out_of_range(bad):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=rf"act_bits must be a whole number .*>= 2 and <= 16, "
                                         rf"got {bad!r} \({type(bad).__name__}\); BitNet "
                                         rf"uses 8; pass None to keep activations in float"):
        ttqlab.quantize(model, "twn", act_bits=bad)
    assert not any(True for _ in ttqlab.quantized_layers(model))  # nothing half-done


def test_bad_rule():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"act_rule must be one of 'absmax', 'pow2'; got 'log' "
                                         r"\(str\); 'absmax': BitNet's 8-bit per-token"):
        ttqlab.quantize(model, "twn", act_bits=8, act_rule="log")


@pytest.mark.parametrize("rule", ["absmax", "pow2"])
def test_export_round_trip_keeps_activation_quantizers(tmp_path, rule):
    model = ttqlab.models.mlp(hidden=(16, 16), seed=0)
    ttqlab.quantize(model, "twn", act_bits=4, act_rule=rule)
    model.eval()
    x = torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    path = tmp_path / "a.ttq.safetensors"
    export.save(model, path)
    loaded = export.load(path)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert {k: v.options() for k, v in A.act_quantized_layers(loaded).items()} == {
        k: v.options() for k, v in A.act_quantized_layers(model).items()}


def test_export_rejects_bad_activation_manifest(tmp_path):
    model = ttqlab.quantize(ttqlab.models.mlp(hidden=(16,), seed=0), "twn",
                            keep_first_last=False, act_bits=8)
    tensors, manifest = export.pack(model)
    manifest["activations"][0]["bits"] = 40
    path = tmp_path / "bad.ttq.safetensors"
    export.write(path, tensors, manifest)
    with pytest.raises(export.FormatError, match="act_bits"):
        export.load(path)
    manifest["activations"][0].update(bits=8, layers=["nope"])
    export.write(path, tensors, manifest)
    with pytest.raises(export.FormatError, match="'nope' is not a module"):
        export.load(path)
