"""The pure quantization rules against the papers' equations."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ttqlab import quantizers as Q

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=32)
weights = arrays("float32", st.integers(1, 60), elements=finite).map(torch.from_numpy)
nonzero_weights = weights.filter(lambda w: bool(w.abs().max() > 1e-6))


# --------------------------------------------------------------------------- binary / TWN


def test_binarize_hand_computed():
    w = torch.tensor([0.5, -1.5, 0.0, 2.0])
    alpha = (0.5 + 1.5 + 0.0 + 2.0) / 4
    assert torch.equal(Q.binarize(w), torch.tensor([alpha, -alpha, alpha, alpha]))


def test_twn_hand_computed():
    w = torch.tensor([1.0, -0.2, 0.1, -2.0, 0.6])
    delta = 0.7 * (1.0 + 0.2 + 0.1 + 2.0 + 0.6) / 5  # 0.546
    assert Q.twn_threshold(w).item() == pytest.approx(delta)
    alpha = (1.0 + 2.0 + 0.6) / 3  # mean |w| over |w| > delta
    expected = torch.tensor([alpha, 0, 0, -alpha, alpha])
    assert torch.allclose(Q.ternarize_twn(w), expected)
    # the later arXiv version: factor 0.75
    assert Q.twn_threshold(w, 0.75).item() == pytest.approx(0.75 * 3.9 / 5)


def test_twn_per_channel():
    w = torch.tensor([[1.0, -1.0, 0.1, 0.1], [10.0, 0.0, -10.0, 1.0]])
    q = Q.ternarize_twn(w, per_channel=True)
    # row 0: delta = 0.7 * 0.55 = 0.385 -> keeps +-1, alpha 1; row 1: delta = 0.7*5.25
    assert torch.allclose(q[0], torch.tensor([1.0, -1.0, 0, 0]))
    assert torch.allclose(q[1], torch.tensor([10.0, 0, -10.0, 0]))
    assert Q.twn_threshold(w, per_channel=True).shape == (2, 1)


def test_twn_all_zero_gives_zero_not_nan():
    q = Q.ternarize_twn(torch.zeros(3, 4))
    assert torch.equal(q, torch.zeros(3, 4))
    assert torch.equal(Q.binarize(torch.zeros(5)), torch.zeros(5))


@pytest.mark.parametrize("per_channel", [False, True])
def test_twn_of_an_empty_weight_is_empty(per_channel):
    w = torch.zeros(0, 3)
    assert Q.ternarize_twn(w, per_channel=per_channel).shape == (0, 3)
    assert float(Q.twn_scale(w, 0.5, per_channel)) == 0.0


@pytest.mark.parametrize("fn", [Q.binarize, Q.ternarize_twn, Q.ternarize_optimal])
def test_nan_weights_raise(fn):
    with pytest.raises(ValueError, match="NaN"):
        fn(torch.tensor([1.0, float("nan")]))


def test_integer_tensor_rejected_with_hint():
    with pytest.raises(TypeError, match="float"):
        Q.ternarize_twn(torch.tensor([1, 2, 3]))


@given(weights)
def test_twn_output_in_level_set(w):
    q = Q.ternarize_twn(w)
    alpha = q.abs().max()
    assert set(q.unique().tolist()) <= {-alpha.item(), 0.0, alpha.item()}
    # sign agrees with the weight wherever non-zero
    assert bool((q * w >= 0).all())


@given(nonzero_weights, st.floats(0.05, 1.5), st.floats(0.05, 1.5))
def test_twn_sparsity_grows_with_threshold(w, f1, f2):
    lo, hi = sorted((f1, f2))
    s_lo = (Q.ternarize_twn(w, lo) == 0).float().mean()
    s_hi = (Q.ternarize_twn(w, hi) == 0).float().mean()
    assert s_hi >= s_lo


def test_twn_scale_is_l2_optimal_for_fixed_support():
    torch.manual_seed(1)
    w = torch.randn(200)
    delta = Q.twn_threshold(w)
    t = Q.ternary_codes(w, delta).float()
    alpha = Q.twn_scale(w, delta)
    err = lambda a: ((w - a * t) ** 2).sum()  # noqa: E731
    assert err(alpha) <= err(alpha * 1.01) and err(alpha) <= err(alpha * 0.99)


def test_ste_passes_gradient_unchanged_and_forward_is_exact():
    w = torch.randn(10, requires_grad=True)
    q = Q.ste_tern(w)
    assert torch.equal(q.detach(), Q.ternarize_twn(w.detach()))
    g = torch.randn(10)
    q.backward(g)
    assert torch.equal(w.grad, g)
    w.grad = None
    Q.ste_sign(w).backward(g)
    assert torch.equal(w.grad, g)


# --------------------------------------------------------------------------- optimal ternary


def _brute_force_error(w):
    a = w.abs().double().sort(descending=True).values
    best = (w.double() ** 2).sum()
    for k in range(1, len(a) + 1):
        alpha = a[:k].mean()
        t = torch.zeros_like(a)
        t[:k] = 1
        best = min(best, ((a - alpha * t) ** 2).sum())
    return float(best)


@settings(max_examples=60)
@given(weights)
def test_optimal_ternary_matches_brute_force(w):
    err = float(((w.double() - Q.ternarize_optimal(w).double()) ** 2).sum())
    assert err == pytest.approx(_brute_force_error(w), rel=1e-5, abs=1e-6)


@given(weights, st.floats(0.1, 1.5))
def test_optimal_never_worse_than_twn(w, factor):
    e_opt = ((w - Q.ternarize_optimal(w)) ** 2).sum()
    e_twn = ((w - Q.ternarize_twn(w, factor)) ** 2).sum()
    assert e_opt <= e_twn * (1 + 1e-5) + 1e-6


def test_optimal_params_hand_computed():
    w = torch.tensor([4.0, -3.0, 0.5, 0.1])
    delta, alpha, k = Q.optimal_ternary_params(w)
    # S_k^2/k: k=1 -> 16, k=2 -> 24.5, k=3 -> 18.75, k=4 -> 14.06 -> k = 2
    assert k == 2 and alpha.item() == pytest.approx(3.5)
    assert 0.5 < delta.item() < 3.0
    assert torch.allclose(Q.ternarize_optimal(w), torch.tensor([3.5, -3.5, 0, 0]))


def test_optimal_per_channel():
    w = torch.tensor([[4.0, -3.0, 0.5, 0.1], [1.0, 1.0, 1.0, -1.0]])
    q = Q.ternarize_optimal(w, per_channel=True)
    assert torch.allclose(q[1], w[1])
    assert torch.allclose(q[0], torch.tensor([3.5, -3.5, 0, 0]))


# --------------------------------------------------------------------------- TTQ


def test_ttq_forward_hand_computed():
    w = torch.tensor([1.0, -0.04, 0.06, -0.5, 0.0])
    # delta = 0.05 * max|w| = 0.05
    q = Q.ternarize_ttq(w, 2.0, 3.0)
    assert torch.equal(q, torch.tensor([2.0, 0.0, 2.0, -3.0, 0.0]))


def test_ttq_gradients_are_sums_with_minus_sign_for_wn():
    torch.manual_seed(0)
    w = torch.randn(50, requires_grad=True)
    wp = torch.tensor(1.5, requires_grad=True)
    wn = torch.tensor(0.7, requires_grad=True)
    g = torch.randn(50)
    Q.ternarize_ttq(w, wp, wn, 0.2).backward(g)
    delta = 0.2 * w.detach().abs().max()
    pos, neg = w.detach() > delta, w.detach() < -delta
    assert wp.grad.item() == pytest.approx(g[pos].sum().item(), rel=1e-5)
    assert wn.grad.item() == pytest.approx(-g[neg].sum().item(), rel=1e-5)
    # latent gradient: scaled by W_p / 1 / W_n per region (Zhu et al., Eq. 8)
    scale = torch.where(pos, 1.5, torch.where(neg, 0.7, 1.0))
    assert torch.allclose(w.grad, scale * g)


def test_ttq_scale_gradients_match_autograd_of_the_forward():
    """W_p / W_n gradients equal autograd of w_t = W_p*[w>d] - W_n*[w<-d], and gradcheck."""
    torch.manual_seed(3)
    w = torch.randn(30, dtype=torch.float64)
    wp = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    wn = torch.tensor(1.1, dtype=torch.float64, requires_grad=True)
    d = 0.05 * w.abs().max()
    ref = wp * (w > d) - wn * (w < -d)
    g = torch.randn(30, dtype=torch.float64)
    gp_ref, gn_ref = torch.autograd.grad(ref, (wp, wn), g)
    gp, gn = torch.autograd.grad(Q.ternarize_ttq(w, wp, wn), (wp, wn), g)
    assert torch.allclose(gp, gp_ref) and torch.allclose(gn, gn_ref)
    assert torch.autograd.gradcheck(lambda a, b: Q.ternarize_ttq(w, a, b), (wp, wn))


def test_ttq_mean_variant_divides_by_region_size():
    w = torch.tensor([1.0, 2.0, -1.0, 0.0])
    wp = torch.tensor(1.0, requires_grad=True)
    wn = torch.tensor(1.0, requires_grad=True)
    Q.ternarize_ttq(w, wp, wn, reduce="mean").backward(torch.tensor([1.0, 3.0, 5.0, 7.0]))
    assert wp.grad.item() == pytest.approx(2.0)
    assert wn.grad.item() == pytest.approx(-5.0)


def test_ttq_fixed_sparsity_threshold():
    w = torch.arange(1, 101, dtype=torch.float32)
    q = Q.ternarize_ttq(w, 1.0, 1.0, sparsity=0.3)
    assert (q == 0).float().mean().item() == pytest.approx(0.3)


@given(nonzero_weights, st.floats(0.01, 0.99), st.floats(0.01, 0.99))
def test_ttq_sparsity_grows_with_t(w, t1, t2):
    lo, hi = sorted((t1, t2))
    s = [(Q.ternarize_ttq(w, 1.0, 1.0, t) == 0).sum() for t in (lo, hi)]
    assert s[1] >= s[0]


@pytest.mark.parametrize("t", [0.0, 1.0, -0.1, 1.5])
def test_ttq_t_outside_unit_interval(t):
    with pytest.raises(ValueError, match="between 0 and 1"):
        Q.ternarize_ttq(torch.randn(5), 1.0, 1.0, t)


def test_ttq_bad_reduce():
    with pytest.raises(ValueError, match="'sum'"):
        Q.ternarize_ttq(torch.randn(5), 1.0, 1.0, reduce="avg")


# --------------------------------------------------------------------------- INQ


def test_pow2_levels_hand_computed():
    w = torch.tensor([0.9, -0.3, 0.01])
    # s = 0.9: 4s/3 = 1.2 -> n1 = 0; b = 5: n2 = n1 + 1 - 8 = -7
    assert Q.inq_exponent_range(w, 5) == (0, -7)
    levels = Q.pow2_levels(w, 5)
    assert len(levels) == 17 and levels.max() == 1.0 and levels[levels > 0].min() == 2.0**-7
    # b = 2 is ternary {-2^n1, 0, 2^n1}; b = 3 has two exponents
    assert Q.pow2_levels(w, 2).tolist() == [-1.0, 0.0, 1.0]
    assert Q.pow2_levels(w, 3).tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]


def test_n1_boundary_is_exact():
    # 4s/3 = 2^n exactly: s = 0.75 -> n1 = 0 ; just below -> n1 = -1
    assert Q.inq_exponent_range(torch.tensor([0.75]))[0] == 0
    assert Q.inq_exponent_range(torch.tensor([0.7499999]))[0] == -1


def test_quantize_pow2_paper_rule_hand_computed():
    # n1 = 0, bits = 3: levels 0, 0.5, 1 ; zero below 2^(n2-1) = 0.25
    w = torch.tensor([1.0, 0.76, 0.74, 0.5, 0.375, 0.374, 0.25, 0.249, -0.8, 1.4])
    q = Q.quantize_pow2(w, 3)
    assert q.tolist() == [1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0, -1.0, 1.0]


@settings(max_examples=80)
@given(nonzero_weights, st.integers(2, 6))
def test_quantize_pow2_is_nearest_level(w, bits):
    levels = Q.pow2_levels(w, bits).double()
    q = Q.quantize_pow2(w, bits).double()
    assert bool(torch.isin(q, levels).all())
    dist = (w.double().unsqueeze(-1) - levels).abs()
    best = dist.min(-1).values
    assert torch.allclose((w.double() - q).abs(), best, atol=1e-12)


@given(nonzero_weights, st.integers(2, 6))
def test_pow2_codes_round_trip(w, bits):
    n1, _ = Q.inq_exponent_range(w, bits)
    codes = Q.pow2_exponents(w, bits)
    assert codes.dtype == torch.int8
    assert int(codes.abs().max()) <= 2 ** (bits - 1) // 2
    assert torch.equal(Q.pow2_from_codes(codes, bits, n1), Q.quantize_pow2(w, bits))


@pytest.mark.parametrize("bits", [1, 0, 9, 2.5, True])
def test_bad_bits(bits):
    with pytest.raises(ValueError, match="bits"):
        Q.pow2_levels(torch.randn(4), bits)


def test_pow2_all_zero_raises():
    with pytest.raises(ValueError, match="all-zero"):
        Q.quantize_pow2(torch.zeros(4))


def test_levels_from_given_n1_saturate():
    q = Q.quantize_pow2(torch.tensor([5.0, -0.003]), 5, n1=0)  # 2^(n2-1) = 2^-8
    assert q[0].item() == 1.0 and q[1].item() == 0.0
    assert math.log2(Q.pow2_levels(torch.ones(1), 5, n1=-2).max().item()) == -2
