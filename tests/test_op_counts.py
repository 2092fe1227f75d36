"""ttqlab.stats.op_counts: operations and energy of one inference per layer."""

import pytest
import torch
from torch import nn

import ttqlab
from ttqlab.stats import ENERGY_PJ, op_counts


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 8), nn.ReLU(), nn.Linear(8, 3))


def test_float_layers_count_one_mac_per_weight_and_output_position():
    rows = {r["layer"]: r for r in op_counts(_model(), (1, 6, 6))}
    assert rows["0"]["positions"] == 36 and rows["0"]["fp32 MACs"] == 36 * 4 * 9
    assert rows["3"]["positions"] == 1 and rows["3"]["mults"] == 144 * 8
    expected = 36 * 36 * (ENERGY_PJ["mult"] + ENERGY_PJ["add"]) / 1000
    assert rows["0"]["energy (nJ)"] == pytest.approx(expected)
    total = rows["(total)"]
    assert total["fp32 MACs"] == 36 * 36 + 144 * 8 + 8 * 3
    assert total["energy (nJ)"] == pytest.approx(total["fp32 energy (nJ)"])


@pytest.mark.parametrize("method,mults_per_output", [("twn", 1), ("ttq", 2)])
def test_ternary_layer_adds_per_nonzero_weight_and_scales_once_per_output(method,
                                                                          mults_per_output):
    model = ttqlab.quantize(_model(), method, keep_first_last=False)
    rows = {r["layer"]: r for r in op_counts(model, (1, 6, 6))}
    fc = rows["3"]
    nonzero = int((model[3].weight != 0).sum())
    assert fc["method"] == method and fc["nonzero"] == nonzero < 144 * 8
    assert fc["adds"] == nonzero + 8          # one per non-zero weight, S+ - S- per output
    assert fc["mults"] == mults_per_output * 8
    conv = rows["0"]
    assert conv["adds"] == (int((model[0].weight != 0).sum()) + 4) * 36
    assert conv["energy (nJ)"] < conv["fp32 energy (nJ)"]


def test_binary_and_inq_counts():
    model = ttqlab.quantize(_model(), "binary", keep_first_last=False)
    fc = {r["layer"]: r for r in op_counts(model, (1, 6, 6))}["3"]
    assert fc["adds"] == 144 * 8 + 8 and fc["mults"] == 8
    model = _model()
    inq = ttqlab.INQ(model, bits=3, schedule=(1.0,), keep_first_last=False)
    inq.step()
    fc = {r["layer"]: r for r in op_counts(model, (1, 6, 6))}["3"]
    nonzero = int((model[3].weight != 0).sum())
    assert fc["mults"] == 0 and fc["shifts"] == fc["adds"] == nonzero


def test_sparser_ternary_model_costs_less_energy():
    a = ttqlab.quantize(_model(), "ttq", sparsity=0.3, keep_first_last=False)
    b = ttqlab.quantize(_model(), "ttq", sparsity=0.8, keep_first_last=False)
    ea = op_counts(a, (1, 6, 6)).rows[-1]["energy (nJ)"]
    eb = op_counts(b, (1, 6, 6)).rows[-1]["energy (nJ)"]
    assert eb < ea


def test_op_counts_keeps_training_mode_and_rejects_models_without_layers():
    model = _model().train()
    op_counts(model, (1, 6, 6))
    assert model.training
    with pytest.raises(ValueError, match="no Linear or Conv"):
        op_counts(nn.Sequential(nn.ReLU()), (3,))


class _Seq(nn.Module):
    """(1, 5, 3) -> Linear -> self-attention -> GRU -> Linear on the last step."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(3, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.gru = nn.GRU(8, 4, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = self.inp(x)
        h = self.attn(h, h, h, need_weights=False)[0]
        return self.head(self.gru(h)[0][:, -1])


def test_sequence_layers_count_per_token_and_time_step():
    torch.manual_seed(0)
    model = ttqlab.quantize(_Seq(), "twn", keep_first_last=False)
    rows = {r["layer"]: r for r in op_counts(model, (5, 3))}
    assert rows["inp"]["positions"] == 5          # a Linear on 5 tokens
    assert rows["attn.in_proj_weight"]["positions"] == 5
    assert rows["attn.out_proj"]["positions"] == 5
    assert rows["gru.weight_ih_l0"]["positions"] == 5 == rows["gru.weight_hh_l0"]["positions"]
    assert rows["head"]["positions"] == 1
    w = model.gru.weight_hh_l0
    assert rows["gru.weight_hh_l0"]["adds"] == (int((w != 0).sum()) + 12) * 5
    assert rows["gru.weight_hh_l0"]["method"] == "twn"
