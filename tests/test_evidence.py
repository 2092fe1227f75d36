"""ttqlab.evidence: Student's t quantiles, paired intervals and the three verdicts."""

import math
import statistics

import pytest

from ttqlab import evidence
from ttqlab.evidence import Interval, paired_interval, t_quantile, verdict

# two-sided 95% multipliers from a printed t table (df: t_{0.975, df})
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 19: 2.093,
           29: 2.045, 120: 1.980}


@pytest.mark.parametrize("df, expected", sorted(T_TABLE.items()))
def test_t_quantile_matches_the_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)


def test_t_quantile_matches_scipy_everywhere():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 6, 7, 15, 40):
        for p in (0.6, 0.9, 0.95, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


def test_t_quantile_tends_to_the_normal():
    assert t_quantile(0.975, 10_000) == pytest.approx(1.95996, abs=1e-3)
    assert t_quantile(0.975, 2) > t_quantile(0.975, 5) > t_quantile(0.975, 50)


@pytest.mark.parametrize("p, df, says", [
    (0.5, 3, r"p must be a finite number > 0.5 and < 1, got 0.5 \(float\); e.g. 0.975 for"),
    (1.0, 3, r"p must be a finite number > 0.5 and < 1, got 1.0"),
    (True, 3, r"p must be .*, got True \(bool\)"),
    ("0.975", 3, r"p must be .*, got '0.975' \(str\)"),
    (0.975, 0, r"df must be a whole number .*>= 1, got 0 \(int\); the number of seeds minus"),
    (0.975, 2.5, r"df must be .*, got 2.5 \(float\)"),
    (0.975, True, r"df must be .*, got True \(bool\)"),
])
def test_t_quantile_refuses_bad_input(p, df, says):
    with pytest.raises(ValueError, match=says):
        t_quantile(p, df)


def test_paired_interval_by_hand():
    a, b = [90.0, 91.5, 89.0, 92.0, 90.5], [88.0, 90.0, 88.5, 89.0, 89.5]
    d = [x - y for x, y in zip(a, b)]
    iv = paired_interval(a, b)
    half = 2.7764451 * statistics.stdev(d) / math.sqrt(5)
    assert iv.mean == pytest.approx(statistics.mean(d))
    assert iv.low == pytest.approx(iv.mean - half) and iv.high == pytest.approx(iv.mean + half)
    assert iv.n == 5 and iv.std == pytest.approx(statistics.stdev(d))
    assert paired_interval(d).to_dict() == pytest.approx(iv.to_dict())
    assert "95% CI, 5 seeds" in str(iv)


def test_pairing_removes_the_shared_seed_effect():
    # the seeds differ by a lot, the methods by a constant: pairing sees only the constant
    base = [70.0, 80.0, 90.0, 75.0]
    better = [x + 1.0 for x in base]
    iv = paired_interval(better, base)
    assert iv.mean == pytest.approx(1.0) and iv.half_width == pytest.approx(0.0, abs=1e-9)
    assert verdict(iv, "beats", margin=0.1) == "shows"


def test_one_seed_has_no_interval_and_no_verdict():
    iv = paired_interval([1.0], [0.0])
    assert math.isnan(iv.low) and math.isnan(iv.high) and iv.n == 1
    assert iv.to_dict()["low"] is None and "no interval" in str(iv)
    assert verdict(iv, "beats", margin=0.1) == "not resolved with 1 seed"


def test_paired_interval_refuses_unpaired_or_empty():
    with pytest.raises(ValueError, match="same seeds"):
        paired_interval([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="no values"):
        paired_interval([])
    for level in (95, 0, 1.0, True, math.nan):
        with pytest.raises(ValueError, match=r"level must be a finite number > 0 and < 1, got "
                                             r".*; e.g. 0.95 for a 95% interval"):
            paired_interval([1, 2], level=level)


def _iv(low, high, n=5):
    return Interval((low + high) / 2, low, high, n, 1.0)


@pytest.mark.parametrize("low, high, expected", [
    (0.5, 3.0, "shows"),                      # excludes zero, in the claimed direction
    (-3.0, -0.5, "does not show"),            # the other way round
    (-0.05, 0.05, "does not show"),           # excludes a gain as large as the margin
    (-1.0, 2.0, "not resolved with 5 seeds"), # covers zero and the margin: say so
])
def test_beats(low, high, expected):
    assert verdict(_iv(low, high), "beats", margin=0.1) == expected


@pytest.mark.parametrize("low, high, expected", [
    (-0.3, 0.4, "shows"),                      # any loss is smaller than the margin
    (-2.0, -0.8, "does not show"),             # the loss is larger than the margin
    (-1.5, 0.2, "not resolved with 5 seeds"),
])
def test_matches(low, high, expected):
    assert verdict(_iv(low, high), "matches", margin=0.5) == expected


def test_verdict_refuses_unknown_claims_and_margins():
    with pytest.raises(ValueError, match=r"claim must be one of 'beats', 'matches'; got "
                                         r"'equals' \(str\)"):
        verdict(_iv(0, 1), "equals", margin=0.1)
    for margin in (-1, math.nan, True, "0.1", None):
        with pytest.raises(ValueError, match=r"margin must be a finite number >= 0, got .*; "
                                             r"e.g. one test image"):
            verdict(_iv(0, 1), "beats", margin=margin)
        with pytest.raises(ValueError, match=r"margin must be"):  # not a float() error
            evidence.observe([1, 2], [0, 1], margin=margin)


def test_observe_prints_the_difference_its_interval_and_the_verdict():
    a, b = [90.0, 91.0, 92.0, 90.5, 91.5], [88.0, 88.5, 90.0, 88.5, 89.0]
    obs = evidence.observe(a, b, names=("TWN", "binary"), margin=0.1)
    assert obs.interval == evidence.paired_interval(a, b)
    assert obs.verdict == "shows"
    line = str(obs)
    assert line.startswith("TWN − binary: +2.20 [") and line.endswith("shows.")
    assert '"TWN beats binary"' in line and "5 seeds" in line
    assert evidence.observe(b, a, names=("binary", "TWN"), margin=0.1).verdict == \
        "does not show"
    close = evidence.observe([1.0, 2.0], [2.0, 1.0], names=("x", "y"), claim="matches",
                             margin=0.5)
    assert close.verdict == "not resolved with 2 seeds"
    assert close.to_dict()["interval"]["n"] == 2


def test_observe_refuses_bad_names_and_unpaired_values():
    with pytest.raises(ValueError, match="two strings"):
        evidence.observe([1, 2], [1, 2], names="TWN", margin=0.1)
    with pytest.raises(ValueError, match="same seeds"):
        evidence.observe([1, 2], [1], margin=0.1)
