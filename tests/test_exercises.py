"""The coursework checks (``ttqlab.exercises``): every check accepts the worked solution,
rejects each typical wrong solution with the hint for that mistake, and never crashes on
a student function that raises, returns the wrong thing, or has the wrong signature."""

import ast
import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ttqlab import exercises as E

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS_DIR = ROOT / "notebooks" / "solutions"


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


S = load(SOLUTIONS_DIR / "solutions.py", "ttqlab_course_solutions")
CHECKS = {name: getattr(E, f"check_{name}") for name in E.EXERCISES}


def run(check, fn, capsys):
    ok = check(fn)
    out = capsys.readouterr()
    assert out.err == "", "checks print to stdout only (the notebook tests fail on stderr)"
    return ok, out.out


# --------------------------------------------------------------------------- the solutions pass


@pytest.mark.parametrize("name", sorted(E.EXERCISES))
def test_the_worked_solution_passes(name, capsys):
    ok, out = run(CHECKS[name], getattr(S, name), capsys)
    assert ok is True, out
    assert out.startswith(f"✓ check_{name}: all ") and "cases passed" in out


def test_grade_runs_every_check_it_finds():
    assert E.grade(S) == {name: True for name in E.EXERCISES}
    assert E.grade({"twn_scale": S.twn_scale, "unrelated": print}) == {"twn_scale": True}
    assert E.grade({}, ["binarize"]) == {"binarize": False}  # missing counts as failed
    with pytest.raises(ValueError, match="unknown exercises"):
        E.grade(S, ["twn_treshold"])


def test_checks_are_deterministic(capsys):
    wrong = WRONG["optimal_ternary"]["twn"]
    first = run(E.check_optimal_ternary, wrong, capsys)
    assert run(E.check_optimal_ternary, wrong, capsys) == first


# --------------------------------------------------------------------------- typical mistakes
# Written the way a student would write them (not copied from the checks' own variants), and
# each mapped to the mistake whose hint it must receive.


def _sign1(w):
    return torch.where(w >= 0, 1.0, -1.0)


def _twn_scale_ge(w, delta):
    total, count = 0.0, 0
    for v in w.flatten().tolist():
        if abs(v) >= float(delta):
            total, count = total + abs(v), count + 1
    return torch.tensor(total / max(count, 1))


def _optimal_by_loop(keep=lambda best: best, objective=lambda S, k: S * S / k, sign=True):
    def fit(w):
        mags = sorted(w.abs().flatten().tolist(), reverse=True)
        if not any(mags):
            return torch.zeros_like(w)
        scores, total = [], 0.0
        for k, m in enumerate(mags, 1):
            total += m
            scores.append(objective(total, k))
        k = keep(scores.index(max(scores)) + 1)
        if k == 0:
            return torch.zeros_like(w)
        alpha = sum(mags[:k]) / k
        flat = w.flatten()
        order = torch.argsort(flat.abs(), descending=True, stable=True)[:k]
        out = torch.zeros_like(flat)
        out[order] = alpha * (torch.sign(flat[order]) if sign else 1.0)
        return out.reshape(w.shape)

    return fit


class ClippedSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, q):
        ctx.save_for_backward(w)
        return q.clone()

    @staticmethod
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        return g * (w.abs() <= 1).float(), None


def _ttq(sign_n=-1.0, mean=False, latent=lambda wp, wn: (wp, 1.0, wn), cmp=(">", "<")):
    def grads(w, wp, wn, delta, g):
        pos = w >= delta if cmp[0] == ">=" else w > delta
        neg = w <= -delta if cmp[1] == "<=" else w < -delta
        gp = (g * pos).sum()
        gn = sign_n * (g * neg).sum()
        if mean:
            gp, gn = gp / max(int(pos.sum()), 1), gn / max(int(neg.sum()), 1)
        a, b, c = latent(wp, wn)
        return g * (a * pos + b * (~pos & ~neg) + c * neg), gp, gn

    return grads


def _sparsity_sorted(index, magnitudes=True):
    def threshold(w, sparsity):
        a = (w.abs() if magnitudes else w).flatten().sort().values
        return a[min(index(round(sparsity * w.numel())), w.numel() - 1)]

    return threshold


def _levels(n1_of=lambda s: math.floor(math.log2(4 * s / 3)), n2_of=None, zero=True,
            negative=True, order=sorted, s_of=lambda w: w.abs().max().item()):
    def levels(w, bits):
        n1 = n1_of(s_of(w))
        n2 = n2_of(n1, bits) if n2_of else n1 + 1 - 2 ** (bits - 1) // 2
        values = [2.0**n for n in range(n2, n1 + 1)]
        values += [-v for v in values] if negative else []
        values += [0.0] if zero else []
        return torch.tensor(order(values))

    return levels


def _partition(rank=lambda w: w.abs(), among_free=True, accumulated=True, cumulative=False):
    def partition(w, frozen, fraction):
        n = w.numel()
        count = round(fraction * n) - (int(frozen.sum()) if accumulated else 0)
        candidates = [i for i in range(n) if not (among_free and frozen.flatten()[i])]
        score = rank(w).flatten()
        chosen = sorted(candidates, key=lambda i: -float(score[i]))[:count]
        mask = torch.zeros(n, dtype=torch.bool)
        mask[chosen] = True
        mask = mask.reshape(w.shape)
        return mask | frozen if cumulative else mask

    return partition


