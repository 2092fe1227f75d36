"""One training loop for every method: ``fit`` and its ``History``.

``fit`` is an ordinary PyTorch loop (forward, cross-entropy, backward, optimizer step).
Quantization lives in the model's parametrizations, so nothing here is method-specific
except the per-layer statistics it records after every epoch: sparsity, scales
(alpha, or W_p / W_n, or the fraction INQ has frozen) and how many weights changed their
quantized value ("flips") since the previous epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from . import checkpoint as checkpoint_lib
from . import coverage, distributed
from .convert import latent_weight, quantized_weights
from .fit_config import FitConfig

__all__ = ["FitConfig", "History", "evaluate", "fit", "layer_stats", "make_optimizer"]


# --------------------------------------------------------------------------- data


def _as_dataset(data, name: str):
    """Accept a Dataset, a DataLoader, an (x, y) pair of tensors, or ttqlab.data.Data."""
    if data is None or isinstance(data, (Dataset, DataLoader)):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
        isinstance(t, Tensor) for t in data
    ):
        x, y = data
        if len(x) != len(y):
            raise ValueError(f"{name}: x has {len(x)} samples but y has {len(y)}")
        return TensorDataset(x, y)
    raise TypeError(f"{name} must be a torch Dataset, a DataLoader or an (x, y) pair of "
                    f"tensors, got {type(data).__name__}")


def _batches(data, batch_size: int, shuffle: bool, gen: torch.Generator | None):
    """Mini-batches; a fast path slices TensorDatasets directly (no collate overhead)."""
    if isinstance(data, DataLoader):
        yield from data
        return
    if isinstance(data, TensorDataset):
        n = len(data)
        order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield tuple(t[idx] for t in data.tensors)
        return
    yield from DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=gen)


def _num_batches(data, batch_size: int) -> int:
    if isinstance(data, DataLoader):
        return len(data)
    return math.ceil(len(data) / batch_size)


@torch.no_grad()
def evaluate(model: nn.Module, data, batch_size: int = 512,
             device: torch.device | str | None = None) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy (0..1) of ``model`` on ``data`` (eval mode)."""
    data = _as_dataset(data, "data")
    device = torch.device(device) if device else _device_of(model)
    was_training = model.training
    model.eval()
    total, loss_sum, correct = 0, 0.0, 0
    try:
        for x, y in _batches(data, batch_size, False, None):
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            total += len(y)
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    return loss_sum / total, correct / total


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


# --------------------------------------------------------------------------- stats


@torch.no_grad()
def layer_stats(model: nn.Module) -> dict[str, dict]:
    """Per quantized layer: method, sparsity of ``layer.weight`` and its scales.

    Scales: ``alpha`` (binary, twn; mean over channels when per-channel), ``gamma``
    (bitnet), ``wp`` and ``wn``
    (ttq), ``frozen`` (inq, the fraction quantized so far).
    """
    out = {}
    for name, module, param, q in quantized_weights(model):
        w = getattr(module, param)
        row = {"method": q.method, "sparsity": float((w == 0).sum()) / max(1, w.numel())}
        row.update(q.stats_row(latent_weight(module, param)))
        out[name] = row
    return out


def _codes(model: nn.Module) -> dict[str, Tensor]:
    codes = {}
    with torch.no_grad():
        for name, module, param, q in quantized_weights(model):
            c = q.history_codes(latent_weight(module, param))
            if c is not None:
                codes[name] = c.cpu()
    return codes


# --------------------------------------------------------------------------- history


