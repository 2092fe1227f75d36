"""One training loop for every method: ``fit`` and its ``History``.

``fit`` is an ordinary PyTorch loop (forward, cross-entropy, backward, optimizer step).
Quantization lives in the model's parametrizations, so nothing here is method-specific
except the per-layer statistics it records after every epoch: sparsity, scales
(alpha, or W_p / W_n, or the fraction INQ has frozen) and how many weights changed their
quantized value ("flips") since the previous epoch.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from . import checkpoint as checkpoint_lib
from . import coverage, distributed
from .convert import latent_weight, quantized_layers
from .layers import INQWeight, TTQWeight

__all__ = ["History", "evaluate", "fit", "layer_stats", "make_optimizer"]


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
    for name, module, q in quantized_layers(model):
        w = module.weight
        row = {"method": q.method, "sparsity": float((w == 0).sum()) / max(1, w.numel())}
        if isinstance(q, TTQWeight):
            sc = q.scales()  # the effective W_p, W_n
            row["wp"], row["wn"] = sc["wp"].item(), sc["wn"].item()
        elif isinstance(q, INQWeight):
            row["frozen"] = q.fraction_frozen
        else:  # alpha (binary, twn) or gamma (bitnet)
            row.update({k: float(v.mean()) for k, v in q.scales(latent_weight(module)).items()})
        out[name] = row
    return out


def _codes(model: nn.Module) -> dict[str, Tensor]:
    codes = {}
    with torch.no_grad():
        for name, module, q in quantized_layers(model):
            if not isinstance(q, INQWeight):
                codes[name] = q.codes(latent_weight(module)).cpu()
    return codes


# --------------------------------------------------------------------------- history


@dataclass
class History:
    """What ``fit`` measured.

    ``epochs``: one dict per epoch (epoch 0 = before training) with ``train_loss``,
    ``train_acc``, ``test_loss``, ``test_acc``, ``seconds``, ``lr``.
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
        cols = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"]
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
        return (f"History({len(self.epochs) - 1} epochs, test_acc={last['test_acc']:.4f}, "
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


def _check_positive(value, name: str, kind=int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (
        kind is int and not float(value).is_integer()
    ):
        raise ValueError(f"{name} must be a positive {kind.__name__}, got {value!r}")


def fit(
    model: nn.Module,
    train,
    test=None,
    *,
    epochs: int = 5,
    lr: float = 1e-3,
    optimizer: str | torch.optim.Optimizer = "adam",
    batch_size: int = 64,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    lr_schedule: str | Sequence[int] | None = None,
    gamma: float = 0.1,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    callbacks: Iterable[Callable[[History, nn.Module], None]] = (),
    schedule_unit: str = "epoch",
    transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    checkpoint_extra: dict | None = None,
) -> History:
    """Train ``model`` on ``train`` and report on ``test`` after every epoch.

    Args:
        model: any classifier returning logits; quantized or not.
        train, test: a ``Dataset``, a ``DataLoader``, an ``(x, y)`` tensor pair, or a
            ``ttqlab.data.Data`` (then ``test`` defaults to its test split).
        epochs, lr, batch_size, weight_decay, momentum: the usual. Under ``torchrun``,
            ``batch_size`` is the global batch, split over the processes.
        optimizer: ``"adam"`` (default), ``"sgd"`` (momentum) or your own optimizer.
        lr_schedule: ``None`` (constant), ``"cosine"`` (anneal to 0 over the run) or a
            list of milestones at which the learning rate is multiplied by ``gamma``
            (the papers' step schedules).
        schedule_unit: ``"epoch"`` (default): milestones count epochs; ``"iteration"``:
            they count optimizer steps and the schedule advances after every batch
            (TWN's "x0.1 at 15k and 25k iterations").
        seed: seeds shuffling, ``transform`` and ``torch.manual_seed``; same seed, same
            numbers.
        device: default the model's device; the model is moved there.
        progress: show a tqdm progress bar.
        callbacks: called as ``cb(history, model)`` after every epoch (and epoch 0),
            e.g. a live dashboard from ``ttqlab.widgets``.
        transform: data augmentation, ``transform(x, generator) -> x`` on each training
            batch (CPU tensors), drawing its randomness from ``generator`` (seeded, and
            saved in checkpoints), e.g. ``ttqlab.reproduce.CropFlip(4)``.
        checkpoint: a run directory; the whole training state (weights, scales, INQ
            masks, optimizer, scheduler, RNGs, history) is saved there after every epoch
            (``ttqlab.checkpoint``, no pickle).
        resume: continue from the newest checkpoint in ``checkpoint`` if there is one
            (a finished run is loaded and returned without training). Without it, a
            ``checkpoint`` directory that already holds a run is an error.
        checkpoint_extra: further objects with ``state_dict`` / ``load_state_dict``
            saved and restored with the run, e.g. ``{"inq": inq}``.

    Returns:
        a :class:`History`; epoch 0 is the model before training.
    """
    if hasattr(train, "train") and hasattr(train, "test") and not isinstance(train, nn.Module):
        train, test = train.train, (test if test is not None else train.test)
    train = _as_dataset(train, "train")
    test = _as_dataset(test, "test")
    if train is None:
        raise ValueError("train data is required")
    _check_positive(epochs, "epochs")
    _check_positive(batch_size, "batch_size")
    _check_positive(lr, "lr", float)
    if schedule_unit not in ("epoch", "iteration"):
        raise ValueError(f"schedule_unit must be 'epoch' or 'iteration', got {schedule_unit!r}")
    if checkpoint is None and (resume or checkpoint_extra):
        raise ValueError("resume and checkpoint_extra need checkpoint=DIR, the run directory")
    if batch_size < distributed.world_size():
        raise ValueError(f"batch_size ({batch_size}) is the global batch and must be at "
                         f"least the number of processes ({distributed.world_size()})")
    device = torch.device(device) if device else _device_of(model)
    model.to(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1)
    if isinstance(optimizer, torch.optim.Optimizer):
        opt = optimizer
        coverage.check_optimizer(model, opt)  # warn: parameters the optimizer misses
    else:
        opt = make_optimizer(model, optimizer, lr, weight_decay, momentum)
    per_iteration = schedule_unit == "iteration"
    steps = _num_batches(train, batch_size)
    sched = _scheduler(opt, lr_schedule, epochs * steps if per_iteration else epochs, gamma)

    history = History()
    callbacks = list(callbacks)
    run_state = {"model": model, "optimizer": opt, "shuffle": gen, "augment": aug_gen,
                 **({"scheduler": sched} if sched is not None else {}),
                 **(checkpoint_extra or {})}
    config = {"batch_size": batch_size, "seed": seed, "schedule_unit": schedule_unit}
    first = 1
    if checkpoint is not None:
        first, history = _restore(checkpoint, resume, run_state, config)
        distributed.barrier()  # every rank has read the directory before rank 0 writes
    net = distributed.wrap(model, device)  # under torchrun: DDP, rank 0's weights everywhere
    prev_codes = _codes(model)
    warned_negative: set[str] = set()

    def record(epoch, train_loss, train_acc, seconds):
        test_loss, test_acc = evaluate(model, test, device=device) if test is not None else (
            float("nan"), float("nan"))
        history.epochs.append({
            "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
            "test_loss": test_loss, "test_acc": test_acc, "seconds": seconds,
            "lr": opt.param_groups[0]["lr"],
        })
        codes = _codes(model)
        for name, row in layer_stats(model).items():
            flips = None
            if name in codes and name in prev_codes:
                flips = int((codes[name] != prev_codes[name]).sum())
            history.layers.append({"epoch": epoch, "layer": name, **row, "flips": flips})
            for k in ("wp", "wn"):
                if k in row and row[k] <= 0 and (name, k) not in warned_negative:
                    warned_negative.add((name, k))
                    warnings.warn(f"TTQ scale {k} of layer {name!r} is {row[k]:.4g} <= 0 at "
                                  f"epoch {epoch}: its ternary value has flipped sign. Try a "
                                  f"lower learning rate.", stacklevel=3)
        prev_codes.clear()
        prev_codes.update(codes)
        if checkpoint is not None and distributed.is_main():
            checkpoint_lib.save(checkpoint, epoch, **run_state, history=history.to_dict(),
                                config=config)
        for cb in callbacks:
            cb(history, model)

    if first == 1:
        nan = float("nan")
        record(0, nan, nan, 0.0)
    bar = _progress((epochs - first + 1) * steps, progress and distributed.is_main())
    try:
        for epoch in range(first, epochs + 1):
            model.train()
            start = time.perf_counter()
            loss_sum, correct, total = 0.0, 0, 0
            for x, y in _training_batches(train, batch_size, gen, transform, aug_gen):
                x, y = x.to(device), y.to(device)
                out = net(x)
                loss = F.cross_entropy(out, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if per_iteration and sched is not None:
                    sched.step()
                lv = loss.item()
                if not math.isfinite(lv):
                    raise FloatingPointError(
                        f"loss became {lv} in epoch {epoch}; lower the learning rate "
                        f"(lr={lr}) or check the data")
                loss_sum += lv * len(y)
                correct += int((out.argmax(1) == y).sum())
                total += len(y)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{lv:.3f}", refresh=False)
            if sched is not None and not per_iteration:
                sched.step()
            distributed.broadcast_buffers(model)
            loss_sum, correct, total = distributed.all_reduce_sum([loss_sum, correct, total])
            record(epoch, loss_sum / total, correct / total, time.perf_counter() - start)
            if bar is not None:
                bar.set_postfix(epoch=epoch, test_acc=f"{history.last['test_acc']:.4f}")
    finally:
        if bar is not None:
            bar.close()
    return history


def _training_batches(train, batch_size: int, gen: torch.Generator, transform,
                      aug_gen: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of shuffled, augmented mini-batches; under torchrun, this process's
    slice of each (every process draws the same batches and augmentations)."""
    for x, y in _batches(train, batch_size, True, gen):
        if len(y) < distributed.world_size():
            continue  # too small to split over the processes (every rank skips it)
        if transform is not None:
            x = transform(x, aug_gen)
        yield distributed.shard((x, y))


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
    """MultiStepLR or cosine annealing over ``total`` epochs (or iterations)."""
    if lr_schedule is None:
        return None
    if lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if isinstance(lr_schedule, str) or not all(
            isinstance(m, int) and m > 0 for m in lr_schedule):
        raise ValueError(f"lr_schedule must be None, 'cosine' or a list of positive epoch "
                         f"numbers such as [15, 25], got {lr_schedule!r}")
    return torch.optim.lr_scheduler.MultiStepLR(opt, sorted(lr_schedule), gamma)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="fit", unit="batch", leave=False)


def iterate_batches(data, batch_size: int = 64, shuffle: bool = False,
                    seed: int = 0) -> Iterator[tuple[Tensor, ...]]:
    """The mini-batches ``fit`` would draw (for notebooks and custom loops)."""
    gen = torch.Generator().manual_seed(seed)
    yield from _batches(_as_dataset(data, "data"), batch_size, shuffle, gen)
