"""How a coursework check runs: call a student's function on cases, judge what comes back,
and name the likely mistake. The exercises themselves live in ``ttqlab.exercises``; this
module is what they share, and what an instructor uses to write a check of their own::

    from ttqlab.checking import Case, Exercise, check, judge_tensor

    SQUARE = Exercise(name="square", signature="square(x)",
                      cases=lambda: [Case("zero", (torch.tensor(0.0),)),
                                     Case("negative", (torch.tensor(-3.0),))],
                      reference=lambda x: x * x, judge=judge_tensor(),
                      mistakes={"double": (lambda x: 2 * x, "x² is x·x, not 2x.")})
    check(SQUARE, student_square)        # prints a verdict, returns True / False

A check never raises because of the student's function: an exception, a wrong type,
shape or dtype, NaN, a wrong signature or a changed input all become a short verdict on
stdout. Known mistakes are recognised by running each wrong variant of ``mistakes`` on
the failing case and matching the student's result against it.

Each call of the student's function is bounded by `TIME_LIMIT` seconds (``check(...,
time_limit=...)`` for one check): a function that never returns becomes the verdict "your
function did not return within 10 s on case '...'", ttqlab's hidden functions are restored and
the kernel stays usable. The limit uses ``signal.setitimer`` (SIGALRM), so it holds on Unix in
the main thread (where Jupyter runs a cell); on Windows, or in another thread, a check runs
without a limit (interrupt the kernel to stop it). Python code is interrupted between two
bytecodes; one long torch operation is only interrupted once it returns.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import math
import signal
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["Case", "Exercise", "Fail", "as_tensor", "check", "check_number", "fmt",
           "judge_tensor", "judge_tuple", "kind_of", "one_number", "shape_of", "show",
           "tensor_problem"]


@dataclass(frozen=True)
class Case:
    """One call of the student's function: ``fn(*args, **kwargs)``. ``given`` holds data
    the check needs besides the arguments (e.g. the incoming gradient of the STE)."""

    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    given: dict = field(default_factory=dict)


class Fail(NamedTuple):
    """What is wrong with a result; ``part`` indexes the wrong element of a tuple result."""

    message: str
    part: int | None = None


#: seconds a student's function may take on one case before the check gives up on it
TIME_LIMIT = 10.0


class _TimedOut(BaseException):
    """The student's function ran past the time limit. A BaseException, so that the student's
    own ``except Exception:`` around a loop cannot swallow it."""


def _can_time_out() -> bool:
    """Whether SIGALRM can bound a call here (Unix, main thread)."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _time_limit(seconds: float | None):
    """Raise `_TimedOut` in the block after ``seconds`` (None or <= 0: no limit; a no-op
    where `_can_time_out` is False). An earlier SIGALRM handler and timer are put back."""
    if not seconds or seconds <= 0 or not _can_time_out():
        yield
        return

    armed = [True]

    def expire(signum, frame):
        if armed[0]:  # not once the block is over (a signal that arrived as it ended)
            raise _TimedOut

    previous = signal.signal(signal.SIGALRM, expire)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:  # someone else's timer was running: re-arm what is left of it
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - started), 1e-3))


def _call(fn: Callable, case: Case, args: tuple, kwargs: dict) -> Any:
    return fn(*args, **kwargs)


def _identity(obs: Any, case: Case) -> Any:
    return obs


@dataclass(frozen=True)
class Exercise:
    """A fill-in function and how to check it.

    * ``name``, ``signature``: the student's function, e.g. ``"twn_scale(w, delta)"``.
    * ``cases()``: the :class:`Case` list, fixed edge cases first, then seeded random ones.
    * ``reference``: the right answer; ``judge(expected, got, case)`` returns a
      :class:`Fail` or None (``judge_tensor()`` compares tensors).
    * ``mistakes``: ``{id: (wrong variant, hint)}``, the catalogue of known mistakes.
    * ``observe(fn, case, args, kwargs)``: how a function is run (default
      ``fn(*args, **kwargs)``; the STE check also back-propagates).
    * ``key(result, case)``: what of a result must equal a wrong variant's for its hint.
    * ``answers``: the modules whose functions the student's function may not call
      (e.g. ``("ttqlab.export",)``, with whatever the ``ttqlab`` package re-exports from
      them); None: every module that computes an exercise's answer (quantizers, methods,
      packing, ...).
    """

    name: str
    signature: str
    cases: Callable[[], list[Case]]
    reference: Callable
    judge: Callable[[Any, Any, Case], Fail | None]
    mistakes: dict[str, tuple[Callable, str]]
    observe: Callable[[Callable, Case, tuple, dict], Any] = _call
    key: Callable[[Any, Case], Any] = _identity  # what to compare with a wrong variant
    answers: tuple[str, ...] | None = None  # modules the student may not call

    def __post_init__(self) -> None:
        _EXERCISES[id(self)] = self  # so that a check can hide every reference answer

    @property
    def params(self) -> list[str]:
        inner = self.signature[self.signature.index("(") + 1 : -1]
        return [p.split("=")[0].strip() for p in inner.split(",")]