@dataclass
class History:
    """What ``fit`` measured.

    ``epochs``: one dict per epoch (epoch 0 = before training) with ``train_loss``,
    ``train_acc``, ``test_loss``, ``test_acc``, ``seconds``, ``lr``; trained on a ``Data``
    with a validation split, ``val_loss`` / ``val_acc`` instead of the test columns
    (`heldout` says which).
    ``layers``: one dict per (epoch, quantized layer) with ``layer``, ``method``,
    ``sparsity``, scales (``alpha`` / ``wp``, ``wn`` / ``frozen``) and ``flips``.
    """

    epochs: list[dict] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)

    def __getitem__(self, key: str) -> list:
        """A column of the epoch table: ``history["test_acc"]``."""
        if not self.epochs or key not in self.epochs[0]:
            cols = sorted(self.epochs[0]) if self.epochs else []
            raise KeyError(f"{key!r} is not a history column; choose from {cols}")
        return [row[key] for row in self.epochs]

    @property
    def last(self) -> dict:
        return self.epochs[-1]

    @property
    def heldout(self) -> str:
        """``"val"`` when the epochs were evaluated on a validation split, else ``"test"``."""
        return "val" if self.epochs and "val_acc" in self.epochs[0] else "test"

    @property
    def layer_names(self) -> list[str]:
        return list(dict.fromkeys(r["layer"] for r in self.layers))

    def layer(self, name: str, key: str) -> list:
        """One layer's series over epochs: ``history.layer("conv2", "wp")``."""
        if name not in self.layer_names:
            raise KeyError(f"no quantized layer {name!r}; choose from {self.layer_names}")
        return [r.get(key) for r in self.layers if r["layer"] == name]

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "layers": self.layers}

    def table(self) -> str:
        h = self.heldout
        cols = ["epoch", "train_loss", "train_acc", f"{h}_loss", f"{h}_acc", "seconds"]
        lines = ["  ".join(f"{c:>10}" for c in cols)]
        for row in self.epochs:
            cells = []
            for c in cols:
                v = row.get(c)
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    cells.append(f"{'-':>10}")
                elif isinstance(v, float):
                    cells.append(f"{v:>10.4f}")
                else:
                    cells.append(f"{v!s:>10}")
            lines.append("  ".join(cells))
        return "\n".join(lines)

    def __repr__(self) -> str:
        if not self.epochs:
            return "History(empty)"
        last = self.last
        h = self.heldout
        return (f"History({len(self.epochs) - 1} epochs, {h}_acc={last[f'{h}_acc']:.4f}, "
                f"layers={len(self.layer_names)})")


# --------------------------------------------------------------------------- fit


def make_optimizer(model: nn.Module, name: str = "adam", lr: float = 1e-3,
                   weight_decay: float = 0.0, momentum: float = 0.9) -> torch.optim.Optimizer:
    """Adam or SGD (with momentum) over all parameters. TTQ's scales W_p / W_n get no
    weight decay (like BatchNorm's affine parameters, they are scales, not weights)."""
    scales, rest = [], []
    for n, p in model.named_parameters():
        (scales if n.endswith((".wp", ".wn")) else rest).append(p)
    groups = [{"params": rest}]
    if scales:
        groups.append({"params": scales, "weight_decay": 0.0})
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam', 'sgd' or a torch.optim.Optimizer, "
                     f"got {name!r}")


#: ``fit`` stops when a training batch's loss exceeds this many times the first batch's
#: loss (at least 1.0): a finite loss that large means training has diverged.
DIVERGENCE_FACTOR = 1e6


@dataclass
class _Run:
    """One ``fit`` call: its options and the state its loop reads and updates (internal)."""

    config: FitConfig
    model: nn.Module
    net: nn.Module            # what the training step calls: model, DDP(model), compiled
    opt: torch.optim.Optimizer
    sched: object
    device: torch.device
    train: object
    test: object
    min_batch: int            # smaller training batches are skipped (BatchNorm, torchrun)
    gen: torch.Generator
    aug_gen: torch.Generator
    run_state: dict
    history: History = field(default_factory=History)
    prev_codes: dict = field(default_factory=dict)
    warned_negative: set = field(default_factory=set)
    loss_limit: float | None = None
    first: int = 1            # first epoch still to train (more than 1 on resume)
    dropped: int = 0          # samples skipped in the current epoch
    warned_drop: bool = False
    snapshot: dict | None = None  # state_dict at the start of the epoch (divergence)
    bar: object = None
    heldout: str = "test"     # what the per-epoch evaluation set is: "test" or "val"


