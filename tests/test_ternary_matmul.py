import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import ttqlab
from ttqlab.ternary_matmul import OpCounts, ternary_conv2d, ternary_matmul


def _dense(codes, wp, wn):
    wp = torch.as_tensor(wp).reshape(-1, 1)
    wn = torch.as_tensor(wn).reshape(-1, 1)
    return torch.where(codes > 0, wp, torch.where(codes < 0, -wn, torch.zeros(())))


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 5), n=st.integers(1, 9), k=st.integers(0, 17),
       two=st.booleans(), per_row=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_dense_and_counts_operations(b, n, k, two, per_row, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, k, generator=g)
    codes = torch.randint(-1, 2, (n, k), generator=g).to(torch.int8)
    wp = torch.rand(n if per_row else 1, generator=g) + 0.1
    wn = torch.rand(n if per_row else 1, generator=g) + 0.1 if two else wp
    scales = {"wp": wp, "wn": wn} if two else {"alpha": wp}
    y, c = ternary_matmul(x, codes, scales)
    torch.testing.assert_close(y, x @ _dense(codes, wp, wn).T, rtol=1e-5, atol=1e-5)
    nonzero = int((codes != 0).sum())
    assert c.additions == b * nonzero
    assert c.zeros_skipped == b * (n * k - nonzero)
    assert c.additions + c.zeros_skipped == c.dense_additions == c.dense_multiplications
    assert c.multiplications == b * n * (2 if two else 1) and c.subtractions == b * n
    assert c.multiplications_saved == b * n * k - c.multiplications


def test_zero_weights_cost_nothing_and_all_zero_rows_give_zero():
    codes = torch.tensor([[0, 0, 0], [1, 0, -1]], dtype=torch.int8)
    y, c = ternary_matmul(torch.tensor([2.0, 5.0, 3.0]), codes, 0.5)
    assert y.tolist() == [0.0, 0.5 * (2.0 - 3.0)]
    assert (c.additions, c.zeros_skipped, c.multiplications) == (2, 4, 2)


def test_binary_codes_skip_nothing():
    codes = torch.tensor([[1, -1, 1, 1]], dtype=torch.int8)
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    y, c = ternary_matmul(x, codes, torch.tensor(0.25))
    assert y.item() == pytest.approx(0.25 * (1 - 2 + 3 + 4)) and c.zeros_skipped == 0


def test_a_quantized_model_layer_by_hand():
    """extract() codes and scales run through the reference give the layer's output."""
    model = ttqlab.quantize(ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=0), "ttq").eval()
    codes = ttqlab.extract(model)
    x = torch.randn(3, 1, 8, 8)
    h = F.max_pool2d(F.relu(model.bn1(model.conv1(x))), 2)
    y, c = ternary_conv2d(h, codes["conv2"].codes, codes["conv2"].scales, padding=2)
    torch.testing.assert_close(y, F.conv2d(h, model.conv2.weight, padding=2),
                               rtol=1e-4, atol=1e-5)
    assert c.dense_multiplications == 3 * 4 * 4 * 64 * 32 * 5 * 5
    assert c.multiplications == 3 * 4 * 4 * 64 * 2  # W_p and W_n per output
    feats = torch.randn(2, 256)
    y, c2 = ternary_matmul(feats, codes["fc1"].codes, codes["fc1"].scales)
    torch.testing.assert_close(y, feats @ model.fc1.weight.T, rtol=1e-4, atol=1e-5)
    total = c + c2
    assert total.additions == c.additions + c2.additions
    text = str(total)
    assert "multiplications" in text and "zero weights skipped" in text and "%" in text


def test_per_channel_twn_and_strided_conv():
    model = ttqlab.quantize(ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=0), "twn",
                            per_channel=True)
    q = ttqlab.extract(model)["conv2"]
    x = torch.randn(2, 32, 9, 7)
    y, _ = ternary_conv2d(x, q.codes, q.scales, stride=2, padding=1)
    torch.testing.assert_close(y, F.conv2d(x, q.dequantize(), stride=2, padding=1),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("args", "match"), [
    ((torch.ones(2, 3), torch.tensor([[2, 0, 0]]), 1.0), "ternary"),
    ((torch.ones(2, 3), torch.ones(1, 3), 1.0), "integer tensor"),
    ((torch.ones(2, 4), torch.zeros(1, 3, dtype=torch.int8), 1.0), "4 features"),
    ((torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.int8), torch.ones(3)), "one per output"),
    ((torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.int8), {"n1": 2}), "INQ"),
])
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        ternary_matmul(*args)


def test_opcounts_default_is_the_identity_of_addition():
    c = OpCounts(1, 2, 3, 4, 5, 6)
    assert OpCounts() + c == c and sum([c, c], OpCounts()).dense_additions == 12


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"stride": 0}, r"stride must be a whole number .*>= 1, got 0 \(int\); as F.conv2d"),
    ({"stride": 2.0}, r"stride must be .*, got 2.0 \(float\)"),
    ({"padding": -1}, r"padding must be a whole number .*>= 0, got -1 \(int\); zeros added"),
    ({"padding": True}, r"padding must be .*, got True \(bool\)"),
])
def test_conv2d_refuses_bad_stride_and_padding(kwargs, match):
    x, codes = torch.ones(1, 1, 4, 4), torch.ones(2, 1, 3, 3, dtype=torch.int8)
    with pytest.raises(ValueError, match=match):
        ternary_conv2d(x, codes, 1.0, **kwargs)
    y, _ = ternary_conv2d(x, codes, 1.0, stride=np.int64(1), padding=np.int64(1))
    assert y.shape == (1, 2, 4, 4)  # numpy's ints are ints


def test_conv2d_refuses_what_is_not_a_4d_tensor():
    with pytest.raises(ValueError, match=r"got shape \(4, 4\) and shape \(2, 1, 3, 3\)"):
        ternary_conv2d(torch.ones(4, 4), torch.ones(2, 1, 3, 3, dtype=torch.int8), 1.0)
    with pytest.raises(ValueError, match=r"got a list and shape"):
        ternary_conv2d([[1.0]], torch.ones(2, 1, 3, 3, dtype=torch.int8), 1.0)
