"""``FitConfig``: every option of ``ttqlab.fit`` in one frozen, validated object.

    >>> config = FitConfig(epochs=3, lr=1e-2)
    >>> config.with_options(seed=1).seed
    1
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .validation import check_bool, check_choice, check_int, check_number, is_int

__all__ = ["FitConfig"]

OPTIMIZERS = ("adam", "sgd")
SCHEDULE_UNITS = ("epoch", "iteration")
#: names ``fit`` itself saves in a checkpoint: ``checkpoint_extra`` may not use them
RESERVED = ("model", "optimizer", "scheduler", "shuffle", "augment", "history", "config",
            "step", "rng")


@dataclass(frozen=True)
class FitConfig:
    """The training options of ``ttqlab.fit``, checked once when the config is made.

    ``fit(model, data, epochs=3, lr=1e-2)`` builds one from its keywords;
    ``fit(model, data, config, seed=1)`` uses ``config`` with ``seed`` replaced.

    The optimiser and its schedule:

    Args:
        epochs, lr, batch_size, weight_decay, momentum: the usual (``epochs`` and
            ``batch_size`` are ints >= 1, ``lr`` > 0). Under ``torchrun``, ``batch_size`` is
            the global batch, split over the processes.
        optimizer: ``"adam"`` (default), ``"sgd"`` (momentum) or your own optimizer.
        lr_schedule: ``None`` (constant), ``"cosine"`` (anneal to 0 over the run) or a
            list of milestones at which the learning rate is multiplied by ``gamma``
            (the papers' step schedules).
        gamma: the factor of a milestone schedule (> 0).
        schedule_unit: ``"epoch"`` (default): milestones count epochs; ``"iteration"``:
            they count optimizer steps and the schedule advances after every batch
            (TWN's "x0.1 at 15k and 25k iterations").
        seed: seeds shuffling, ``transform`` and ``torch.manual_seed``; same seed, same
            numbers.
        device: default the model's device; the model is moved there.
        progress: show a tqdm progress bar when writing to a terminal or a notebook
            (none when the output goes to a file or a pipe).
        callbacks: called as ``cb(history, model)`` after every epoch (and epoch 0),
            e.g. a live dashboard from ``ttqlab.widgets``.
        transform: data augmentation, ``transform(x, generator) -> x`` on each training
            batch (CPU tensors), drawing its randomness from ``generator`` (seeded, and
            saved in checkpoints), e.g. ``ttqlab.reproduce.CropFlip(4)``.
        compile: run the training steps through ``torch.compile(model)``. ``model``
            itself is left as it was (same parameters, same ``state_dict`` keys), so
            checkpoints, ``evaluate`` and ``export`` see the ordinary module.
        deterministic: for the duration of ``fit``, turn on
            ``torch.use_deterministic_algorithms(True)`` and cuDNN's deterministic mode
            (on CUDA also ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` if unset), so that two runs
            with the same seed, and a resumed run, are bit-identical on a GPU too. The
            previous settings are restored afterwards. Slower on GPUs.
        checkpoint: a run directory; the whole training state (weights, scales, INQ
            masks, optimizer, scheduler, RNGs, history) is saved there after every epoch
            (``ttqlab.checkpoint``, no pickle).
        resume: continue from the newest checkpoint in ``checkpoint`` if there is one
            (a finished run is loaded and returned without training). Without it, a
            ``checkpoint`` directory that already holds a run is an error.
        checkpoint_extra: further objects with ``state_dict`` / ``load_state_dict``
            saved and restored with the run, e.g. ``{"inq": inq}``.

    Raises:
        ValueError, TypeError: an option of the wrong kind or out of range, saying what
            to pass instead.
    """

    # the optimiser and its schedule
    epochs: int = 5
    lr: float = 1e-3
    optimizer: str | torch.optim.Optimizer = "adam"
    batch_size: int = 64
    weight_decay: float = 0.0
    momentum: float = 0.9
    lr_schedule: str | Sequence[int] | None = None
    gamma: float = 0.1
    schedule_unit: str = "epoch"
    # the run
    seed: int = 0
    device: torch.device | str | None = None
    progress: bool = True
    callbacks: Iterable[Callable[[Any, torch.nn.Module], None]] = ()
    transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    compile: bool = False
    deterministic: bool = False
    # checkpointing
    checkpoint: str | os.PathLike | None = None
    resume: bool = False
    checkpoint_extra: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("epochs", check_int("epochs", self.epochs, low=1))
        put("batch_size", check_int("batch_size", self.batch_size, low=1))
        put("lr", check_number("lr", self.lr, low=0, low_open=True))
        put("weight_decay", check_number("weight_decay", self.weight_decay, low=0))
        put("momentum", check_number("momentum", self.momentum, low=0))
        put("gamma", check_number("gamma", self.gamma, low=0, low_open=True))
        put("seed", check_int("seed", self.seed))
        for flag in ("progress", "compile", "deterministic", "resume"):
            check_bool(flag, getattr(self, flag))
        check_choice("schedule_unit", self.schedule_unit, SCHEDULE_UNITS)
        _check_optimizer(self.optimizer)
        put("lr_schedule", _check_schedule(self.lr_schedule))
        put("callbacks", _check_callbacks(self.callbacks))
        if self.transform is not None and not callable(self.transform):
            raise TypeError(f"transform must be a function transform(x, generator) -> x or "
                            f"None, got {type(self.transform).__name__}")
        if self.device is not None and not isinstance(self.device, (str, torch.device)):
            raise TypeError(f"device must be a name such as 'cpu' or 'cuda', a torch.device "
                            f"or None, got {self.device!r}")
        self._check_checkpointing()

    def _check_checkpointing(self) -> None:
        if self.checkpoint is not None and not isinstance(self.checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a directory path (a str or pathlib.Path), "
                            f"got {type(self.checkpoint).__name__}")
        extra = self.checkpoint_extra
        if extra is not None:
            if not isinstance(extra, Mapping) or not all(isinstance(k, str) for k in extra):
                raise TypeError(f"checkpoint_extra must be a dict of name -> object, such as "
                                f"{{'inq': inq}}, got {extra!r}")
            taken = sorted(set(extra) & set(RESERVED))
            if taken:
                raise ValueError(f"checkpoint_extra cannot use the name(s) {taken}: fit saves "
                                 f"its own state under them; choose other names")
        if self.checkpoint is None and (self.resume or extra):
            raise ValueError("resume and checkpoint_extra need checkpoint=DIR, the run "
                             "directory")

    @property
    def per_iteration(self) -> bool:
        """The schedule advances after every batch (``schedule_unit="iteration"``)."""
        return self.schedule_unit == "iteration"

    def resume_key(self) -> dict:
        """What a resumed run must share with the run it continues (saved in checkpoints
        as ``config``)."""
        return {"batch_size": self.batch_size, "seed": self.seed,
                "schedule_unit": self.schedule_unit}

    def with_options(self, **options: Any) -> FitConfig:
        """This config with ``options`` replaced (checked again). An unknown name is a
        ``TypeError`` that names the closest option."""
        names = [f.name for f in dataclasses.fields(self)]
        for key in options:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = (f"did you mean {close[0]!r}?" if close
                        else f"the options are {', '.join(names)}")
                raise TypeError(f"fit() got an unknown option {key!r}; {hint} (see "
                                f"ttqlab.FitConfig)")
        return dataclasses.replace(self, **options) if options else self

    @classmethod
    def make(cls, config: FitConfig | None = None, **options: Any) -> FitConfig:
        """``config`` (default ``FitConfig()``) with ``options`` replaced: what ``fit``
        does with its ``config`` and keywords."""
        if config is None:
            config = cls()
        elif not isinstance(config, cls):
            raise TypeError(f"config must be a ttqlab.FitConfig, got "
                            f"{type(config).__name__}; pass options as keywords instead "
                            f"(fit(model, data, epochs=3)) or FitConfig(**options)")
        return config.with_options(**options)


def _check_optimizer(optimizer: Any) -> None:
    if isinstance(optimizer, torch.optim.Optimizer):
        return
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be an instance, such as "
                        f"{optimizer.__name__}(model.parameters()), or 'adam' / 'sgd'; "
                        f"got the class {optimizer.__name__}")
    if not (isinstance(optimizer, str) and optimizer in OPTIMIZERS):
        raise ValueError(f"optimizer must be 'adam', 'sgd' or a torch.optim.Optimizer, "
                         f"got {optimizer!r}")


def _check_schedule(lr_schedule: Any) -> str | tuple[int, ...] | None:
    """None, ``"cosine"`` or the milestones as a tuple of ints >= 1."""
    if lr_schedule is None or lr_schedule == "cosine":
        return lr_schedule
    try:
        ok = not isinstance(lr_schedule, str) and all(is_int(m) and m > 0 for m in lr_schedule)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"lr_schedule must be None, 'cosine' or a list of positive epoch "
                         f"(or iteration) numbers such as [15, 25], got {lr_schedule!r}")
    return tuple(int(m) for m in lr_schedule)


def _check_callbacks(callbacks: Any) -> tuple:
    if callable(callbacks):
        raise TypeError("callbacks must be a list of functions: pass callbacks=[fn]")
    try:
        callbacks = tuple(callbacks)
    except TypeError:
        raise TypeError(f"callbacks must be a list of functions cb(history, model), got "
                        f"{callbacks!r}") from None
    bad = [cb for cb in callbacks if not callable(cb)]
    if bad:
        raise TypeError(f"callbacks must be functions cb(history, model); {bad[0]!r} is not "
                        f"callable")
    return callbacks
