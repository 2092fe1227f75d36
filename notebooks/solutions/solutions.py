"""Worked solutions to the fill-in exercises of the ttqlab course (for instructors).

One plain function per exercise, named as in the notebooks' stub cells, each written the
way a student could write it after the lesson (not by calling the library). Every one
passes its check in ``ttqlab.exercises`` (``tests/test_exercises.py`` makes sure):

    cd notebooks/solutions && python -c "import solutions, ttqlab; print(ttqlab.exercises.grade(solutions))"

This folder is not part of the installed package (``pip install ttqlab`` does not ship
it), but it is in the public repository. See docs/instructors.md for handing it out after
the deadline, and ``make_solved.py`` for solved copies of the notebooks.
"""

import math

import torch

# --------------------------------------------------------------------------- notebook 1


def twn_threshold(w, factor=0.7):
    """Δ = factor · E|W|, one number for the whole layer."""
    return factor * w.abs().mean()


def twn_scale(w, delta):
    """α = mean of |W_i| over I_Δ = {i : |W_i| > Δ}; 0 if I_Δ is empty."""
    kept = w.abs()[w.abs() > delta]
    return kept.sum() / max(kept.numel(), 1)


def optimal_ternary(w):
    """argmin ||W − αT||²: keep the k largest |W_i|, k = argmax_k S_k² / k, α = S_k / k."""
    a = w.abs().flatten()
    if not bool(a.any()):
        return torch.zeros_like(w)
    s, order = torch.sort(a.double(), descending=True)
    S = torch.cumsum(s, 0)
    k = int(torch.argmax(S**2 / torch.arange(1, len(s) + 1))) + 1
    alpha = S[k - 1] / k
    T = torch.zeros_like(a)
    T[order[:k]] = torch.where(w.flatten()[order[:k]] >= 0, 1.0, -1.0)
    return (alpha * T).to(w.dtype).reshape(w.shape)


# --------------------------------------------------------------------------- notebook 2


def binarize(w):
    """α · sign(W) with α = E|W| and sign(0) = +1."""
    alpha = w.abs().mean()
    return torch.where(w >= 0, alpha, -alpha)


class StraightThrough(torch.autograd.Function):
    """Forward: q itself. Backward: the incoming gradient, unchanged, to w."""

    @staticmethod
    def forward(ctx, w, q):
        return q.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def ste(w, q):
    """Straight-through estimator: forward exactly q, backward dL/dw = dL/dq."""
    return StraightThrough.apply(w, q)


# --------------------------------------------------------------------------- notebook 3


def ttq_backward(w, wp, wn, delta, g):
    """TTQ's gradients: sums over each region (W_n's with a minus), scaled latent gradient."""
    pos, neg = w > delta, w < -delta
    grad_wp = g[pos].sum()
    grad_wn = -g[neg].sum()
    grad_w = torch.where(pos, wp * g, torch.where(neg, wn * g, g))
    return grad_w, grad_wp, grad_wn


# --------------------------------------------------------------------------- notebook 4


def sparsity_threshold(w, sparsity):
    """Δ = the k-th smallest |w|, k = round(p · n): exactly k weights have |w| ≤ Δ."""
    k = min(max(round(sparsity * w.numel()), 1), w.numel())
    return w.abs().flatten().kthvalue(k).values


# --------------------------------------------------------------------------- notebook 5


def pow2_levels(w, bits):
    """P_l = {±2^n1, ..., ±2^n2, 0}, n1 = floor(log2(4s/3)), n2 = n1 + 1 − 2^(b−1)/2."""
    s = w.abs().max().item()
    n1 = math.floor(math.log2(4 * s / 3))
    n2 = n1 + 1 - 2 ** (bits - 1) // 2
    mags = [2.0**n for n in range(n2, n1 + 1)]
    return torch.tensor(sorted([-m for m in mags] + [0.0] + mags))


def inq_partition(w, frozen, fraction):
    """The free weights to freeze now: the round(fraction · n) − #frozen largest |W|."""
    count = round(fraction * w.numel()) - int(frozen.sum())
    score = torch.where(frozen, -1.0, w.abs()).flatten()  # frozen ones are never chosen
    new = torch.zeros(w.numel(), dtype=torch.bool)
    new[torch.topk(score, count).indices] = True
    return new.reshape(w.shape)


# --------------------------------------------------------------------------- notebook 6