_EXERCISES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


class _Mutated(Exception):
    """The student's function changed one of its inputs in place."""


class _Delegated(Exception):
    """The student's function called ttqlab's own answer."""


class _Forbidden:
    """Stands in for a ttqlab function (or an exercise's reference) while the student's
    function runs: calling it, or reaching into it, raises ``_Delegated``."""

    def __init__(self, name: str):
        self._name = name

    def __call__(self, *args, **kwargs):
        raise _Delegated(_outermost_library_call() or self._name)

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise _Delegated(f"{self._name}.{attr}")


def _outermost_library_call() -> str | None:
    """``module.function`` of the ttqlab function the student's code called (the outermost
    library frame above this one), or None when the student called a stand-in directly."""
    frame, outer = sys._getframe(2), None
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(_LIBRARY) and not path.startswith(_CHECKS):
            outer = frame
        elif "site-packages" in path or path.startswith(_TORCH):
            pass  # torch between two library frames (autograd.Function.apply)
        elif outer is not None or path.startswith(_CHECKS):
            break
        frame = frame.f_back
    if outer is None:
        return None
    name = getattr(outer.f_code, "co_qualname", outer.f_code.co_name)
    return f"{outer.f_globals.get('__name__', 'ttqlab')}.{name}"


#: modules whose functions a student's function may not call (ttqlab has the answers)
_ANSWER_MODULES = ("ttqlab", "ttqlab.quantizers", "ttqlab.layers", "ttqlab.convert",
                   "ttqlab.inq", "ttqlab.packing", "ttqlab.ternary_matmul", "ttqlab.methods")


def _answer_functions(answers: tuple[str, ...] | None = None) -> list[tuple[Any, str, str]]:
    """(owner, attribute, public name) of every ttqlab function or class that could
    compute an exercise's answer, in the modules imported so far; with ``answers``, those
    of these modules only (and the ``ttqlab`` package's names for them)."""
    found = []
    for modname, module in list(sys.modules.items()):
        if module is None:
            continue
        if answers is None:
            if not (modname in _ANSWER_MODULES or modname.startswith("ttqlab.methods.")):
                continue
        elif modname not in answers and modname != "ttqlab":
            continue
        for attr, obj in list(vars(module).items()):
            if attr.startswith("__"):
                continue
            home = getattr(obj, "__module__", None) or ""
            if answers is not None and modname not in answers and home not in answers:
                continue  # a re-export in ``ttqlab`` of a function the student may call
            if (callable(obj) and not isinstance(obj, type(sys)) and home.startswith("ttqlab")
                    and not home.startswith(("ttqlab.exercises", "ttqlab.checking"))):
                found.append((module, attr, f"{modname}.{attr}"))
    return found


