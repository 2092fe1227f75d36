"""BitNet b1.58's absmean ternarization: the pure rule, the STE, the method, packing."""

import pytest
import torch

import ttqlab
from ttqlab import export
from ttqlab import quantizers as Q
from ttqlab.methods.bitnet import BitNetWeight


def test_absmean_hand_computed():
    w = torch.tensor([[0.9, -0.2, 0.05], [-1.3, 0.4, 0.0]])
    gamma = (0.9 + 0.2 + 0.05 + 1.3 + 0.4) / 6  # 0.475
    # W / gamma = 1.895, -0.421, 0.105, -2.737, 0.842, 0 -> round, clip to [-1, 1]
    codes, g = Q.absmean_codes(w, eps=0.0)
    assert torch.equal(codes, torch.tensor([[1, 0, 0], [-1, 1, 0]], dtype=torch.int8))
    assert g.item() == pytest.approx(gamma)
    expected = torch.tensor([[1.0, 0, 0], [-1, 1, 0]]) * g
    assert torch.equal(Q.ternarize_absmean(w, eps=0.0), expected)
    # with BitNet's eps the threshold is 0.5 * (gamma + eps): same codes here
    assert torch.equal(Q.absmean_codes(w)[0], codes)


def test_roundclip_ties_round_half_to_even():
    # gamma = mean|w| = 1 exactly and eps = 0, so W / gamma is exact: +-0.5 -> 0 (half to
    # even; half away from zero would give +-1), +-1.5 -> +-2 -> clipped to +-1, 2.5 -> 2 -> 1
    w = torch.tensor([0.5, -0.5, 1.5, -1.5, 0.5, 2.5, -0.5, 0.5])
    assert w.abs().mean().item() == 1.0
    codes, gamma = Q.absmean_codes(w, eps=0.0)
    assert gamma.item() == 1.0
    assert codes.tolist() == [0, 0, 1, -1, 0, 1, 0, 0]
    # matches the definition RoundClip(x) = max(-1, min(1, round(x))) on random data
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 3
    c, g = Q.absmean_codes(x, eps=1e-5)
    ref = torch.maximum(torch.tensor(-1.0), torch.minimum(torch.tensor(1.0),
                                                           torch.round(x / (g + 1e-5))))
    assert torch.equal(c.float(), ref)


def test_absmean_vs_twn_threshold_lineage():
    w = torch.randn(4000, generator=torch.Generator().manual_seed(1))
    m = w.abs().mean()
    codes, _ = Q.absmean_codes(w, eps=0.0)
    assert torch.equal(codes != 0, w.abs() > 0.5 * m)  # absmean keeps more than TWN (0.7)
    assert (codes != 0).sum() > (Q.ternarize_twn(w) != 0).sum()


def test_straight_through_gradient():
    w = torch.randn(5, 7, requires_grad=True, generator=torch.Generator().manual_seed(2))
    g = torch.randn(5, 7, generator=torch.Generator().manual_seed(3))
    q = Q.ste_absmean(w)
    assert torch.equal(q, Q.ternarize_absmean(w.detach()))
    q.backward(g)
    assert torch.equal(w.grad, g)


def test_bad_input():
    with pytest.raises(ValueError, match="eps"):
        Q.ternarize_absmean(torch.randn(3), eps=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        Q.ternarize_absmean(torch.tensor([1.0, float("nan")]))
    model = ttqlab.models.mlp(hidden=(8, 8), seed=0)
    with pytest.raises(ValueError, match=r"unknown option.*'factor'.*allowed: eps"):
        ttqlab.quantize(model, "bitnet", factor=0.7)


def test_method_forward_codes_scales_dequantize_agree():
    model = ttqlab.models.mlp(hidden=(16, 16), seed=0)
    ttqlab.quantize(model, "bitnet", keep_first_last=False)
    layers = list(ttqlab.quantized_layers(model))
    assert len(layers) == 3 and all(isinstance(q, BitNetWeight) for _, _, q in layers)
    qws = ttqlab.extract(model)
    for name, layer, _ in layers:
        w = layer.weight
        assert torch.equal(qws[name].dequantize(), w)
        assert set(torch.unique(qws[name].codes).tolist()) <= {-1, 0, 1}
        latent = layer.parametrizations.weight.original
        assert torch.equal(w, Q.ternarize_absmean(latent))
        assert qws[name].scales["gamma"].item() == pytest.approx(latent.abs().mean().item())
    report = str(ttqlab.layer_report(model))
    assert "bitnet" in report and "gamma=" in report


def test_training_step_moves_latent_weights():
    torch.manual_seed(0)
    model = ttqlab.quantize(ttqlab.models.mlp(hidden=(16,), seed=0), "bitnet",
                            keep_first_last=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    before = [layer.parametrizations.weight.original.clone()
              for _, layer, _ in ttqlab.quantized_layers(model)]
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    after = [layer.parametrizations.weight.original for _, layer, _ in
             ttqlab.quantized_layers(model)]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("packing", ["base3", "2bit"])
def test_export_round_trip(tmp_path, packing):
    model = ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=0)
    ttqlab.quantize(model, "bitnet")
    model.eval()
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "m.ttq.safetensors"
    export.save(model, path, packing=packing)
    loaded = export.load(path)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    tensors, manifest = export.read(path)
    assert manifest["quantized"][0]["method"] == "bitnet"
    assert manifest["quantized"][0]["options"] == {"eps": 1e-5}
    qws = ttqlab.extract(model)
    per_byte = 5 if packing == "base3" else 4
    assert tensors["ttqlab.codes"].numel() == sum(-(-q.codes.numel() // per_byte)
                                                  for q in qws.values())
    assert tensors["ttqlab.scales"].numel() == len(qws)  # one gamma per layer