def fit(model: nn.Module, train, test=None, config: FitConfig | None = None,
        **options: Any) -> History:
    """Train ``model`` on ``train`` and report on ``test`` after every epoch.

    ``fit(model, data, epochs=3, lr=1e-2)``, or with a :class:`FitConfig` (the options
    checked once, reusable): ``fit(model, data, config)``; ``fit(model, data, config,
    seed=1)`` is ``config`` with ``seed`` replaced. Every option is a field of
    :class:`FitConfig`, documented there; the common ones:

    Args:
        model: any classifier returning logits; quantized or not.
        train, test: a ``Dataset``, a ``DataLoader``, an ``(x, y)`` tensor pair, or a
            ``ttqlab.data.Data`` (then ``test`` defaults to its validation split if it has
            one, recorded as ``val_loss`` / ``val_acc``, else to its test split).
        config: a :class:`FitConfig`; default ``FitConfig()``.
        **options: ``epochs`` (5), ``lr`` (1e-3), ``optimizer`` (``"adam"``, ``"sgd"`` or
            your own), ``batch_size`` (64), ``weight_decay``, ``momentum``,
            ``lr_schedule`` (``None``, ``"cosine"`` or milestones such as ``[15, 25]``),
            ``gamma``, ``schedule_unit`` (``"epoch"`` / ``"iteration"``), ``seed`` (same
            seed, same numbers), ``device``, ``progress``, ``callbacks`` (``cb(history,
            model)`` after every epoch), ``transform`` (augmentation), ``compile``,
            ``deterministic``, ``checkpoint`` (a run directory saved after every epoch),
            ``resume``, ``checkpoint_extra``. An unknown name is a ``TypeError`` naming the
            closest option.

    Returns:
        a :class:`History`; epoch 0 is the model before training.

    Raises:
        FloatingPointError: training diverged: a batch's loss is NaN or infinite, or more
            than ``DIVERGENCE_FACTOR`` (1e6) times the first batch's loss. It is checked
            before the optimizer step, so ``model`` keeps its last finite weights (if a step
            overflowed them to inf, it is reset to the weights it had at the start of that
            epoch), and the epochs completed so far are on the exception as
            ``err.history``.
        ValueError, TypeError: bad options (an unknown one names the closest) or an empty
            training set.

    A final training batch of a single sample is skipped when the model has BatchNorm
    (its batch statistics need at least two samples); ``fit`` warns once, naming how
    many samples are left out each epoch.
    """
    config = FitConfig.make(config, **options)
    heldout = "test"
    if hasattr(train, "train") and hasattr(train, "test") and not isinstance(train, nn.Module):
        if test is None and getattr(train, "val", None) is not None:
            test, heldout = train.val, "val"  # choose on validation, never on test
        train, test = train.train, (test if test is not None else train.test)
    train = _as_dataset(train, "train")
    test = _as_dataset(test, "test")
    _validate(train, config)
    device = torch.device(config.device) if config.device else _device_of(model)
    with _deterministic_algorithms(config.deterministic, device):
        run = _make_run(model, train, test, config, device, heldout)
        first = run.first
        run.bar = _progress((config.epochs - first + 1) * _num_batches(train, config.batch_size),
                            config.progress and distributed.is_main())
        try:
            for epoch in range(first, config.epochs + 1):
                train_loss, train_acc, seconds = _train_one_epoch(run, epoch)
                _record(run, epoch, train_loss, train_acc, seconds)
        finally:
            if run.bar is not None:
                run.bar.close()
    return run.history


def _signature_with_options() -> inspect.Signature:
    """``fit``'s signature with each FitConfig field as a keyword-only parameter, so that
    ``help(fit)``, notebooks' tooltips and ``inspect.signature(fit)`` list the options."""
    params = [p for p in inspect.signature(fit).parameters.values()
              if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                 annotation=f.type) for f in dataclasses.fields(FitConfig)]
    return inspect.signature(fit).replace(parameters=params)


fit.__signature__ = _signature_with_options()


def _validate(train, config: FitConfig) -> None:
    """What depends on the data and the processes (the options are checked by FitConfig)."""
    if train is None:
        raise ValueError("train data is required")
    if config.batch_size < distributed.world_size():
        raise ValueError(f"batch_size ({config.batch_size}) is the global batch and must be "
                         f"at least the number of processes ({distributed.world_size()})")
    size = _dataset_size(train)
    if size == 0:
        raise ValueError("the training set is empty: pass at least one (x, y) sample "
                         "(check limit_train / the data source)")


def _dataset_size(data) -> int | None:
    """Number of samples, or None when unknown (an iterable dataset)."""
    try:
        return len(data.dataset) if isinstance(data, DataLoader) else len(data)
    except TypeError:
        return None