def _pack(digit=lambda t: t % 3, first_high=False, pad=True, order=lambda c: c.flatten()):
    def pack_2bit(codes):
        digits = [int(digit(int(t))) for t in order(codes).tolist()]
        if pad:
            digits += [0] * (-len(digits) % 4)
        out = []
        for i in range(0, len(digits) - 3, 4):
            group = digits[i:i + 4][::-1] if first_high else digits[i:i + 4]
            out.append(sum(d << (2 * j) for j, d in enumerate(group)))
        return torch.tensor(out, dtype=torch.uint8)

    return pack_2bit


def _pack_rows(codes):
    rows = codes.reshape(codes.shape[0], -1) if codes.dim() > 1 else codes[None]
    return torch.cat([S.pack_2bit(r) for r in rows])


def _matmul(combine):
    def matmul(x, codes, wp, wn):
        s_pos = torch.where(codes[None] == 1, x[:, None, :], 0.0).sum(-1)
        s_neg = torch.where(codes[None] == -1, x[:, None, :], 0.0).sum(-1)
        return combine(s_pos, s_neg, wp, wn)

    return matmul


def _dense(x, codes, wp, wn):
    w = torch.where(codes == 1, wp, torch.where(codes == -1, -wn, 0.0))
    return torch.einsum("bk,nk->bn", x, w)


def _masked(x, codes, wp, wn):
    return wp * (x @ (codes == 1).float().T) - wn * (x @ (codes == -1).float().T)


def _mask_multiply(x, codes, wp, wn):
    pos = (x.unsqueeze(1) * (codes == 1).unsqueeze(0)).sum(-1)
    neg = (x.unsqueeze(1) * (codes == -1).unsqueeze(0)).sum(-1)
    return wp * pos - wn * neg


