"""Checks of user input, in one place: each returns the value (normalised) or raises an error
that says what was passed and what to pass instead.

Every public function of ttqlab that takes a number, a flag, a choice or a list of seeds checks
it with these, so one rule ("a bool is not a number", "2.0 is not an int", "NaN is not
positive") holds everywhere and every message reads the same. Nothing here imports torch.

    >>> check_int("epochs", 5, low=1)
    5
    >>> check_number("lr", 1e-3, low=0, low_open=True)
    0.001
    >>> check_int("epochs", True, low=1)
    Traceback (most recent call last):
    ...
    ValueError: epochs must be a whole number (an int such as 5) >= 1, got True (bool)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["check_bool", "check_choice", "check_int", "check_number", "check_seeds",
           "check_unit_interval", "is_int", "is_number"]


def is_int(value: Any) -> bool:
    """A whole number given as an int (numpy's too), not a bool and not a float such as 2.0."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite real number (int or float, numpy's too), not a bool."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(float(value)))


def _got(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _bounds(low, high, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def check_bool(name: str, value: Any) -> bool:
    """``value`` is True or False (not 0, 1 or "yes")."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {_got(value)}")
    return value


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None,
              none_ok: bool = False) -> int | None:
    """``value`` as an int in ``[low, high]`` (either bound may be None); None passes only
    with ``none_ok``."""
    if value is None and none_ok:
        return None
    ok = is_int(value) and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        bounds = _bounds(low, high, False, False)
        raise ValueError(f"{name} must be a whole number (an int such as 5)"
                         f"{' ' + bounds if bounds else ''}, got {_got(value)}")
    return int(value)


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False,
                 none_ok: bool = False) -> float | None:
    """``value`` as a finite float in the interval given by ``low`` / ``high`` (closed unless
    ``low_open`` / ``high_open``); None passes only with ``none_ok``."""
    if value is None and none_ok:
        return None
    ok = is_number(value)
    if ok:
        v = float(value)
        ok = ((low is None or (v > low if low_open else v >= low))
              and (high is None or (v < high if high_open else v <= high)))
    if not ok:
        bounds = _bounds(low, high, low_open, high_open)
        raise ValueError(f"{name} must be a finite number{' ' + bounds if bounds else ''}, "
                         f"got {_got(value)}")
    return float(value)


def check_unit_interval(name: str, value: Any) -> float:
    """``value`` strictly between 0 and 1 (a threshold fraction, a target sparsity)."""
    return check_number(name, value, low=0.0, high=1.0, low_open=True, high_open=True)


def check_choice(name: str, value: Any, choices: Sequence) -> Any:
    """``value`` is one of ``choices``."""
    try:
        ok = value in choices and not (isinstance(value, bool) and not any(
            isinstance(c, bool) for c in choices))
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; "
                         f"got {value!r}")
    return value


def check_seeds(seeds: Iterable[int], name: str = "seeds") -> list[int]:
    """``seeds`` as a list of distinct ints >= 0 (at least one)."""
    if is_int(seeds):
        raise ValueError(f"{name} must be a list of seeds such as [0, 1, 2], got the int "
                         f"{seeds}; for N seeds pass list(range(N))")
    try:
        seeds = list(seeds)
    except TypeError:
        raise ValueError(f"{name} must be a list of ints such as [0, 1, 2], got {seeds!r}") \
            from None
    if not seeds:
        raise ValueError(f"{name} is empty; pass at least one seed, e.g. {name}=[0, 1, 2]")
    bad = [s for s in seeds if not is_int(s) or s < 0]
    if bad:
        raise ValueError(f"{name} must be ints >= 0, got {bad}; e.g. {name}=[0, 1, 2]")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"{name} {repeated} are repeated; a repeated seed repeats the same "
                         f"run and understates the spread: pass distinct seeds")
    return [int(s) for s in seeds]
