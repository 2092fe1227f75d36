"""Checks of user input, in one place: each returns the value (normalised) or raises an error
that says what was passed and what to pass instead.

Every public function of ttqlab that takes a number, a flag, a choice, a path or a list of
seeds checks it with these, so one rule ("a bool is not a number", "2.0 is not an int", "NaN
is not positive", "'no' is not False") holds everywhere and every message reads the same: the
argument's name, what it must be, what was passed (its repr and type), then the caller's
``hint`` if it gave one (what the value means, a usual choice). Nothing here imports torch.

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
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["check_bool", "check_choice", "check_int", "check_number", "check_path",
           "check_seeds", "check_unit_interval", "is_int", "is_number"]


def is_int(value: Any) -> bool:
    """A whole number given as an int (numpy's too), not a bool and not a float such as 2.0."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite real number (int or float, numpy's too), not a bool; an int too large for a
    float (``10**400``) is not one."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


_SHOWN = 80  # characters of a passed value that a message shows


def _got(value: Any) -> str:
    """``value`` as a message shows it: its repr (cut to a line) and its type."""
    try:
        shown = repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        shown = object.__repr__(value)
    if len(shown) > _SHOWN:
        shown = shown[:_SHOWN - 3] + "..."
    return f"{shown} ({type(value).__name__})"


def _num(bound: float) -> str:
    """A bound as written: an int exactly (``2**40``, not ``1.09951e+12``), a float by ``g``."""
    return str(int(bound)) if is_int(bound) else f"{bound:g}"


def _bounds(low, high, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {_num(low)}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {_num(high)}")
    return " and ".join(parts)


def _then(hint: str) -> str:
    """The caller's advice after a message: ``"; e.g. 0.95"``, or nothing."""
    return f"; {hint}" if hint else ""


def check_bool(name: str, value: Any, *, error: type[Exception] = TypeError) -> bool:
    """``value`` is True or False (numpy's ``np.True_`` too), not 0, 1 or "yes": a flag
    given as the string "no" would otherwise count as true. ``error``: the exception class
    to raise (``ValueError`` where a caller has always raised that for a bad flag)."""
    if not isinstance(value, (bool, _np_bool())):
        raise error(f"{name} must be True or False, got {_got(value)}")
    return bool(value)


def _np_bool() -> type:
    """numpy's bool type if numpy is loaded (it is not imported here), else ``bool``."""
    np = sys.modules.get("numpy")
    return np.bool_ if np is not None else bool


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None,
              none_ok: bool = False, hint: str = "") -> int | None:
    """``value`` as an int in ``[low, high]`` (either bound may be None); None passes only
    with ``none_ok``. ``hint`` (what the value means, a usual choice) ends the message."""
    if value is None and none_ok:
        return None
    ok = is_int(value) and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        bounds = _bounds(low, high, False, False)
        raise ValueError(f"{name} must be a whole number (an int such as 5)"
                         f"{' ' + bounds if bounds else ''}{', or None' if none_ok else ''}, "
                         f"got {_got(value)}{_then(hint)}")
    return int(value)


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False,
                 none_ok: bool = False, hint: str = "") -> float | None:
    """``value`` as a finite float in the interval given by ``low`` / ``high`` (closed unless
    ``low_open`` / ``high_open``); None passes only with ``none_ok``. ``hint`` ends the
    message."""
    if value is None and none_ok:
        return None
    ok = is_number(value)
    if ok:
        v = float(value)
        ok = ((low is None or (v > low if low_open else v >= low))
              and (high is None or (v < high if high_open else v <= high)))
    if not ok:
        bounds = _bounds(low, high, low_open, high_open)
        raise ValueError(f"{name} must be a finite number{' ' + bounds if bounds else ''}"
                         f"{', or None' if none_ok else ''}, got {_got(value)}{_then(hint)}")
    return float(value)


def check_unit_interval(name: str, value: Any) -> float:
    """``value`` strictly between 0 and 1 (a threshold fraction, a target sparsity)."""
    return check_number(name, value, low=0.0, high=1.0, low_open=True, high_open=True)


def check_choice(name: str, value: Any, choices: Iterable, *, hint: str = "") -> Any:
    """``value`` is one of ``choices`` (True is not taken for a choice 1, nor an array or a
    tensor compared element by element); ``hint`` (what the choices mean) ends the
    message."""
    choices = tuple(choices)
    try:
        ok = any(value is c or (type(value) is not bool and type(c) is not bool
                                and bool(value == c)) for c in choices)
    except Exception:  # an array's ambiguous truth value, a tensor's, an odd __eq__
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; "
                         f"got {_got(value)}{_then(hint)}")
    return value


def check_path(name: str, value: Any, *, none_ok: bool = False) -> Path | None:
    """``value`` (a ``str`` or an ``os.PathLike`` such as ``pathlib.Path``) as a ``Path``;
    None passes only with ``none_ok``. The empty string is refused: ``Path("")`` is the
    current folder, which nobody means by it. TypeError for what is not a path at all."""
    if value is None and none_ok:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (a str or a pathlib.Path such as "
                        f"Path('runs/a')){', or None' if none_ok else ''}, got {_got(value)}")
    path = Path(value)
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"{name} must be a path such as 'runs/a', got the empty name "
                         f"{value!r}; pass '.' for the current folder")
    return path


def check_seeds(seeds: Iterable[int], name: str = "seeds") -> list[int]:
    """``seeds`` as a list of distinct ints >= 0 (at least one)."""
    if is_int(seeds):
        raise ValueError(f"{name} must be a list of seeds such as [0, 1, 2], got the int "
                         f"{seeds}; for N seeds pass list(range(N))")
    if isinstance(seeds, (str, bytes)):
        raise ValueError(f"{name} must be a list of ints such as [0, 1, 2], got "
                         f"{_got(seeds)}")
    try:
        seeds = list(seeds)
    except TypeError:
        raise ValueError(f"{name} must be a list of ints such as [0, 1, 2], got "
                         f"{_got(seeds)}") from None
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