def _names_library_answer(fn: Any, depth: int = 3, seen: set | None = None,
                          answers: tuple[str, ...] | None = None) -> str | None:
    """The ttqlab function that ``fn``'s code refers to by a global name or a closure
    (``from ttqlab.quantizers import twn_scale`` then ``twn_scale(w, d)``), following the
    student's own helper functions a few levels deep; None if there is none."""
    seen = set() if seen is None else seen
    code = getattr(fn, "__code__", None)
    if code is None or id(fn) in seen or depth < 0:
        return None
    seen.add(id(fn))
    known = {id(obj): name for owner, attr, name in _answer_functions(answers)
             for obj in [vars(owner)[attr]]}
    known.update({id(ex.reference): f"the exercise's reference answer ({ex.name})"
                  for ex in _EXERCISES.values()})
    if id(fn) in known:
        return known[id(fn)]
    refs = [fn.__globals__.get(n) for n in _all_names(code)]
    refs += [c.cell_contents for c in (fn.__closure__ or ()) if _filled(c)]
    for obj in refs:
        if id(obj) in known:
            return known[id(obj)]
    for obj in refs:
        home = getattr(obj, "__module__", "") or ""
        if inspect.isfunction(obj) and not home.startswith("ttqlab"):
            found = _names_library_answer(obj, depth - 1, seen, answers)
            if found:
                return found
    return None


def _all_names(code) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _all_names(const)
    return names