def pack_2bit(codes):
    """Digits d = T mod 3, four per byte, the first in the lowest bits; zero padding."""
    d = codes.flatten().long() % 3  # 0 -> 0, +1 -> 1, -1 -> 2
    d = torch.cat([d, d.new_zeros(-len(d) % 4)]).reshape(-1, 4)
    return (d[:, 0] | d[:, 1] << 2 | d[:, 2] << 4 | d[:, 3] << 6).to(torch.uint8)


def add_only_matmul(x, codes, wp, wn):
    """y[b, n] = W_p · Σ_{T[n,k]=+1} x[b, k] − W_n · Σ_{T[n,k]=−1} x[b, k]."""
    y = x.new_zeros(x.shape[0], codes.shape[0])
    for n, row in enumerate(codes):
        s_pos = x[:, row == 1].sum(dim=1)  # additions only
        s_neg = x[:, row == -1].sum(dim=1)
        y[:, n] = wp * s_pos - wn * s_neg
    return y


# --------------------------------------------------------------------------- notebooks 7 and 7b


def l2_scales(w, codes):
    """alpha_p = mean of w over codes = +1, alpha_n = mean of -w over codes = -1 (0 if empty):
    for a fixed assignment, ||w - w_t||² splits into one quadratic per side."""
    pos, neg = w[codes > 0], -w[codes < 0]
    return pos.sum() / max(pos.numel(), 1), neg.sum() / max(neg.numel(), 1)


def pow2_activation(x, bits, kmax):
    """0 or 2^k: 2^bits - 1 exponents k in [kmax - 2^bits + 2, kmax] and one code for zero;
    k = round(log2 x), clamped; 0 below half the smallest level."""
    kmin = kmax - (2**bits - 2)
    k = torch.round(torch.log2(x.clamp(min=1e-30))).clamp(kmin, kmax)
    return torch.where(x >= 2.0 ** (kmin - 1), 2.0**k, torch.zeros_like(x))


# --------------------------------------------------------------------------- notebook 8


def ternarize_absmean(w, eps=1e-5):
    """γ · RoundClip(W / (γ + ε), −1, 1), γ = E|W| (torch.round: ties to even)."""
    gamma = w.abs().mean() if w.numel() else w.new_zeros(())
    return torch.round(w / (gamma + eps)).clamp(-1, 1) * gamma


# --------------------------------------------------------------------------- reasoning


def laplace_threshold_ratio():
    """Δ*/E|W| for Laplace weights p(w) = e^(−|w|/b) / 2b (docs/answer_key.md).

    P(|W| > Δ) = e^(−Δ/b) and E[|W|; |W| > Δ] = (Δ + b) e^(−Δ/b), so TWN's objective
    (E[|W|; |W| > Δ])² / P(|W| > Δ) = (Δ + b)² e^(−Δ/b). Its derivative vanishes where
    2(Δ + b) = (Δ + b)² / b, i.e. Δ* = b = E|W|: the ratio is exactly 1.
    """
    return 1.0


def inq_sparsity(w, bits=2):
    """The fraction of ``w`` that INQ's ``bits``-bit rounding sets to zero: every |W|
    below half the smallest level, 2^(n2 − 1), with n1 = floor(log2(4 max|W| / 3)) and
    n2 = n1 + 1 − 2^(b−1)/2 (at b = 2, n2 = n1: one magnitude)."""
    s = w.abs().max().item()
    n1 = math.floor(math.log2(4 * s / 3))
    n2 = n1 + 1 - 2 ** (bits - 1) // 2
    return (w.abs() < 2.0 ** (n2 - 1)).double().mean().item()


# --------------------------------------------------------------------------- notebook 9


def payload_bytes(model, packing):
    """The tensor bytes of ttqlab.export.save(model, path, packing): per quantized layer
    ceil(n / 5) (base3) or ceil(n / 4) (2bit) bytes of codes plus two float32 scales;
    every other state_dict tensor at its size, except BatchNorm's num_batches_tracked and
    the quantized layers' '.parametrizations.' entries (latent weights, quantizer state)."""
    per_byte = {"base3": 5, "2bit": 4}[packing]
    total = 0
    for key, t in model.state_dict().items():
        if key.endswith(".parametrizations.weight.original"):
            total += math.ceil(t.numel() / per_byte) + 2 * 4   # codes, then W_p and W_n
        elif ".parametrizations." not in key and not key.endswith("num_batches_tracked"):
            total += t.numel() * t.element_size()
    return total