WRONG = {
    "twn_threshold": {
        "no_abs": lambda w, factor=0.7: factor * w.sum() / w.numel(),
        "max": lambda w, factor=0.7: factor * w.abs().max(),
        "std": lambda w, factor=0.7: factor * w.std(),
        "sum": lambda w, factor=0.7: factor * w.abs().sum(),
        "per_channel": lambda w, factor=0.7: factor * (w.abs().mean(dim=tuple(range(1, w.dim())))
                                                       if w.dim() > 1 else w.abs().mean()),
        "factor_075": lambda w, factor=0.75: factor * w.abs().mean(),
        "ignores_factor": lambda w, factor=0.7: 0.7 * w.abs().mean(),
    },
    "twn_scale": {
        "mean_all": lambda w, delta: w.abs().mean(),
        "ge": _twn_scale_ge,
        "no_abs": lambda w, delta: w[(w > delta) | (w < -delta)].mean(),
        "positive_only": lambda w, delta: w[w > delta].mean(),
        "sum": lambda w, delta: w.abs()[w.abs() > delta].sum(),
        "nan": lambda w, delta: w.abs()[w.abs() > delta].sum() / (w.abs() > delta).sum(),
        "masked_mean": lambda w, delta: (lambda a: (a * (a > delta)).mean())(w.abs()),
    },
    "optimal_ternary": {
        "twn": lambda w: (lambda d: (w.abs()[w.abs() > d].mean() if (w.abs() > d).any() else 0.0)
                          * ((w > d).float() - (w < -d).float()))(0.7 * w.abs().mean()),
        "off_by_one": _optimal_by_loop(keep=lambda k: k - 1),
        "mean_objective": _optimal_by_loop(objective=lambda S, k: S / k),
        "no_sign": _optimal_by_loop(sign=False),
        "ascending": lambda w: S.optimal_ternary(w) * 0 + _ascending(w),
        "alpha_over_n": lambda w: S.optimal_ternary(w) * ((S.optimal_ternary(w) != 0).sum()
                                                          / max(w.numel(), 1)),
        "not_unsorted": lambda w: _optimal_left_sorted(w),
    },
    "binarize": {
        "torch_sign": lambda w: torch.sign(w) * w.abs().mean(),
        "no_scale": _sign1,
        "max_scale": lambda w: _sign1(w) * w.abs().max(),
        "no_abs": lambda w: _sign1(w) * w.mean(),
    },
    "ste": {
        "detached": lambda w, q: q,
        "one_liner": lambda w, q: (q - w).detach() + w,
        "latent": lambda w, q: w,
        "clipped": ClippedSTE.apply,
    },
    "ttq_backward": {
        "no_minus": _ttq(sign_n=1.0),
        "mean": _ttq(mean=True),
        "all_weights": lambda w, wp, wn, delta, g: (S.ttq_backward(w, wp, wn, delta, g)[0],
                                                    g.sum(),
                                                    S.ttq_backward(w, wp, wn, delta, g)[2]),
        "plain_ste": _ttq(latent=lambda wp, wn: (1.0, 1.0, 1.0)),
        "swapped": _ttq(latent=lambda wp, wn: (wn, 1.0, wp)),
        "cut_middle": _ttq(latent=lambda wp, wn: (wp, 0.0, wn)),
        "minus_wn": _ttq(latent=lambda wp, wn: (wp, 1.0, -wn)),
        "ge": _ttq(cmp=(">=", "<=")),
    },
    "sparsity_threshold": {
        "off_by_one": _sparsity_sorted(lambda k: k),
        "signed": _sparsity_sorted(lambda k: k - 1, magnitudes=False),
        "fraction_kept": lambda w, p: w.abs().flatten().sort().values[
            max(w.numel() - round(p * w.numel()) - 1, 0)],
        "t_max": lambda w, p: p * w.abs().max(),
    },
    "pow2_levels": {
        "round": _levels(n1_of=lambda s: round(math.log2(4 * s / 3))),
        "trunc": _levels(n1_of=lambda s: int(math.log2(4 * s / 3))),
        "ceil": _levels(n1_of=lambda s: math.ceil(math.log2(4 * s / 3))),
        "no_4_3": _levels(n1_of=lambda s: math.floor(math.log2(s))),
        "no_abs": _levels(s_of=lambda w: w.max().item()),
        "n2_low": _levels(n2_of=lambda n1, b: n1 - 2 ** (b - 1) // 2),
        "n2_high": _levels(n2_of=lambda n1, b: n1 + 2 - 2 ** (b - 1) // 2),
        "no_half": _levels(n2_of=lambda n1, b: n1 + 1 - 2 ** (b - 1)),
        "no_zero": _levels(zero=False),
        "no_negative": _levels(negative=False),
        "unsorted": _levels(order=lambda v: v),
    },
    "inq_partition": {
        "smallest": _partition(rank=lambda w: -w.abs()),
        "signed": _partition(rank=lambda w: w),
        "ignore_frozen": _partition(among_free=False),
        "not_accumulated": _partition(accumulated=False),
        "cumulative": _partition(cumulative=True),
    },
    "pack_2bit": {
        "msb_first": _pack(first_high=True),
        "twos_complement": _pack(digit=lambda t: t & 0b11),
        "offset": _pack(digit=lambda t: t + 1),
        "no_padding": _pack(pad=False),
        "per_row": _pack_rows,
        "column_major": _pack(order=lambda c: c.T.flatten() if c.dim() == 2 else c.flatten()),
    },
    "add_only_matmul": {
        "dense": _dense,
        "mask_multiply": _mask_multiply,
        "plus": _matmul(lambda p, n, wp, wn: wp * p + wn * n),
        "swapped": _matmul(lambda p, n, wp, wn: wn * p - wp * n),
        "no_scales": _matmul(lambda p, n, wp, wn: p - n),
        "transposed": _matmul(lambda p, n, wp, wn: (wp * p - wn * n).T),
    },
    "ternarize_absmean": {
        "half_up": lambda w, eps=1e-5: (
            lambda g: (torch.sign(w) * torch.floor((w / (g + eps)).abs() + 0.5)).clamp(-1, 1)
            * g)(w.abs().mean()),
        "no_clip": lambda w, eps=1e-5: torch.round(w / (w.abs().mean() + eps)) * w.abs().mean(),
        "no_scale": lambda w, eps=1e-5: torch.round(w / (w.abs().mean() + eps)).clamp(-1, 1),
        "max_scale": lambda w, eps=1e-5: torch.round(w / (w.abs().max() + eps)).clamp(-1, 1)
        * w.abs().max(),
        "per_channel": lambda w, eps=1e-5: (
            lambda g: torch.round(w / (g + eps)).clamp(-1, 1) * g)(
            w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True) if w.dim() > 1
            else w.abs().mean()),
        "twn": lambda w, eps=1e-5: (
            lambda d: torch.where(w.abs() > d, torch.sign(w), 0.0)
            * w.abs()[w.abs() > d].mean())(0.7 * w.abs().mean()),
    },
}


def _side_means(pos, neg):
    """A student's per-side means (0 for an empty side)."""
    return (pos.sum() / max(pos.numel(), 1), neg.sum() / max(neg.numel(), 1))


def _pow2_act(kmin_of=lambda kmax, b: kmax - 2**b + 2, rnd=torch.round, zero=True):
    """A student's power-of-two activation quantizer, with one step written differently."""
    def fn(x, bits, kmax):
        kmin = kmin_of(kmax, bits)
        k = rnd(torch.log2(x.clamp(min=1e-30))).clamp(kmin, kmax)
        q = 2.0**k
        return torch.where(x >= 2.0 ** (kmin - 1), q, torch.zeros_like(x)) if zero else q
    return fn


def _pow2_nearest_linear(x, bits, kmax):
    """Nearest level in the linear domain (cut at 1.5 * 2^k instead of 2^(k + 1/2))."""
    kmin = kmax - 2**bits + 2
    out = torch.zeros_like(x)
    for i, v in enumerate(x.flatten().tolist()):
        if v >= 2.0 ** (kmin - 1):
            levels = [2.0**k for k in range(kmin, kmax + 1)]
            out.view(-1)[i] = min(levels, key=lambda lv: abs(v - lv))
    return out


WRONG["l2_scales"] = {
    "signed_n": lambda w, c: _side_means(w[c == 1], w[c == -1]),
    "one_alpha": lambda w, c: (w[c != 0].abs().sum() / max(int((c != 0).sum()), 1),) * 2,
    "by_n": lambda w, c: (w[c == 1].sum() / w.numel(), -w[c == -1].sum() / w.numel()),
    "abs": lambda w, c: _side_means(w[c == 1].abs(), w[c == -1].abs()),
    "by_sign": lambda w, c: _side_means(w[w > 0], -w[w < 0]),
}
WRONG["pow2_activation"] = {
    "no_zero": _pow2_act(zero=False),
    "linear": _pow2_nearest_linear,
    "too_many": _pow2_act(kmin_of=lambda kmax, b: kmax - 2**b + 1),
    "floor": _pow2_act(rnd=torch.floor),
}

def _payload(per_byte=lambda packing: {"base3": 5, "2bit": 4}[packing], counters=False,
             scales=8, once=False, latent=False):
    """A student's payload count from the state_dict, with one rule written differently."""
    def payload_bytes(model, packing):
        weights, other = [], 0
        for key, t in model.state_dict().items():
            if key.endswith("parametrizations.weight.original"):
                weights.append(t.numel())
            if latent and "parametrizations" in key:
                other += t.numel() * t.element_size()
            elif "parametrizations" not in key and (counters or "num_batches" not in key):
                other += t.numel() * t.element_size()
        k = per_byte(packing)
        codes = -(-sum(weights) // k) if once else sum(-(-n // k) for n in weights)
        return codes + scales * len(weights) + other
    return payload_bytes


def _payload_by_modules(model, packing):
    """The same count, walking the layers (ttqlab.quantized_layers) instead of the keys."""
    import ttqlab

    quantized = {name for name, _, _ in ttqlab.quantized_layers(model)}
    total = 0
    for name, module in model.named_modules():
        if "parametrizations" in name.split("."):
            continue  # inside a quantized layer: its latent weight and quantizer state
        if name in quantized:
            n = module.parametrizations.weight.original.numel()
            total += math.ceil(n / (5 if packing == "base3" else 4)) + 8
            tensors = [b for k, b in module.named_buffers(recurse=False)]
            tensors += [p for k, p in module.named_parameters(recurse=False)]
        else:
            tensors = [t for k, t in [*module.named_parameters(recurse=False),
                                      *module.named_buffers(recurse=False)]
                       if k != "num_batches_tracked"]
        total += sum(t.numel() * t.element_size() for t in tensors)
    return total


WRONG["payload_bytes"] = {
    "num_batches_tracked": _payload(counters=True),
    "no_scales": _payload(scales=0),
    "rounded_once": _payload(once=True),
    "latent_weights": _payload(latent=True),
    "packing_swapped": _payload(per_byte=lambda packing: 4 if packing == "base3" else 5),
}


def _ascending(w):
    """Keeps the k* *smallest* magnitudes (sorted the wrong way), α their mean."""
    mags = sorted(w.abs().flatten().tolist())
    if not any(mags):
        return torch.zeros_like(w)
    cumulative = np.cumsum(mags)
    k = int(np.argmax(cumulative**2 / np.arange(1, len(mags) + 1))) + 1
    flat = w.flatten()
    order = torch.argsort(flat.abs(), stable=True)[:k]
    out = torch.zeros_like(flat)
    out[order] = float(cumulative[k - 1] / k) * _sign1(flat[order])
    return out.reshape(w.shape)


def _optimal_left_sorted(w):
    """The right k* and α, but T written in sorted order (forgot to un-sort)."""
    a = w.abs().flatten()
    if not bool(a.any()):
        return torch.zeros_like(w)
    s, order = torch.sort(a.double(), descending=True)
    cs = torch.cumsum(s, 0)
    k = int(torch.argmax(cs**2 / torch.arange(1, len(s) + 1))) + 1
    t = torch.zeros_like(a)
    t[:k] = torch.where(w.flatten()[order[:k]] >= 0, 1.0, -1.0)
    return (cs[k - 1] / k * t).to(w.dtype).reshape(w.shape)


def test_every_catalogued_mistake_has_a_wrong_solution():
    assert {name: set(found) for name, found in WRONG.items()} == \
        {name: set(hints) for name, hints in E.HINTS.items()}


CATALOGUE = [(name, mistake) for name in sorted(WRONG) for mistake in sorted(WRONG[name])]


@pytest.mark.parametrize(("name", "mistake"), CATALOGUE, ids=[f"{n}-{m}" for n, m in CATALOGUE])
def test_a_typical_mistake_fails_with_its_hint(name, mistake, capsys):
    ok, out = run(CHECKS[name], WRONG[name][mistake], capsys)
    assert ok is False
    assert out.startswith(f"✗ check_{name}: case "), out
    assert "Hint: " + E.HINTS[name][mistake] in out, out
    assert out.count("Hint:") == 1


def test_a_verdict_names_the_case_the_expectation_and_the_result(capsys):
    _, out = run(E.check_twn_scale, WRONG["twn_scale"]["ge"], capsys)
    assert out.splitlines() == [
        "✗ check_twn_scale: case 2 of 7, 'ties: |W_i| = Δ counts as zero' "
        "(w=[0.5, -0.5, 0.25, 1, -1.5], delta=0.5)",
        "  expected 1.25, got 0.875",
        "  Hint: " + E.HINTS["twn_scale"]["ge"],
    ]


def test_long_tensors_are_summarised(capsys):
    def off_when_large(w):
        return S.binarize(w) * (1.0 if w.numel() <= 8 else 1.01)

    _, out = run(E.check_binarize, off_when_large, capsys)
    assert "(w=a tensor of shape (6, 3, 3, 3))" in out
    assert "162 of 162 values differ; the first at index (0, 0, 0, 0): expected" in out

    def nan_when_large(w):
        return S.binarize(w) if w.numel() <= 8 else torch.full_like(w, math.nan)

    _, out = run(E.check_binarize, nan_when_large, capsys)
    assert "contains NaN or inf (162 of 162 values): [nan, nan, nan, nan, nan, nan, nan, nan, …]" \
        " (shape (6, 3, 3, 3))" in out
    assert max(len(line) for line in out.splitlines()) < 200


def test_the_ste_one_liner_is_caught_by_its_round_off(capsys):
    _, out = run(E.check_ste, WRONG["ste"]["one_liner"], capsys)
    assert "forward value:" in out and "max |difference|" in out


def test_add_only_counts_operations(capsys):
    _, out = run(E.check_add_only_matmul, _masked, capsys)
    assert "the values are right, but you computed them with matmul" in out


def test_an_instructor_can_write_a_check_of_their_own(capsys):
    from ttqlab.checking import Case, Exercise, check, judge_tensor

    square = Exercise(name="square", signature="square(x)",
                      cases=lambda: [Case("zero", (torch.tensor(0.0),)),
                                     Case("negative", (torch.tensor(-3.0),))],
                      reference=lambda x: x * x, judge=judge_tensor(),
                      mistakes={"double": (lambda x: 2 * x, "x² is x·x, not 2x.")})
    assert run(lambda *a: check(square, *a), lambda x: x**2, capsys) == (
        True, "✓ check_square: all 2 cases passed.\n")
    ok, out = run(lambda *a: check(square, *a), lambda x: x + x, capsys)
    assert not ok and out.splitlines() == [
        "✗ check_square: case 2 of 2, 'negative' (x=-3)", "  expected 9, got -6",
        "  Hint: x² is x·x, not 2x."]


# --------------------------------------------------------------------------- never crash


def not_implemented(*args, **kwargs):
    raise NotImplementedError  # your code here


class Odd:
    pass


BAD = {
    "raises": lambda *a, **k: 1 / 0,
    "returns None": lambda *a, **k: None,
    "returns a list": lambda *a, **k: [1.0, 2.0, 3.0],
    "returns a string": lambda *a, **k: "0.35",
    "returns an object": lambda *a, **k: Odd(),
    "returns NaN": lambda *a, **k: torch.tensor(float("nan")),
    "returns a NaN array": lambda *a, **k: np.full((3, 2), np.nan),
    "returns an int8 tensor": lambda *a, **k: torch.zeros(5, dtype=torch.int8),
    "returns the wrong shape": lambda *a, **k: torch.zeros(7, 3),
    "returns a 3-tuple of None": lambda *a, **k: (None, None, None),
    "returns its input": lambda *a, **k: a[0],
    "takes no arguments": lambda: 0.0,
    "modifies its input": lambda *a, **k: a[0].zero_(),
    "not a function": 0.35,
}


@pytest.mark.parametrize("name", sorted(E.EXERCISES))
def test_bad_functions_fail_without_crashing(name, capsys):
    for label, fn in BAD.items():
        ok, out = run(CHECKS[name], fn, capsys)
        assert ok is False, f"{label} passed"
        assert out.startswith(f"✗ check_{name}"), f"{label}: {out}"
        assert "Traceback" not in out


@pytest.mark.parametrize("name", sorted(E.EXERCISES))
def test_an_unsolved_stub_gets_an_encouraging_note(name, capsys):
    ok, out = run(CHECKS[name], not_implemented, capsys)
    assert ok is False
    assert out == (f"✎ {name} is not implemented yet. Replace `raise NotImplementedError` with "
                   f"your code and run this cell again: the check will guide you.\n")


def test_messages_say_what_went_wrong(capsys):
    said = {label: run(E.check_twn_threshold, fn, capsys)[1] for label, fn in BAD.items()}
    assert "raised ZeroDivisionError: division by zero" in said["raises"]
    assert "did you forget `return`?" in said["returns None"]
    assert "expected shape () (one number), got shape (3,)" in said["returns a list"]
    assert "expected a torch.Tensor, got a str" in said["returns a string"]
    assert "contains NaN" in said["returns NaN"]
    assert "cannot be called as twn_threshold(w)" in said["takes no arguments"]
    assert "Expected: def twn_threshold(w, factor=0.7)" in said["takes no arguments"]
    assert "changed its input w in place" in said["modifies its input"]
    assert "pass your function itself" in said["not a function"]
    _, out = run(E.check_pack_2bit, lambda codes: S.pack_2bit(codes).long(), capsys)
    assert "expected dtype torch.uint8, got torch.int64" in out
    _, out = run(E.check_inq_partition, lambda *a: S.inq_partition(*a).float(), capsys)
    assert "expected a bool mask" in out
    _, out = run(E.check_ttq_backward, lambda *a: S.ttq_backward(*a)[:2], capsys)
    assert "return a tuple of 3, (dL/dw, dL/dW_p, dL/dW_n); got a tuple of 2" in out


def test_array_likes_are_accepted(capsys):
    assert run(E.check_twn_threshold, lambda w, factor=0.7: float(factor * w.abs().mean()),
               capsys)[0]
    assert run(E.check_pow2_levels, lambda w, b: S.pow2_levels(w, b).numpy(), capsys)[0]
    assert run(E.check_pack_2bit, lambda c: bytes(S.pack_2bit(c).tolist()), capsys)[0]


def test_verbose_false_prints_nothing(capsys):
    assert E.check_binarize(S.binarize, verbose=False) is True
    assert E.check_binarize(not_implemented, verbose=False) is False
    assert capsys.readouterr().out == ""


# --------------------------------------------------------------------------- the notebooks


def _notebook_exercises():
    make = load(SOLUTIONS_DIR / "make_solved.py", "ttqlab_make_solved")
    notebooks = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    return make, [(p, json.loads(p.read_text())) for p in notebooks]


def test_every_notebook_ends_with_checked_exercises():
    make, notebooks = _notebook_exercises()
    seen = []
    for path, nb in notebooks:
        names = make.exercises(nb)
        assert 1 <= len(names) <= 3, f"{path.name}: {names}"
        seen += names
    assert sorted(seen) == sorted(E.EXERCISES), "every checker is used in some notebook"


def _exec_exercise_cells(nb, capsys):
    """Run a notebook's exercise cells alone; return {exercise: the check cell's value}."""
    namespace = {}
    exec("import math\nimport torch\nimport ttqlab\nfrom ttqlab import quantizers as Q", namespace)
    results = {}
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("ttqlab", {})
        source = "".join(cell["source"])
        if meta.get("role") == "stub":
            exec(source, namespace)
        elif meta.get("role") == "check":
            results[meta["exercise"]] = _run_check_call(source, meta["exercise"], namespace)
    return results, capsys.readouterr()


def _run_check_call(source, name, namespace):
    """The value of the cell's ``ttqlab.exercises.check_NAME(...)`` call, run alone (the
    rest of a check cell may use the notebook's other variables)."""
    for statement in ast.parse(source).body:
        value = getattr(statement, "value", None)
        if isinstance(value, ast.Call) and ast.unparse(value.func).endswith(f"check_{name}"):
            return eval(ast.unparse(value), namespace)
    raise AssertionError(f"no ttqlab.exercises.check_{name}(...) call in:\n{source}")


def test_the_committed_exercises_are_unsolved_and_say_so(capsys):
    make, notebooks = _notebook_exercises()
    for path, nb in notebooks:
        results, out = _exec_exercise_cells(nb, capsys)
        assert results == {name: False for name in make.exercises(nb)}, path.name
        assert out.out.count("is not implemented yet") == len(results) and out.err == ""


def test_the_solved_notebooks_pass_every_check(capsys):
    make, notebooks = _notebook_exercises()
    for path, nb in notebooks:
        results, out = _exec_exercise_cells(make.solve(nb), capsys)
        assert all(results.values()) and len(results) == len(make.exercises(nb)), \
            f"{path.name}: {out.out}"
        assert out.out.count("✓ check_") == len(results)


def test_nbgrader_source_notebooks(capsys):
    """What ``make_solved.py --nbgrader`` writes, and what nbgrader's generate_assignment
    makes of it (checked with nbgrader 0.9: the solution region becomes ``# YOUR CODE
    HERE`` / ``raise NotImplementedError()``, at the same indentation)."""
    make, notebooks = _notebook_exercises()
    clear = re.compile(r"( *)### BEGIN SOLUTION\n.*?### END SOLUTION", re.S)
    for _, nb in notebooks:
        source = make.solve(nb, nbgrader=True)
        for name in make.exercises(source):
            cells = {c["metadata"]["ttqlab"]["role"]: c for c in source["cells"]
                     if c["metadata"].get("ttqlab", {}).get("exercise") == name}
            answer, test = cells["stub"], cells["check"]
            assert answer["metadata"]["nbgrader"]["solution"] is True
            assert test["metadata"]["nbgrader"] == {
                "grade": True, "grade_id": f"{name}-check", "locked": True, "points": 1,
                "schema_version": 3, "solution": False, "task": False}
            call = f"ttqlab.exercises.check_{name}({name})"
            assert test["source"] == f"assert {call}" or re.fullmatch(
                rf"(\w+) = {re.escape(call)}\nassert \1", test["source"]), test["source"]
            assert f"def {name}(" in answer["source"] and "### END SOLUTION" in answer["source"]
            namespace = {}
            exec("import torch\nimport ttqlab", namespace)
            exec(answer["source"], namespace)              # the instructor's version passes
            exec(test["source"], namespace)
            released = clear.sub(r"\1# YOUR CODE HERE\n\1raise NotImplementedError()",
                                 answer["source"])
            assert f"def {name}(" in released and "BEGIN" not in released
            exec(released, namespace)                       # the student's fails politely
            with pytest.raises(AssertionError):
                exec(test["source"], namespace)
    assert "is not implemented yet" in capsys.readouterr().out


@pytest.mark.slow  # grades every solution in a subprocess
def test_grading_script_writes_a_csv(tmp_path):
    make, notebooks = _notebook_exercises()
    nb = notebooks[0][1]
    solved = tmp_path / "alice.ipynb"
    solved.write_text(json.dumps(make.solve(nb)))
    (tmp_path / "carol.py").write_text("def twn_threshold(w, factor=0.7):\n"
                                       "    return factor * w.abs().max()\n\n\n"
                                       "def twn_scale(w, delta):\n"
                                       "    kept = w.abs()[w.abs() > delta]\n"
                                       "    return kept.sum() / max(kept.numel(), 1)\n")
    csv = tmp_path / "grades.csv"
    done = subprocess.run([sys.executable, str(SOLUTIONS_DIR / "grade.py"), str(solved),
                           str(tmp_path / "carol.py"), "--csv", str(csv)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "== carol.py" in done.stdout
    assert "Hint: " + E.HINTS["twn_threshold"]["max"] in done.stdout
    assert csv.read_text().splitlines() == [
        "submission,twn_threshold,twn_scale,optimal_ternary,passed",
        "alice.ipynb,1,1,1,3",
        "carol.py,0,1,0,1",
    ]


# --------------------------------------------------------------------------- delegation


def _via_helper(w, delta):
    return _helper_that_delegates(w, delta)


def _helper_that_delegates(w, delta):
    from ttqlab.quantizers import twn_scale
    return twn_scale(w, delta)


class _DelegatingSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, q):
        import ttqlab
        return ttqlab.quantizers.ste(w, q).detach()

    @staticmethod
    def backward(ctx, g):
        return g, None


DELEGATING = [
    ("twn_scale", lambda w, delta: __import__("ttqlab").quantizers.twn_scale(w, delta),
     "ttqlab.quantizers.twn_scale"),
    ("twn_scale", _via_helper, "ttqlab.quantizers.twn_scale"),
    ("twn_scale", lambda w, delta: E.TWN_SCALE.reference(w, delta), "reference answer"),
    ("twn_threshold", lambda w, factor=0.7: E.check_twn_scale.__globals__["TWN_THRESHOLD"]
     .reference(w, factor), "reference answer"),
    ("optimal_ternary", lambda w: __import__("ttqlab").quantizers.ternarize_optimal(w),
     "ttqlab.quantizers.ternarize_optimal"),
    ("ste", _DelegatingSTE.apply, "ttqlab.quantizers.ste"),
    ("pack_2bit", lambda codes: __import__("ttqlab").packing.pack(codes, "2bit"),
     "ttqlab.packing.pack"),
    ("payload_bytes", lambda model, packing: __import__("ttqlab").export.save(
        model, "unused.ttq.safetensors", packing), "ttqlab.export.save"),
    ("payload_bytes", lambda model, packing: sum(
        __import__("ttqlab").export.pack(model, packing)[0][k].numel() for k in ["x"]),
     "ttqlab.export.pack"),
    ("payload_bytes", lambda model, packing: int(__import__("ttqlab").layer_report(
        model, packing).rows[-1]["bytes"]), "ttqlab.layer_report"),
    ("pow2_levels", lambda w, bits: __import__("ttqlab").quantizers.pow2_levels(w, bits),
     "ttqlab.quantizers.pow2_levels"),
]


@pytest.mark.parametrize(("name", "fn", "named"), DELEGATING,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(DELEGATING)])
def test_delegating_to_ttqlab_is_refused(name, fn, named, capsys):
    import ttqlab
    from ttqlab import packing
    from ttqlab import quantizers as Q

    originals = (Q.twn_scale, Q.ste, packing.pack, ttqlab.fit, E.TWN_SCALE.reference)
    ok, out = run(CHECKS[name], fn, capsys)
    assert ok is False
    assert "ttqlab's own answer" in out and "write it yourself" in out and named in out, out
    # everything is put back, and the next honest solution passes
    assert (Q.twn_scale, Q.ste, packing.pack, ttqlab.fit, E.TWN_SCALE.reference) == originals
    assert run(CHECKS[name], getattr(S, name), capsys)[0] is True


def test_a_function_imported_from_ttqlab_by_name_is_recognised(capsys):
    from ttqlab.quantizers import ternarize_optimal as my_answer

    ok, out = run(E.check_optimal_ternary, my_answer, capsys)
    assert ok is False and "ttqlab.quantizers.ternarize_optimal" in out, out


def test_payload_bytes_lets_the_student_walk_the_model(capsys):
    """The check hides ttqlab.export (and packing, stats), not the helpers the task names:
    ttqlab.quantized_layers and the model's own modules work; the model passed is a copy."""
    ok, out = run(E.check_payload_bytes, _payload_by_modules, capsys)
    assert ok is True, out

    def rewrites_the_model(model, packing):
        __import__("ttqlab").unquantize(model)
        return 0

    ok, out = run(E.check_payload_bytes, rewrites_the_model, capsys)   # the file of the
    assert ok is False and "expected 356 bytes, got 0" in out, out     # quantized model


def test_payload_bytes_verdict_names_the_model_and_the_packing(capsys):
    _, out = run(E.check_payload_bytes, WRONG["payload_bytes"]["no_scales"], capsys)
    assert out.splitlines()[:2] == [
        "✗ check_payload_bytes: case 1 of 6, 'an MLP 3-7-9-10 with BatchNorm, all 3 layers "
        "ternary (21, 63, 90 weights), base3' (model=a Sequential, packing='base3')",
        "  expected 356 bytes, got 332 (-24)"]
    _, out = run(E.check_payload_bytes, lambda model, packing: 356.5, capsys)
    assert "return the number of bytes as an int" in out, out


# --------------------------------------------------------------------------- reasoning


def _laplace_by_hand():
    """Δ*/E|W| for Laplace weights by a crude numerical search, independent of ttqlab."""
    delta = np.linspace(0.01, 5, 50_000)
    return float(delta[np.argmax((delta + 1) ** 2 * np.exp(-delta))])


def test_laplace_threshold_right_answer_passes_and_mistakes_are_named(capsys):
    ok, out = run(E.check_laplace_threshold, _laplace_by_hand(), capsys)
    assert ok is True and out.startswith("✓ check_laplace_threshold"), out
    for wrong, says in [(0.7, "rule of thumb"), (0.767, "Gaussian"), (math.log(2), "median")]:
        ok, out = run(E.check_laplace_threshold, wrong, capsys)
        assert ok is False and says in out, out
    ok, out = run(E.check_laplace_threshold, 3.0, capsys)
    assert ok is False and "Hint" not in out and "not it" in out, out


def _inq_zeros_by_hand(w, bits=2):
    """INQ's 2-bit sparsity from the paper's rule, written out independently."""
    s = float(w.abs().max())
    n1 = math.floor(math.log2(4 * s / 3))
    n2 = n1 + 1 - 2 ** (bits - 1) // 2
    return float((w.abs() < 2.0 ** (n2 - 1)).double().mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inq_sparsity_prediction(seed, capsys):
    w = torch.randn(40, 30, generator=torch.Generator().manual_seed(seed)) * 0.1
    right = _inq_zeros_by_hand(w)
    assert run(lambda a: E.check_inq_sparsity(a, w), right, capsys)[0] is True
    ok, out = run(lambda a: E.check_inq_sparsity(a, w), 0.0, capsys)
    assert ok is False and "one magnitude, 2^n1" in out, out
    ok, out = run(lambda a: E.check_inq_sparsity(a, w), 1 - right, capsys)
    assert ok is False and "non-zero" in out, out
    ok, out = run(lambda a: E.check_inq_sparsity(a, w), 100 * right, capsys)
    assert ok is False and "between 0 and 1" in out, out
    ok, out = run(lambda a: E.check_inq_sparsity(a, w), "0.9", capsys)
    assert ok is False and "answer with a fraction" in out, out


def test_inq_sparsity_default_layer(capsys):
    right = _inq_zeros_by_hand(E.inq_sparsity_layer())
    assert run(E.check_inq_sparsity, right, capsys)[0] is True
    assert run(E.check_inq_sparsity, torch.tensor(right), capsys)[0] is True
    assert run(E.check_inq_sparsity, True, capsys)[0] is False


def test_the_worked_reasoning_answers_pass(capsys):
    assert set(E.REASONING) == {"inq_sparsity", "laplace_threshold"}
    assert run(E.check_laplace_threshold, S.laplace_threshold_ratio(), capsys)[0] is True
    w = E.inq_sparsity_layer()
    assert run(E.check_inq_sparsity, S.inq_sparsity(w), capsys)[0] is True
    w4 = torch.randn(300, generator=torch.Generator().manual_seed(7))
    assert run(lambda a: E.check_inq_sparsity(a, w4, bits=4), S.inq_sparsity(w4, 4),
               capsys)[0] is True


def test_a_reasoning_check_without_an_answer_says_what_to_do(capsys):
    for check in (E.check_laplace_threshold, E.check_inq_sparsity):
        ok, out = run(check, None, capsys)
        assert ok is False and "no answer yet" in out and "Replace None" in out, out
        assert "forget" not in out and "Traceback" not in out


def _reasoning_cells(nb):
    """{exercise: (answer cell source, check cell source)} of a notebook."""
    cells = {}
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("ttqlab", {})
        if meta.get("role") in ("answer", "answer-check"):
            cells.setdefault(meta["exercise"], {})[meta["role"]] = "".join(cell["source"])
    return {name: (c["answer"], c["answer-check"]) for name, c in cells.items()}


def test_reasoning_exercises_sit_in_their_notebooks_and_run_unattended(capsys):
    make, notebooks = _notebook_exercises()
    where = {path.stem: set(_reasoning_cells(nb)) for path, nb in notebooks}
    assert "laplace_threshold" in where["01_why_ternary"]
    assert "inq_sparsity" in where["05_inq"]
    assert set().union(*where.values()) == set(E.REASONING)
    layer = torch.randn(64, 32, 5, 5, generator=torch.Generator().manual_seed(3)) * 0.05
    for path, nb in notebooks:
        for solved in (False, True):
            cells = _reasoning_cells(make.solve(nb) if solved else nb)
            for name, (answer, check) in cells.items():
                namespace = {"w": layer}  # the notebook's layer (notebook 5: conv2's weight)
                exec("import math\nimport torch\nimport ttqlab\n" + answer, namespace)
                exec(check, namespace)
                out = capsys.readouterr().out
                passed = [v for k, v in namespace.items() if k.startswith("passed_")]
                assert passed == [solved], f"{path.name} {name}: {out}"
                assert ("✓ check_" in out) if solved else ("no answer yet" in out), out


# --------------------------------------------------------------------------- time limit


def _forever(w, factor=0.7):
    while True:
        try:
            pass
        except Exception:  # a student's broad except cannot swallow the time limit
            pass


@pytest.mark.skipif(not hasattr(__import__("signal"), "setitimer"), reason="needs SIGALRM")
def test_a_function_that_never_returns_is_stopped_within_the_limit(capsys, monkeypatch):
    import time

    import ttqlab
    from ttqlab import checking

    monkeypatch.setattr(checking, "TIME_LIMIT", 0.5)
    before = {name: getattr(ttqlab.quantizers, name) for name in vars(ttqlab.quantizers)}
    start = time.monotonic()
    ok, out = run(E.check_twn_threshold, _forever, capsys)
    took = time.monotonic() - start
    first = E.twn.TWN_THRESHOLD.cases()[0].name
    assert ok is False and took < 5, (took, out)
    assert f"your function did not return within 0.5 s on case '{first}'" in out, out
    assert {n: getattr(ttqlab.quantizers, n) for n in before} == before, "hidden ones restored"
    assert not isinstance(ttqlab.quantizers.twn_threshold, checking._Forbidden)
    ok, out = run(E.check_twn_threshold, S.twn_threshold, capsys)  # the kernel still works
    assert ok, out
    import signal

    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0), "no timer left running"
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL


def test_the_time_limit_is_per_check_and_off_outside_the_main_thread(capsys):
    import threading

    from ttqlab import checking

    assert checking.check(E.twn.TWN_THRESHOLD, S.twn_threshold, time_limit=10)
    results = []
    thread = threading.Thread(target=lambda: results.append(checking._can_time_out()))
    thread.start()
    thread.join()
    assert results == [False]  # there a check runs without a limit (documented)
    capsys.readouterr()