def _filled(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


@contextlib.contextmanager
def _library_hidden(answers: tuple[str, ...] | None = None):
    """While the student's function runs, ttqlab's own quantizers (or the functions of
    the modules ``answers``) and every exercise's reference answer raise ``_Delegated``
    when called."""
    targets = _answer_functions(answers)
    saved = [(owner, attr, vars(owner)[attr]) for owner, attr, _ in targets]
    refs = [(ex, ex.reference) for ex in list(_EXERCISES.values())]
    try:
        for owner, attr, name in targets:
            setattr(owner, attr, _Forbidden(name))
        for ex, _ in refs:
            object.__setattr__(ex, "reference", _Forbidden(f"the exercise's reference answer "
                                                           f"({ex.name})"))
        yield
    finally:
        for owner, attr, obj in saved:
            setattr(owner, attr, obj)
        for ex, ref in refs:
            object.__setattr__(ex, "reference", ref)


def _clone(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.clone()
    if isinstance(x, (tuple, list)):
        return type(x)(_clone(v) for v in x)
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    return x


def _run(ex: Exercise, fn: Callable, case: Case, student: bool = False,
         time_limit: float | None = None) -> Any:
    """Observe ``fn`` on fresh copies of the inputs; complain if it changed them. A
    student's function runs with ttqlab's answers hidden (see ``_library_hidden``) and at
    most ``time_limit`` seconds (default `TIME_LIMIT`; `_TimedOut` after that)."""
    args, kwargs = _clone(case.args), _clone(case.kwargs)
    if not student:
        return _unchanged(ex, case, args, ex.observe(fn, case, args, kwargs))
    limit = TIME_LIMIT if time_limit is None else time_limit
    with _library_hidden(ex.answers), _time_limit(limit):  # the timer stops before restoring
        out = ex.observe(fn, case, args, kwargs)
    return _unchanged(ex, case, args, out)


def _unchanged(ex: Exercise, case: Case, args: tuple, out: Any) -> Any:
    """``out``, unless the function changed one of the case's tensors in place."""
    for name, before, after in zip(ex.params, case.args, args):
        if isinstance(before, Tensor) and not torch.equal(before, after):
            raise _Mutated(f"your function changed its input {name} in place (e.g. "
                           f"{name}.abs_() or {name}[...] = ...): work on a copy, such as "
                           f"{name}.abs(), so that the caller's weights are never lost")
    return out


def _cannot_bind(fn: Callable, case: Case) -> str | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # a builtin without a signature: just call it
    try:
        sig.bind(*case.args, **case.kwargs)
    except TypeError as exc:
        return str(exc)
    return None


_LIBRARY = str(Path(__file__).resolve().parent)
_CHECKS = (str(Path(__file__).resolve()), str(Path(__file__).resolve().parent / "exercises"))
_TORCH = str(Path(torch.__file__).resolve().parent)


def _where(exc: BaseException) -> str:
    """' (line 3 of twn_threshold)': the last frame of the student's code."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(_LIBRARY) and "site-packages" not in f.filename]
    return f" (line {frames[-1].lineno} of {frames[-1].name})" if frames else ""


def check(ex: Exercise, fn: Callable, verbose: bool = True,
          time_limit: float | None = None) -> bool:
    """Run ``fn`` on every case of ``ex`` and print a verdict: ✓ when all pass, else the
    first failing case, what was expected, what came back, and the hint of the catalogued
    mistake that reproduces it (if one does). Returns whether all cases passed.

    ``time_limit``: seconds per case (default `TIME_LIMIT`; 0: none), see the module's
    docstring for where it holds."""
    limit = TIME_LIMIT if time_limit is None else time_limit
    say = print if verbose else (lambda *_: None)
    title = f"check_{ex.name}"
    if not callable(fn):
        say(f"✗ {title}: pass your function itself, {title}({ex.name}), without calling it "
            f"(no parentheses after {ex.name}); got {kind_of(fn)}.")
        return False
    delegated = _names_library_answer(fn, answers=ex.answers)
    if delegated:
        say(_delegation_message(title, delegated))
        return False
    cases = ex.cases()
    for number, case in enumerate(cases, 1):
        where = f"✗ {title}: case {number} of {len(cases)}, '{case.name}' ({_inputs(ex, case)})"
        misfit = _cannot_bind(fn, case)
        if misfit:
            call = ", ".join([*ex.params[: len(case.args)], *(f"{k}=..." for k in case.kwargs)])
            say(f"✗ {title}: your function cannot be called as {ex.name}({call}): {misfit}.\n"
                f"  Expected: def {ex.signature}")
            return False
        try:
            got = _run(ex, fn, case, student=True, time_limit=limit)
        except _TimedOut:
            say(f"{where}\n  your function did not return within {limit:g} s on case "
                f"'{case.name}': look for a loop that never ends (a `while` whose condition "
                f"never changes), or for far more work than the task needs.")
            return False
        except _Delegated as exc:
            say(_delegation_message(title, str(exc)))
            return False
        except NotImplementedError:
            say(f"✎ {ex.name} is not implemented yet. Replace `raise NotImplementedError` with "
                f"your code and run this cell again: the check will guide you.")
            return False
        except _Mutated as exc:
            say(f"{where}\n  {exc}")
            return False
        except Exception as exc:
            say(f"{where}\n  your function raised {type(exc).__name__}: "
                f"{_short(str(exc), 300)}{_where(exc)}")
            return False
        expected = _run(ex, ex.reference, case)
        try:
            fail = ex.judge(expected, got, case)
        except Exception as exc:  # a result so odd that comparing it failed
            fail = Fail(f"could not compare your result ({type(exc).__name__}: {exc}); return "
                        f"what `def {ex.signature}` asks for")
        if fail:
            hint = _hint(ex, fn, cases, case, fail.part, got, limit)
            say(f"{where}\n  {fail.message}" + (f"\n  Hint: {hint}" if hint else ""))
            return False
    say(f"✓ {title}: all {len(cases)} cases passed.")
    return True


def _delegation_message(title: str, what: str) -> str:
    return (f"✗ {title}: your function calls {what}, ttqlab's own answer. The point of the "
            f"exercise is to write it yourself with torch operations (abs, mean, sort, "
            f"where, ...): replace that call with your own computation.")


def _hint(ex: Exercise, fn: Callable, cases: list[Case], case: Case, part: int | None,
          got: Any, time_limit: float | None = None) -> str | None:
    """The hint of the catalogued mistake that reproduces the student's wrong result.

    A variant must give the same (wrong part of the) result on the failing case; among
    several, the one that agrees with the student on the most cases wins."""

    def observe(f, c):
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the student's prints, once only
                return ex.key(_run(ex, f, c, student=f is fn, time_limit=time_limit), c)
        except (Exception, _TimedOut):
            return _Nothing()

    try:
        mine = _part(ex.key(got, case), part)
    except Exception:
        return None
    found = [m for m, (variant, _) in ex.mistakes.items()
             if _same(_part(observe(variant, case), part), mine)]
    if len(found) > 1:
        student = [observe(fn, c) for c in cases]
        score = {m: sum(_same(observe(ex.mistakes[m][0], c), s) for c, s in zip(cases, student))
                 for m in found}
        found = [max(found, key=score.__getitem__)]
    return ex.mistakes[found[0]][1] if found else None


class _Nothing:
    """A result that equals nothing (a variant that raised)."""


def _part(obs: Any, part: int | None) -> Any:
    if part is None:
        return obs
    return obs[part] if isinstance(obs, (tuple, list)) and len(obs) > part else _Nothing()


def _same(a: Any, b: Any) -> bool:
    """Loose equality of two results, for matching a wrong variant (never raises)."""
    if isinstance(a, _Nothing) or isinstance(b, _Nothing):
        return False
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if a is None or b is None or isinstance(a, (bool, str)) or isinstance(b, (bool, str)):
        return a is b or (type(a) is type(b) and a == b)
    x, _ = as_tensor(a)
    y, _ = as_tensor(b)
    if x is None or y is None or (x.dtype == torch.bool) != (y.dtype == torch.bool):
        return False
    if x.numel() == y.numel() == 1:
        x, y = x.reshape(()), y.reshape(())
    if x.shape != y.shape:
        return False
    if x.dtype == torch.bool or not (x.is_floating_point() or y.is_floating_point()):
        return bool(torch.equal(x.long(), y.long()))
    return bool(torch.isclose(x.double(), y.double(), rtol=1e-4, atol=1e-6, equal_nan=True).all())


# --------------------------------------------------------------------------- judging results


def kind_of(x: Any) -> str:
    if isinstance(x, Tensor):
        return f"a tensor of shape {shape_of(x)}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)}"
    if x is None:
        return "None"
    name = type(x).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def as_tensor(x: Any) -> tuple[Tensor | None, str]:
    """``(tensor, "")`` or ``(None, what is wrong)``; array-likes are converted."""
    if isinstance(x, Tensor):
        return x.detach().cpu(), ""
    if x is None:
        return None, "your function returned None: did you forget `return`?"
    if isinstance(x, (bytes, bytearray)):
        return torch.tensor(list(x), dtype=torch.uint8), ""
    if not isinstance(x, (bool, int, float, list, tuple, np.ndarray, np.generic)):
        return None, f"expected a torch.Tensor, got {kind_of(x)}"
    try:
        return torch.as_tensor(np.asarray(x) if isinstance(x, np.generic) else x), ""
    except (TypeError, ValueError, RuntimeError) as exc:
        return None, f"expected a torch.Tensor; your {type(x).__name__} cannot be converted ({exc})"


def shape_of(t: Tensor) -> str:
    return "() (one number)" if t.dim() == 0 else str(tuple(t.shape))


def fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def show(t: Tensor, limit: int = 8) -> str:
    if t.dim() == 0:
        return fmt(t.item())
    flat = t.flatten().tolist()
    body = ", ".join(fmt(v) for v in flat[:limit]) + (", …" if len(flat) > limit else "")
    return f"[{body}]" + (f" (shape {tuple(t.shape)})" if t.dim() > 1 or len(flat) > limit else "")


def _short(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _inputs(ex: Exercise, case: Case) -> str:
    def brief(v):
        if isinstance(v, Tensor):
            return show(v) if v.numel() <= 8 else f"a tensor of shape {tuple(v.shape)}"
        if isinstance(v, torch.nn.Module):
            return f"a {type(v).__name__}"  # the case's name says which
        return repr(v) if isinstance(v, str) else fmt(v)

    named = [*zip(ex.params, case.args), *case.kwargs.items()]
    return ", ".join(f"{k}={brief(v)}" for k, v in named)


def tensor_problem(expected: Tensor, got: Any, *, rtol: float = 1e-5, atol: float = 1e-7,
                    name: str = "", values: bool = True) -> str | None:
    """What is wrong with ``got`` (type, dtype, shape, NaN, then values unless ``values`` is
    False), or None if it is right.

    Float results may come back in any real dtype; integer and bool ones must match."""
    label = f"{name}: " if name else ""
    t, why = as_tensor(got)
    if t is None:
        return label + why
    exact = not expected.is_floating_point()
    if exact and t.dtype != expected.dtype:
        return (f"{label}expected dtype {expected.dtype}, got {t.dtype} (convert with "
                f".to({expected.dtype}))")
    if not exact:
        if t.dtype == torch.bool or t.is_complex():
            return f"{label}expected real numbers (a float tensor), got dtype {t.dtype}"
        if expected.dim() == 0 and t.numel() == 1:
            t = t.reshape(())
    if t.shape != expected.shape:
        return f"{label}expected shape {shape_of(expected)}, got shape {shape_of(t)}"
    if exact:
        close = t == expected
    else:
        t, e = t.double(), expected.double()
        broken = ~torch.isfinite(t) & torch.isfinite(e)
        if bool(broken.any()):
            return (f"{label}your result contains NaN or inf ({int(broken.sum())} of "
                    f"{t.numel()} values): {show(t)}")
        if not values:
            return None
        close = torch.isclose(t, e, rtol=rtol, atol=atol, equal_nan=True)
    if bool(close.all()):
        return None
    return label + _difference(expected, t, close)


def _difference(expected: Tensor, got: Tensor, close: Tensor) -> str:
    gap = ""
    if got.is_floating_point():
        gap = f" (max |difference| {float((got - expected.double()).abs().max()):.2g})"
    if expected.numel() <= 8:
        same_print = show(expected) == show(got)
        return f"expected {show(expected)}, got {show(got)}" + (gap if same_print else "")
    bad = (~close).flatten()
    i = int(bad.nonzero()[0])
    index = tuple(int(v) for v in np.unravel_index(i, tuple(expected.shape)))
    return (f"{int(bad.sum())} of {bad.numel()} values differ; the first at index {index}: "
            f"expected {fmt(expected.flatten()[i].item())}, got {fmt(got.flatten()[i].item())}"
            + gap)


def judge_tensor(rtol: float = 1e-5, atol: float = 1e-7) -> Callable:
    def judge(expected: Tensor, got: Any, case: Case) -> Fail | None:
        problem = tensor_problem(expected, got, rtol=rtol, atol=atol)
        return Fail(problem) if problem else None

    return judge


def judge_tuple(names: tuple[str, ...], rtol: float, atol: float) -> Callable:
    def judge(expected: tuple, got: Any, case: Case) -> Fail | None:
        if not isinstance(got, (tuple, list)) or len(got) != len(names):
            return Fail(f"return a tuple of {len(names)}, ({', '.join(names)}); got {kind_of(got)}")
        for part, (name, e, g) in enumerate(zip(names, expected, got)):
            problem = tensor_problem(e, g, rtol=rtol, atol=atol, name=name)
            if problem:
                return Fail(problem, part)
        return None

    return judge


def one_number(got: Any) -> tuple[Tensor | None, str]:
    t, why = as_tensor(got)
    if t is None:
        return None, why
    if t.numel() != 1 or t.dtype == torch.bool:
        return None, f"expected one number (a 0-d tensor), got {kind_of(t)} of dtype {t.dtype}"
    t = t.reshape(()).double()
    return (t, "") if bool(torch.isfinite(t)) else (None, f"your result is {t.item()}")


# --------------------------------------------------------------------------- numeric answers


def check_number(title: str, answer: Any, expected: float, *, tol: float,
                 low: float = -math.inf, high: float = math.inf, what: str = "a number",
                 mistakes: dict[str, tuple[float, str]] | None = None,
                 verbose: bool = True) -> bool:
    """Check a reasoning exercise's numeric ``answer`` against ``expected`` within ``tol``
    (absolute). ``mistakes``: ``{id: (the number that mistake gives, hint)}``; the nearest
    one within ``tol`` of the answer is named. Prints a verdict; returns True / False."""
    say = print if verbose else (lambda *_: None)
    if answer is None:  # the notebook's default: not answered yet, not an error
        say(f"… {title}: no answer yet. Replace None in the cell above by {what}, run that "
            f"cell, then run this one again.")
        return False
    value, why = one_number(answer) if not isinstance(answer, bool) else (None, "")
    if value is None:
        say(f"✗ {title}: answer with {what} (a Python float such as 0.5), got "
            f"{kind_of(answer)}{'' if not why else ': ' + why}.")
        return False
    v = float(value)
    if not low <= v <= high:
        say(f"✗ {title}: {fmt(v)} is outside [{fmt(low)}, {fmt(high)}]: answer with {what}.")
        return False
    if abs(v - expected) <= tol:
        say(f"✓ {title}: {fmt(v)} is right (the measured value is {fmt(expected)}).")
        return True
    near = [(abs(v - m), hint) for m, hint in (mistakes or {}).values() if abs(v - m) <= tol]
    hint = min(near)[1] if near else None
    say(f"✗ {title}: {fmt(v)} is not it (off by more than {fmt(tol)})."
        + (f"\n  Hint: {hint}" if hint else " Work it out again from the definition."))
    return False
