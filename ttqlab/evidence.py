"""What several seeds can say: paired differences, a 95% interval, and a verdict.

Two methods trained on the same seeds give paired accuracies a_i, b_i; their per-seed
differences d_i = a_i - b_i share the seed's init, data order and luck, so their spread is
smaller than either method's. With n seeds, mean d̄ and sample standard deviation s
(n - 1 in the denominator), the 95% confidence interval of the mean difference is

    d̄ ± t_{0.975, n-1} * s / sqrt(n)          (Student's t, n - 1 degrees of freedom)

and a claim is judged by where that interval lies:

* "shows": the interval excludes zero in the claimed direction;
* "does not show": the interval excludes the claimed effect (see `verdict` for the margin);
* otherwise "not resolved with n seeds": more seeds would narrow the interval. Never
  "no difference": an interval that covers zero is not evidence of equality.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from .validation import check_choice, check_int, check_number

__all__ = ["CLAIMS", "Interval", "Observation", "observe", "paired_interval", "t_quantile",
           "verdict"]


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer ``df`` degrees of freedom, exactly
    (Abramowitz & Stegun 26.7.3 / 26.7.4: a finite sum of powers of cos(theta),
    theta = atan(t / sqrt(df)))."""
    theta = math.atan(t / math.sqrt(df))
    c2, term, total = math.cos(theta) ** 2, 1.0, 1.0
    if df % 2 == 1:  # 2/pi * (theta + sin cos (1 + 2/3 c2 + 2*4/(3*5) c2^2 + ...))
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        inner = math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0
        return 2 / math.pi * (theta + inner)
    for k in range(1, df // 2):  # sin (1 + 1/2 c2 + 1*3/(2*4) c2^2 + ...)
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (p in (0.5, 1)),
    e.g. ``t_quantile(0.975, 4) = 2.776``: the multiplier of a 95% interval from 5 seeds."""
    df = check_int("df", df, low=1, hint="the number of seeds minus one")
    p = check_number("p", p, low=0.5, high=1, low_open=True, high_open=True,
                     hint="e.g. 0.975 for a 95% interval")
    target, lo, hi = 2 * p - 1, 0.0, 1.0
    while _t_two_sided(hi, df) < target:
        hi *= 2
    for _ in range(200):  # bisection to float precision
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_two_sided(mid, df) < target else (lo, mid)
        if hi - lo <= 1e-12 * hi:
            break
    return (lo + hi) / 2


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` paired differences and its confidence interval [low, high]
    (NaN bounds with fewer than 2 seeds: one difference has no spread to measure)."""

    mean: float
    low: float
    high: float
    n: int
    std: float
    level: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:+.2f} (1 seed: no interval)"
        return (f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}] "
                f"({100 * self.level:g}% CI, {self.n} seeds)")

    def to_dict(self) -> dict:
        """JSON-ready: NaN bounds (one seed) become None."""
        def num(v):
            return None if math.isnan(v) else v
        return {"mean": self.mean, "low": num(self.low), "high": num(self.high),
                "n": self.n, "std": num(self.std), "level": self.level}


def paired_interval(a: Sequence[float], b: Sequence[float] | None = None, *,
                    level: float = 0.95) -> Interval:
    """The ``level`` confidence interval of the mean of ``a_i - b_i`` (or of ``a_i`` when
    ``b`` is None): mean ± t_{(1+level)/2, n-1} * std / sqrt(n)."""
    a = [float(v) for v in a]
    if b is not None:
        b = [float(v) for v in b]
        if len(a) != len(b):
            raise ValueError(f"paired values need the same seeds: got {len(a)} and "
                             f"{len(b)} values")
        a = [x - y for x, y in zip(a, b)]
    if not a:
        raise ValueError("no values: pass one difference per seed")
    level = check_number("level", level, low=0, high=1, low_open=True, high_open=True,
                         hint="e.g. 0.95 for a 95% interval")
    mean = statistics.mean(a)
    if len(a) < 2:
        return Interval(mean, math.nan, math.nan, 1, math.nan, level)
    std = statistics.stdev(a)
    half = t_quantile((1 + level) / 2, len(a) - 1) * std / math.sqrt(len(a))
    return Interval(mean, mean - half, mean + half, len(a), std, level)


#: the kinds of claim a paper makes about a difference d = (its method) - (the other)
CLAIMS = ("beats", "matches")


def verdict(interval: Interval, claim: str = "beats", *, margin: float) -> str:
    """``"shows"``, ``"does not show"`` or ``"not resolved with n seeds"`` for a claim
    about the difference d whose interval is given, in the same units as ``margin``.

    * ``"beats"`` (d > 0): shows when low > 0; does not show when high < margin (the data
      exclude a gain as large as the margin, e.g. one test image);
    * ``"matches"`` (no loss: d > -margin): shows when low > -margin; does not show when
      high < -margin (the loss is larger than the margin).
    """
    check_choice("claim", claim, CLAIMS)
    margin = check_number("margin", margin, low=0,
                          hint="e.g. one test image, 100 / n_test points")
    if interval.n < 2:
        return "not resolved with 1 seed"
    floor = 0.0 if claim == "beats" else -margin
    ceiling = margin if claim == "beats" else -margin
    if interval.low > floor:
        return "shows"
    if interval.high < ceiling:
        return "does not show"
    return f"not resolved with {interval.n} seeds"


@dataclass(frozen=True)
class Observation:
    """What an experiment observed about ``a - b``, ready to print after its output:
    the paired interval and the verdict on the claim "a {claim} b"."""

    names: tuple[str, str]
    claim: str
    margin: float
    interval: Interval
    verdict: str
    unit: str = "points"

    def __str__(self) -> str:
        a, b = self.names
        return (f"{a} − {b}: {self.interval} {self.unit}. Claim \"{a} {self.claim} {b}\" "
                f"(margin {self.margin:.2g} {self.unit}): {self.verdict}.")

    def to_dict(self) -> dict:
        return {"names": list(self.names), "claim": self.claim, "margin": self.margin,
                "interval": self.interval.to_dict(), "verdict": self.verdict, "unit": self.unit}


def observe(a: Sequence[float], b: Sequence[float], *, names: tuple[str, str] = ("A", "B"),
            claim: str = "beats", margin: float, unit: str = "points",
            level: float = 0.95) -> Observation:
    """The paired interval of ``a_i - b_i`` (one value per seed, same seeds in the same
    order) and `verdict` on the claim "``names[0]`` ``claim`` ``names[1]``", in one object
    whose ``str`` is the line a notebook prints under its experiment::

        print(evidence.observe(acc_twn, acc_binary, names=("TWN", "binary"), margin=0.1))
        # TWN − binary: +4.60 [+1.99, +7.21] (95% CI, 5 seeds) points. Claim "TWN beats
        # binary" (margin 0.1 points): shows.

    ``margin`` is in the units of ``a`` and ``b`` (e.g. one test image, ``100 / n_test``
    points, for "beats"; half a point for "matches").
    """
    if not (isinstance(names, tuple) and len(names) == 2
            and all(isinstance(n, str) for n in names)):
        raise ValueError(f"names must be two strings, e.g. ('TWN', 'binary'); got {names!r}")
    interval = paired_interval(a, b, level=level)
    result = verdict(interval, claim, margin=margin)  # checks claim and margin
    return Observation(names, claim, float(margin), interval, result, unit)