def _make_run(model, train, test, config: FitConfig, device: torch.device,
              heldout: str = "test") -> _Run:
    """Seed, build the optimizer and scheduler, restore a checkpoint, record epoch 0."""
    c = config
    model.to(device)
    torch.manual_seed(c.seed)
    gen = torch.Generator().manual_seed(c.seed)
    aug_gen = torch.Generator().manual_seed(c.seed + 1)
    if isinstance(c.optimizer, torch.optim.Optimizer):
        opt = c.optimizer
        coverage.check_optimizer(model, opt)  # warn: parameters the optimizer misses
    else:
        opt = make_optimizer(model, c.optimizer, c.lr, c.weight_decay, c.momentum)
    steps = _num_batches(train, c.batch_size)
    sched = _scheduler(opt, c.lr_schedule, c.epochs * steps if c.per_iteration else c.epochs,
                       c.gamma)
    run_state = {"model": model, "optimizer": opt, "shuffle": gen, "augment": aug_gen,
                 **({"scheduler": sched} if sched is not None else {}),
                 **(c.checkpoint_extra or {})}
    history, first = History(), 1
    if c.checkpoint is not None:
        first, history = _restore(c.checkpoint, c.resume, run_state, c.resume_key())
        distributed.barrier()  # every rank has read the directory before rank 0 writes
    net = distributed.wrap(model, device)  # under torchrun: DDP, rank 0's weights everywhere
    if c.compile:
        net = torch.compile(net)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    run = _Run(config=c, model=model, net=net, opt=opt, sched=sched, device=device,
               train=train, test=test,
               min_batch=distributed.world_size() * (2 if has_bn else 1), gen=gen,
               aug_gen=aug_gen, run_state=run_state, history=history,
               prev_codes=_codes(model), first=first, heldout=heldout)
    if first == 1:
        nan = float("nan")
        _record(run, 0, nan, nan, 0.0)
    return run


def _train_one_epoch(run: _Run, epoch: int) -> tuple[float, float, float]:
    """One pass over the training set: (mean loss, accuracy, seconds)."""
    run.model.train()
    run.snapshot = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    start = time.perf_counter()
    loss_sum, correct, total = 0.0, 0, 0
    run.dropped = 0
    for x, y in _make_loader(run):
        x, y = x.to(run.device), y.to(run.device)
        out = run.net(x)
        loss = F.cross_entropy(out, y)
        lv = loss.item()
        _check_divergence(run, lv, epoch)  # before the step: the weights stay finite
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        if run.config.per_iteration and run.sched is not None:
            run.sched.step()
        loss_sum += lv * len(y)
        correct += int((out.argmax(1) == y).sum())
        total += len(y)
        if run.bar is not None:
            run.bar.update(1)
            run.bar.set_postfix(epoch=epoch, loss=f"{lv:.3f}", refresh=False)
    if run.sched is not None and not run.config.per_iteration:
        run.sched.step()
    distributed.broadcast_buffers(run.model)
    loss_sum, correct, total = distributed.all_reduce_sum([loss_sum, correct, total])
    if total == 0:
        raise ValueError(f"no training batch was usable in epoch {epoch} ({run.dropped} "
                         f"samples skipped): pass more training samples or a larger "
                         f"batch_size")
    return loss_sum / total, correct / total, time.perf_counter() - start


def _make_loader(run: _Run) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of shuffled, augmented mini-batches; under torchrun, this process's
    slice of each (every process draws the same batches and augmentations). A batch
    too small to use (one sample behind BatchNorm; fewer samples than processes) is
    skipped, with a warning the first time."""
    for x, y in _batches(run.train, run.config.batch_size, True, run.gen):
        if len(y) < run.min_batch:
            if not run.warned_drop:
                run.warned_drop = True
                why = ("BatchNorm needs at least two samples per batch"
                       if run.min_batch > distributed.world_size()
                       else "fewer samples than processes")
                warnings.warn(f"fit skips a training batch of {len(y)} sample(s) every epoch "
                              f"({why}); choose a batch_size that does not leave "
                              f"{len(y)} over to use every sample", stacklevel=4)
            run.dropped += len(y)
            continue
        if run.config.transform is not None:
            x = run.config.transform(x, run.aug_gen)
        yield distributed.shard((x, y))


def _check_divergence(run: _Run, loss: float, epoch: int) -> None:
    """Raise ``FloatingPointError`` (with ``.history``) on a NaN, infinite or absurd loss."""
    if run.loss_limit is None and math.isfinite(loss):
        run.loss_limit = DIVERGENCE_FACTOR * max(loss, 1.0)
    if math.isfinite(loss) and loss <= run.loss_limit:
        return
    why = f"became {loss}" if not math.isfinite(loss) else (
        f"reached {loss:.3g}, more than {DIVERGENCE_FACTOR:g} times the first batch's")
    lr = run.opt.param_groups[0]["lr"]
    kept = "its last finite weights (no step was taken on this loss)"
    if not all(bool(torch.isfinite(p).all()) for p in run.model.parameters()):
        run.model.load_state_dict(run.snapshot)  # a step overflowed: back to the epoch start
        kept = f"the weights it had at the start of epoch {epoch} (a step overflowed)"
    err = FloatingPointError(
        f"training diverged: the loss {why} in epoch {epoch}. The model keeps {kept}, "
        f"and err.history holds the epochs so far. To fix it, "
        f"lower the learning rate (lr={lr:g}; try lr={lr / 10:g}), or check the "
        f"data for NaN / huge values")
    err.history = run.history
    raise err


def _record(run: _Run, epoch: int, train_loss: float, train_acc: float,
            seconds: float) -> None:
    """Append the epoch's row and per-layer rows, checkpoint, call the callbacks."""
    test_loss, test_acc = _evaluate_epoch(run)
    run.history.epochs.append({
        "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
        f"{run.heldout}_loss": test_loss, f"{run.heldout}_acc": test_acc, "seconds": seconds,
        "lr": run.opt.param_groups[0]["lr"],
    })
    codes = _codes(run.model)
    for name, row in layer_stats(run.model).items():
        flips = None
        if name in codes and name in run.prev_codes:
            flips = int((codes[name] != run.prev_codes[name]).sum())
        run.history.layers.append({"epoch": epoch, "layer": name, **row, "flips": flips})
        _warn_negative_scales(run, name, row, epoch)
    run.prev_codes = codes
    if run.config.checkpoint is not None and distributed.is_main():
        checkpoint_lib.save(run.config.checkpoint, epoch, **run.run_state,
                            history=run.history.to_dict(), config=run.config.resume_key())
    for cb in run.config.callbacks:
        cb(run.history, run.model)
    if run.bar is not None and epoch > 0:
        run.bar.set_postfix({"epoch": epoch, f"{run.heldout}_acc": f"{test_acc:.4f}"})


