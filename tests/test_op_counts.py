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


# a 3x3 kernel with padding 1 on a 6x6 input: along one axis, kernel offsets -1, 0, +1 read
# 5, 6 and 5 real pixels of the 6 output positions; 16 * 16 = 256 real products per kernel
# of the 36 * 9 = 324 (the other 68 read padding)
REAL_3X3_ON_6X6 = 16 * 16


def test_float_layers_count_one_mac_per_weight_and_real_input():
    rows = {r["layer"]: r for r in op_counts(_model(), (1, 6, 6))}
    assert rows["0"]["positions"] == 36 and rows["0"]["fp32 MACs"] == 4 * REAL_3X3_ON_6X6
    assert rows["0"]["padding MACs"] == 4 * (36 * 9 - REAL_3X3_ON_6X6)
    assert rows["3"]["positions"] == 1 and rows["3"]["mults"] == 144 * 8
    assert rows["3"]["padding MACs"] == 0
    expected = 4 * REAL_3X3_ON_6X6 * (ENERGY_PJ["mult"] + ENERGY_PJ["add"]) / 1000
    assert rows["0"]["energy (nJ)"] == pytest.approx(expected)
    total = rows["(total)"]
    assert total["fp32 MACs"] == 4 * REAL_3X3_ON_6X6 + 144 * 8 + 8 * 3
    assert total["energy (nJ)"] == pytest.approx(total["fp32 energy (nJ)"])


def test_count_padding_keeps_the_old_dense_count():
    rows = {r["layer"]: r for r in op_counts(_model(), (1, 6, 6), count_padding=True)}
    assert rows["0"]["fp32 MACs"] == 36 * 4 * 9 and rows["0"]["padding MACs"] == 0
    with pytest.raises(ValueError, match="count_padding must be True or False"):
        op_counts(_model(), (1, 6, 6), count_padding="yes")


def _valid(length, kernel, padding, stride=1):
    """Hand count, per kernel offset, of the output positions whose input is not padding."""
    out = (length + 2 * padding - kernel) // stride + 1
    return [sum(0 <= o * stride - padding + k < length for o in range(out))
            for k in range(kernel)]


def test_padding_taps_of_a_5x5_kernel_on_a_4x4_input_by_hand():
    """LeNet-5's conv2 on 8x8 digits: a 4x4 input, 5x5 kernel, padding 2. Along one axis
    the offsets -2..+2 read 2, 3, 4, 3, 2 of the 4 positions: 14 * 14 = 196 of the
    16 * 25 = 400 products read the input, 204 (51%) read padding."""
    assert _valid(4, 5, 2) == [2, 3, 4, 3, 2]
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 5, padding=2, bias=False)
    row = op_counts(nn.Sequential(conv), (2, 4, 4)).rows[0]
    assert row["positions"] == 16
    assert row["fp32 MACs"] == 3 * 2 * 196 and row["padding MACs"] == 3 * 2 * 204
    assert row["mults"] == row["adds"] == 3 * 2 * 196
    old = op_counts(nn.Sequential(conv), (2, 4, 4), count_padding=True).rows[0]
    assert old["fp32 MACs"] == 3 * 2 * 400


@pytest.mark.parametrize("method,mults_per_output", [("twn", 1), ("ttq", 2)])
def test_ternary_conv_adds_only_non_zero_weights_on_real_inputs(method, mults_per_output):
    torch.manual_seed(0)
    model = ttqlab.quantize(nn.Sequential(nn.Conv2d(2, 3, 5, padding=2)), method,
                            keep_first_last=False, **({"sparsity": 0.6} if method == "ttq"
                                                      else {}))
    w = model[0].weight.detach()
    v = _valid(4, 5, 2)
    by_hand = sum(v[i] * v[j] for _, _, i, j in (w != 0).nonzero().tolist())
    assert 0 < by_hand < int((w != 0).sum()) * 16      # some non-zero taps read padding
    row = op_counts(model, (2, 4, 4)).rows[0]
    assert row["adds"] == by_hand + 3 * 16                # + S+ - S- per output
    assert row["mults"] == mults_per_output * 3 * 16
    old = op_counts(model, (2, 4, 4), count_padding=True).rows[0]
    assert old["adds"] == int((w != 0).sum()) * 16 + 3 * 16


def test_strided_conv1d_padding_by_hand_and_reflect_padding_is_real():
    """cnn1d's first layer: length 40, kernel 5, stride 2, padding 1 -> 19 positions."""
    v = _valid(40, 5, 1, stride=2)
    assert sum(v) < 5 * 19
    conv = nn.Conv1d(1, 4, 5, stride=2, padding=1)
    row = op_counts(nn.Sequential(conv), (1, 40)).rows[0]
    assert row["positions"] == 19 and row["fp32 MACs"] == 4 * sum(v)
    assert row["padding MACs"] == 4 * (5 * 19 - sum(v))
    reflect = nn.Conv1d(1, 4, 5, stride=2, padding=1, padding_mode="reflect")
    row = op_counts(nn.Sequential(reflect), (1, 40)).rows[0]
    assert row["fp32 MACs"] == 4 * 5 * 19 and row["padding MACs"] == 0


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
    dense = op_counts(model, (1, 6, 6), count_padding=True).rows[0]
    assert dense["adds"] == (int((model[0].weight != 0).sum()) + 4) * 36
    assert conv["adds"] < dense["adds"]                  # taps on padding are skipped
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
