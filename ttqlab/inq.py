"""Incremental Network Quantization (Zhou et al., ICLR 2017): the schedule.

Each step takes every quantized layer, picks the next portion of its not-yet-frozen
weights (largest |W| first: the "pruning-inspired" partition; or at random, the paper's
ablation), rounds them to powers of two and freezes them. Between steps the remaining
float weights are re-trained with the ordinary training loop::

    inq = ttqlab.INQ(pretrained_model, bits=5)
    while not inq.done:
        inq.step()                       # 0.5, 0.75, 0.875, 1.0
        ttqlab.fit(pretrained_model, train, test, epochs=2)

The update rule ``W <- W - lr * dE/dW * T`` is enforced by ``ttqlab.methods.inq.INQWeight``:
frozen positions read a buffer, so no optimizer (momentum, weight decay, Adam) moves them.

:func:`train_incremental` is that loop with a budget of epochs (INQ's training driver,
``INQWeight.trainer``: what ``ttqlab.experiments.train_method`` and ``ttqlab compare`` run).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from . import quantizers as Q
from .convert import latent_weight, quantize, quantized_layers, quantized_weights
from .methods.inq import INQWeight
from .train import History, evaluate, fit
from .validation import is_int

__all__ = ["INQ", "SCHEDULES", "spread_epochs", "train_incremental"]

#: accumulated quantized fractions used in the paper
SCHEDULES: dict[str, tuple[float, ...]] = {
    "default": (0.5, 0.75, 0.875, 1.0),  # VGG-16, ResNet-18/50, GoogleNet
    "alexnet": (0.3, 0.6, 0.8, 1.0),
    "resnet18-2bit": (0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 1.0),
}

STRATEGIES = ("magnitude", "random")


def _check_schedule(schedule: Sequence[float]) -> tuple[float, ...]:
    try:
        fr = tuple(float(f) for f in schedule)
    except (TypeError, ValueError):
        raise ValueError(f"schedule must be a sequence of fractions such as "
                         f"(0.5, 0.75, 0.875, 1.0), got {schedule!r}") from None
    if not fr:
        raise ValueError("schedule is empty; pass e.g. (0.5, 0.75, 0.875, 1.0)")
    if any(not 0 < f <= 1 for f in fr):
        raise ValueError(f"schedule fractions must lie in (0, 1], got {fr}")
    if any(b <= a for a, b in itertools.pairwise(fr)):
        raise ValueError(f"schedule must be strictly increasing, got {fr}")
    if fr[-1] != 1.0:
        raise ValueError(f"schedule must end at 1.0 so that every weight is quantized, "
                         f"got {fr}; append 1.0")
    return fr


def _check_largest_level(name: str, w: torch.Tensor, bits: int) -> None:
    """INQ's largest level 2^n1 (n1 = floor(log2(4 max|W| / 3))) must be finite in the
    weight's dtype: a weight near float32's maximum (3e38) would give n1 = 128 and
    freeze to inf."""
    if w.numel() == 0 or not bool(w.detach().abs().max() > 0):
        return
    n1, _ = Q.inq_exponent_range(w, bits)
    if not bool(torch.isfinite(torch.tensor(2.0, dtype=w.dtype) ** n1)):
        raise ValueError(f"layer {name!r}: max|W| = {float(w.detach().abs().max()):.3g} gives "
                         f"INQ's largest level 2^{n1}, which overflows {w.dtype}; the weights "
                         f"are far too large (a diverged run?): rescale or re-initialise them")


class INQ:
    """Drives INQ over a model: ``step()`` freezes the next fraction of every layer.

    Args:
        model: a (preferably pre-trained) float model, or one already converted with
            ``ttqlab.quantize(model, "inq", bits=...)``.
        bits: bit width b of the power-of-two levels (5 in the paper; 2 is ternary).
        schedule: accumulated quantized fractions, strictly increasing, ending at 1.0.
        strategy: ``"magnitude"`` (largest |W| first, the paper's choice) or ``"random"``.
        seed: seeds the random partition (each layer and step gets its own stream).
        keep_first_last, exclude: as in ``ttqlab.quantize`` (INQ's paper quantizes all
            layers: pass ``keep_first_last=False`` for that).
    """

    def __init__(
        self,
        model: nn.Module,
        bits: int = 5,
        schedule: Sequence[float] = SCHEDULES["default"],
        strategy: str = "magnitude",
        *,
        seed: int = 0,
        keep_first_last: bool = True,
        exclude: Sequence[str] = (),
    ):
        self.schedule = _check_schedule(schedule)
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.strategy = strategy
        self.seed = int(seed)
        existing = list(quantized_layers(model))
        if not existing:
            quantize(model, INQWeight.method, bits=bits, keep_first_last=keep_first_last,
                     exclude=exclude)
        else:
            wrong = [n for n, _, q in existing if not isinstance(q, INQWeight) or q.bits != bits]
            if wrong:
                raise ValueError(f"layers {wrong} are not quantized with method "
                                 f"{INQWeight.method!r} and "
                                 f"bits={bits}; call ttqlab.unquantize(model) first")
        self.model = model
        self.bits = bits
        self.steps_taken = 0

    @property
    def layers(self) -> list[tuple[str, nn.Module, INQWeight]]:
        return [(n, m, q) for n, m, q in quantized_layers(self.model)
                if isinstance(q, INQWeight)]

    @property
    def fraction(self) -> float:
        """Accumulated fraction frozen so far (0.0 before the first step)."""
        return self.schedule[self.steps_taken - 1] if self.steps_taken else 0.0

    @property
    def done(self) -> bool:
        return self.steps_taken == len(self.schedule)

    def _partition(self, w: torch.Tensor, free: torch.Tensor, count: int, layer: int):
        """Boolean mask of ``count`` free positions to freeze next."""
        flat_free = free.flatten()
        if self.strategy == "magnitude":
            score = torch.where(flat_free, w.detach().abs().flatten(), -1.0)
        else:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.steps_taken * 7919
                                              + layer)
            rand = torch.rand(flat_free.numel(), generator=g).to(w.device)
            score = torch.where(flat_free, rand, -1.0)
        idx = torch.topk(score, count, sorted=False).indices
        new = torch.zeros_like(flat_free)
        new[idx] = True
        return new.reshape(w.shape)

    @torch.no_grad()
    def step(self) -> float:
        """Freeze the next portion of every layer; return the accumulated fraction frozen."""
        if self.done:
            warnings.warn("INQ schedule already finished (every weight is frozen); "
                          "step() does nothing more", stacklevel=2)
            return 1.0
        target = self.schedule[self.steps_taken]
        weights = [(n, m, p, q) for n, m, p, q in quantized_weights(self.model)
                   if isinstance(q, INQWeight)]
        for name, module, param, q in weights:
            if not bool(q.frozen_mask.any()):
                _check_largest_level(name, latent_weight(module, param), self.bits)
        for i, (_, module, param, q) in enumerate(weights):
            w = latent_weight(module, param)
            n = w.numel()
            goal = n if target == 1.0 else round(target * n)
            count = goal - int(q.frozen_mask.sum())
            if count > 0:
                q.freeze(w, self._partition(w, ~q.frozen_mask, count, i))
        self.steps_taken += 1
        return self.fraction

    def state_dict(self) -> dict:
        """The schedule position (the masks and values live in ``model.state_dict()``)."""
        return {"steps_taken": self.steps_taken, "schedule": list(self.schedule),
                "strategy": self.strategy, "seed": self.seed, "bits": self.bits}

    def load_state_dict(self, state: dict) -> None:
        """Restore the schedule position; the state must come from an INQ with the same
        schedule and bit width, and ``steps_taken`` must lie in ``0..len(schedule)``."""
        if not isinstance(state, dict) or not {"steps_taken", "schedule", "bits", "strategy",
                                               "seed"} <= set(state):
            raise ValueError("INQ state must be a dict from INQ.state_dict() with keys "
                             "steps_taken, schedule, strategy, seed, bits")
        if list(state["schedule"]) != list(self.schedule) or state["bits"] != self.bits:
            raise ValueError("INQ state was saved with a different schedule or bit width")
        steps = state["steps_taken"]
        if not is_int(steps) or not 0 <= steps <= len(self.schedule):
            raise ValueError(f"INQ state: steps_taken must be an int from 0 to "
                             f"{len(self.schedule)} (the schedule's length), got {steps!r}")
        if state["strategy"] not in STRATEGIES:
            raise ValueError(f"INQ state: strategy must be one of {STRATEGIES}, got "
                             f"{state['strategy']!r}")
        seed = state["seed"]
        if not is_int(seed):
            raise ValueError(f"INQ state: seed must be an int, got {seed!r}")
        self.steps_taken = int(steps)
        self.strategy, self.seed = state["strategy"], int(seed)

    def __repr__(self) -> str:
        return (f"INQ(bits={self.bits}, schedule={self.schedule}, strategy={self.strategy!r}, "
                f"frozen={self.fraction:.3g}, layers={len(self.layers)})")


# --------------------------------------------------------------------------- the driver


def spread_epochs(epochs: int, steps: int) -> list[int]:
    """``epochs`` re-training epochs spread over ``steps`` INQ steps, earlier steps first:
    ``spread_epochs(6, 4) == [2, 2, 1, 1]``; the list always sums to ``epochs`` (no hidden
    extra epochs; with fewer epochs than steps the last steps get 0)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    return [epochs // steps + (1 if i < epochs % steps else 0) for i in range(steps)]


def train_incremental(model: nn.Module, data, *, epochs: int, options: dict,
                      keep_first_last: bool = True, progress: bool = False,
                      fit_kwargs: dict | None = None,
                      schedule: Sequence[float] = SCHEDULES["default"]) -> History:
    """INQ's training driver: each step of ``schedule`` freezes the next portion of every
    layer of the (pre-trained) ``model`` and is followed by its share of the ``epochs``
    re-training epochs (``spread_epochs(epochs, len(schedule))``: they add up to
    ``epochs``); ``options`` go to :class:`INQ` (``bits``). One history for the whole
    run, its rows numbered on, each with the ``inq_fraction`` frozen so far."""
    fit_kwargs = dict(fit_kwargs or {})
    inq = INQ(model, schedule=schedule, keep_first_last=keep_first_last, **options)
    history = History()
    for step_epochs in spread_epochs(epochs, len(inq.schedule)):
        inq.step()
        if step_epochs == 0 and history.epochs:
            # no epochs left for this step: freeze, and re-evaluate the last epoch's model
            # on what fit evaluates (the validation split if there is one)
            held = history.heldout
            split = getattr(data, held, None) if hasattr(data, "train") else data
            loss, acc = evaluate(model, split if split is not None else data,
                                 device=fit_kwargs.get("device"))
            history.epochs[-1] = {**history.epochs[-1], f"{held}_loss": loss,
                                  f"{held}_acc": acc, "inq_fraction": inq.fraction}
            continue
        h = fit(model, data, epochs=step_epochs, progress=progress, **fit_kwargs)
        offset = history.epochs[-1]["epoch"] if history.epochs else 0
        for row in h.epochs if not history.epochs else h.epochs[1:]:
            history.epochs.append({**row, "epoch": row["epoch"] + offset,
                                   "inq_fraction": inq.fraction})
        history.layers += [{**r, "epoch": r["epoch"] + offset} for r in h.layers
                           if not history.layers or r["epoch"] > 0]
    return history