def _evaluate_epoch(run: _Run) -> tuple[float, float]:
    """Test loss and accuracy of the (eager) model; NaN without test data."""
    if run.test is None:
        return float("nan"), float("nan")
    return evaluate(run.model, run.test, device=run.device)


def _warn_negative_scales(run: _Run, name: str, row: dict, epoch: int) -> None:
    for k in ("wp", "wn"):
        if k in row and row[k] <= 0 and (name, k) not in run.warned_negative:
            run.warned_negative.add((name, k))
            warnings.warn(f"TTQ scale {k} of layer {name!r} is {row[k]:.4g} <= 0 at "
                          f"epoch {epoch}: its ternary value has flipped sign. Try a "
                          f"lower learning rate.", stacklevel=4)


@contextlib.contextmanager
def _deterministic_algorithms(enabled: bool, device: torch.device):
    """Turn on PyTorch's deterministic algorithms (and cuDNN's) inside the block, then
    restore whatever was set before."""
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    env_key = "CUBLAS_WORKSPACE_CONFIG"
    set_env = device.type == "cuda" and env_key not in os.environ
    if set_env:
        os.environ[env_key] = ":4096:8"  # cuBLAS needs it for deterministic GEMMs
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2:]
        if set_env:
            os.environ.pop(env_key, None)


def _restore(directory, resume: bool, run_state: dict, config: dict) -> tuple[int, History]:
    """Load the newest checkpoint in ``directory`` into ``run_state``; return the first
    epoch still to train and the history so far (1 and an empty history if none)."""
    if checkpoint_lib.latest(directory) is None:
        return 1, History()
    if not resume:
        raise ValueError(f"{directory} already holds a training run; pass resume=True to "
                         f"continue it, or choose an empty checkpoint directory")
    state = checkpoint_lib.load(directory, **run_state)
    for key, value in config.items():
        if state["config"].get(key) != value:
            raise ValueError(f"cannot resume {directory} with {key}={value!r}: the run was "
                             f"started with {key}={state['config'].get(key)!r}")
    return state["step"] + 1, History(**state["history"])


def _scheduler(opt, lr_schedule, total: int, gamma: float):
    """MultiStepLR or cosine annealing over ``total`` epochs (or iterations);
    ``lr_schedule`` as FitConfig checked it."""
    if lr_schedule is None:
        return None
    if lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    return torch.optim.lr_scheduler.MultiStepLR(opt, sorted(lr_schedule), gamma)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # disable=None: no bar when the output is not a terminal (a log file, a pipe, CI); in
    # a notebook tqdm.auto draws a widget, which is always shown.
    in_notebook = any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)
    disable = False if in_notebook else None
    return tqdm(total=total, desc="fit", unit="batch", leave=False, disable=disable)

