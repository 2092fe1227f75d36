"""The papers' experiments as named recipes, with the papers' hyper-parameters.

    ttqlab reproduce --list
    ttqlab reproduce twn-mnist --device cuda                 # LeNet-5, MNIST, 30k iterations
    ttqlab reproduce ttq-cifar10-resnet20 --device cuda --out runs/ttq20
    ttqlab reproduce ttq-cifar10-resnet20 --device cuda --out runs/ttq20 --resume
    torchrun --nproc_per_node 4 -m ttqlab reproduce ttq-cifar10-resnet56 --device cuda

Each recipe downloads its dataset (MNIST or CIFAR-10), trains every phase (e.g. full
precision, then TTQ fine-tuning), saves the whole training state after every epoch into
``<out>/<phase>/`` and prints the paper's number next to the one it gets; ``--resume``
continues an interrupted run exactly where the last checkpoint left it. The settings,
and where a paper is silent what we chose instead, are in each recipe's ``notes``
(``ttqlab reproduce --list`` prints them). ``--max-epochs`` / ``--epochs-scale`` and
``--dataset-override synthetic`` give quick runs for testing; their numbers are not the
paper's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import checkpoint as checkpoint_lib
from . import data as datasets
from . import distributed, models
from .convert import quantize, quantized_layers
from .inq import INQ, SCHEDULES
from .train import History, fit
from .validation import check_bool, check_choice, check_int, check_number, check_path

__all__ = ["RECIPES", "CropFlip", "Recipe", "Run", "main", "run"]


class CropFlip:
    """CIFAR augmentation of He et al. (2016): pad 4 pixels, random 32x32 crop, random
    horizontal flip. A ``fit(transform=...)``: ``x' = flip?(crop(pad(x)))`` per sample.

    The padding is zeros of the normalized image, i.e. the dataset's mean colour.
    """

    def __init__(self, padding: int = 4):
        self.padding = check_int("padding", padding, low=0,
                                 hint="pixels on each side; He et al. (2016) pad 4")

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        n, _, h, w = x.shape
        p = self.padding
        padded = F.pad(x, (p, p, p, p)).permute(0, 2, 3, 1)      # n, h+2p, w+2p, c
        dy = torch.randint(0, 2 * p + 1, (n, 1), generator=generator)
        dx = torch.randint(0, 2 * p + 1, (n, 1), generator=generator)
        flip = torch.rand(n, 1, generator=generator) < 0.5
        rows = dy + torch.arange(h)                                 # n, h
        cols = torch.where(flip, dx + torch.arange(w - 1, -1, -1), dx + torch.arange(w))
        out = padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2).contiguous()

    def __repr__(self) -> str:
        return f"CropFlip(padding={self.padding})"


# --------------------------------------------------------------------------- running


@dataclass
class Run:
    """One execution of a recipe: where it writes, on what, and how long.

    ``fit`` trains one phase with checkpoints in ``out/<phase>``; a re-run with
    ``resume=True`` replays finished phases from their last checkpoint (no training)
    and continues the unfinished one.
    """

    recipe: Recipe
    out: Path
    resume: bool = False
    device: torch.device | None = None
    epochs_scale: float = 1.0
    max_epochs: int | None = None
    dataset: str | None = None
    seed: int = 0
    progress: bool = False
    verbose: bool = True
    baseline: bool = True
    compile: bool = False
    deterministic: bool = False
    callbacks: Sequence[Callable[[History, nn.Module], None]] = ()
    data_options: dict = field(default_factory=dict)
    phases: list[dict] = field(default_factory=list)
    _data: datasets.Data | None = None

    def data(self) -> datasets.Data:
        """The recipe's dataset (or the override), loaded once; rank 0 downloads first."""
        if self._data is None:
            if not distributed.is_main():
                distributed.barrier()
            self._data = datasets.load(self.dataset or self.recipe.dataset, seed=self.seed,
                                       **self.data_options)
            if distributed.is_main():
                distributed.barrier()
        return self._data

    def build(self, **kwargs) -> nn.Module:
        """A fresh float model of the recipe's architecture for this run's data."""
        d = self.data()
        return models.get(self.recipe.model, input_shape=d.input_shape,
                          num_classes=d.num_classes, seed=self.seed, **kwargs)

    def scaled_epochs(self, epochs: int) -> int:
        n = max(1, round(epochs * self.epochs_scale))
        return min(n, self.max_epochs) if self.max_epochs else n

    def fit(self, phase: str, model: nn.Module, *, epochs: int | None = None,
            iterations: int | None = None, milestones: Sequence[int] = (),
            batch_size: int, **fit_kwargs) -> float:
        """Train one phase; return its final test accuracy in percent.

        Give ``epochs`` (milestones in epochs) or ``iterations`` (milestones in
        iterations; the run lasts ``ceil(iterations / batches per epoch)`` epochs). A
        shortened run (``epochs_scale`` / ``max_epochs`` / a smaller dataset) scales the
        milestones by the same factor as the length.
        """
        if (epochs is None) == (iterations is None):
            raise ValueError("give epochs or iterations, not both")
        steps = math.ceil(len(self.data().train) / batch_size)
        unit = "epoch" if iterations is None else "iteration"
        full = epochs if iterations is None else math.ceil(iterations / steps)
        n = self.scaled_epochs(full)
        length = n if iterations is None else n * steps
        factor = length / (epochs if iterations is None else iterations)
        ms = sorted({max(1, round(m * factor)) for m in milestones if round(m * factor) < length})
        _same_run(self.out / phase, {
            "phase": phase, "epochs": n, "unit": unit, "batch_size": batch_size,
            "milestones": ms, "settings": {k: v for k, v in fit_kwargs.items()
                                           if k not in ("callbacks", "checkpoint_extra")},
            "quantized": {name: [q.method, getattr(q, "options", {})]
                          for name, _, q in quantized_layers(model)}}, self.resume)
        callbacks = list(self.callbacks)
        if self.verbose and distributed.is_main():
            callbacks.append(_printer(phase, n))
            decay = (f"x{fit_kwargs.get('gamma', 0.1)} after {unit}s {ms}" if ms
                     else "constant")
            print(f"[{phase}] {n} epoch{'s' * (n != 1)} ({n * steps} iterations of batch "
                  f"{batch_size}), lr {fit_kwargs.get('lr')} {decay}", flush=True)
        history = fit(model, self.data(), epochs=n, batch_size=batch_size,
                      lr_schedule=ms or None, schedule_unit=unit, seed=self.seed,
                      device=self.device, progress=self.progress and distributed.is_main(),
                      callbacks=callbacks, checkpoint=self.out / phase, resume=self.resume,
                      compile=self.compile, deterministic=self.deterministic, **fit_kwargs)
        acc = 100 * history.last["test_acc"]
        self.phases.append({"phase": phase, "epochs": n, "full epochs": full,
                            "iterations": n * steps, "batch_size": batch_size,
                            "milestones": ms, "unit": unit, "test_acc": acc,
                            "history": history.to_dict()})
        return acc


IDENTITY = "run.json"


def _same_run(directory: Path, identity: dict, resume: bool) -> None:
    """Record what defines a run (or a phase) in ``directory/run.json``; on resume,
    refuse a directory started with anything different, naming each difference.

    Without resume the record is written only where no checkpoint exists yet (``fit``
    refuses a directory that holds a run, and the record of that run is kept)."""
    identity = json.loads(json.dumps(identity, default=repr))
    path = directory / IDENTITY
    if resume and path.is_file():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot resume {directory}: its {IDENTITY} is unreadable ({e}); "
                             f"restore it or start afresh in another directory") from None
        saved = saved if isinstance(saved, dict) else {}
        diffs = [f"{k}: started with {saved.get(k)!r}, now {identity.get(k)!r}"
                 for k in sorted(set(saved) | set(identity)) if saved.get(k) != identity.get(k)]
        if diffs:
            raise ValueError(f"cannot resume {directory}: it holds a different run\n  "
                             + "\n  ".join(diffs)
                             + "\nResume with the same recipe and options, or choose "
                               "another output directory.")
        return
    if _holds_checkpoints(directory):
        return  # resume: an older ttqlab's run, no record; else fit refuses the directory
    if distributed.is_main():
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(identity, indent=1))


def _holds_checkpoints(directory: Path) -> bool:
    """Checkpoint files in ``directory`` or its phase folders."""
    if not directory.is_dir():
        return False
    return any(checkpoint_lib.list_checkpoints(d) for d in
               [directory, *(p for p in directory.iterdir() if p.is_dir())])


def _printer(phase: str, epochs: int):
    def show(history: History, model: nn.Module) -> None:
        r = history.last
        if r["epoch"] == 0:
            print(f"[{phase}] epoch 0/{epochs}: test acc {100 * r['test_acc']:.2f}%",
                  flush=True)
            return
        print(f"[{phase}] epoch {r['epoch']}/{epochs}: train loss {r['train_loss']:.4f}, "
              f"test acc {100 * r['test_acc']:.2f}%, lr {r['lr']:.3g}, "
              f"{r['seconds']:.1f}s", flush=True)
    return show


# --------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Recipe:
    """A paper's experiment: data, model, training phases and the published numbers."""

    name: str
    title: str
    dataset: str
    model: str
    reference: dict[str, float]  # method -> the paper's test accuracy (%)
    source: str
    notes: tuple[str, ...]
    train: Callable[[Run], dict[str, float]]

    def describe(self) -> str:
        ref = ", ".join(f"{k} {v:.2f}%" for k, v in self.reference.items()) or "none"
        lines = [f"{self.name}: {self.title}", f"  paper: {ref} ({self.source})"]
        return "\n".join(lines + [f"  - {n}" for n in self.notes])


SGD = {"optimizer": "sgd", "momentum": 0.9}

# TWN (Li et al. 2016) on MNIST: the authors' Caffe solver (lenet_tn_solver.prototxt)
TWN_MNIST = {"iterations": 30_000, "milestones": (15_000, 25_000), "batch_size": 50,
             "lr": 0.01, "weight_decay": 1e-4, **SGD}
# He et al. (2016) CIFAR ResNet: 64k iterations of batch 128 = 164 epochs, x0.1 at 32k, 48k
HE_CIFAR = {"epochs": 164, "milestones": (82, 123), "batch_size": 128, "lr": 0.1,
            "weight_decay": 1e-4, **SGD}
# TTQ fine-tuning: the authors' tw-cifar10-resnet.py (lr 0.1, x0.1 at 82, 123, 150; 400 epochs)
TTQ_CIFAR = {"epochs": 400, "milestones": (82, 123, 150), "batch_size": 128, "lr": 0.1,
             "weight_decay": 2e-4, **SGD}
INQ_STEP = {"epochs": 2, "lr": 1e-3, **SGD}  # re-training after each INQ step (our choice)


def _twn_mnist(run: Run) -> dict[str, float]:
    acc = {}
    if run.baseline:
        acc["fp32"] = run.fit("fp32", run.build(), **TWN_MNIST)
    model = quantize(run.build(), "twn", keep_first_last=False)
    acc["twn"] = run.fit("twn", model, **TWN_MNIST)
    return acc


def _twn_vgg7(run: Run) -> dict[str, float]:
    kw = {"epochs": 160, "milestones": (80, 120), "batch_size": 100, "lr": 0.1,
          "weight_decay": 1e-4, "transform": CropFlip(4), **SGD}
    acc = {}
    if run.baseline:
        acc["fp32"] = run.fit("fp32", run.build(), **kw)
    acc["twn"] = run.fit("twn", quantize(run.build(), "twn", keep_first_last=False), **kw)
    return acc


def _ttq_resnet(run: Run) -> dict[str, float]:
    model = run.build()
    acc = {"fp32": run.fit("fp32", model, **HE_CIFAR, transform=CropFlip(4))}
    quantize(model, "ttq", keep_first_last=False, exclude=("conv1",), t=0.05, init=1.0)
    acc["ttq"] = run.fit("ttq", model, **TTQ_CIFAR, transform=CropFlip(4))
    return acc


def _inq(pretrain: dict, batch_size: int, weight_decay: float, transform=None):
    def train(run: Run) -> dict[str, float]:
        extra = {} if transform is None else {"transform": transform}
        model = run.build()
        acc = {"fp32": run.fit("fp32", model, **pretrain, **extra)}
        inq = INQ(model, bits=5, schedule=SCHEDULES["default"], keep_first_last=False)
        for k in range(len(inq.schedule)):
            fraction = inq.step()
            acc[f"inq {fraction:g}"] = run.fit(
                f"inq-{k + 1}", model, **INQ_STEP, batch_size=batch_size,
                weight_decay=weight_decay, checkpoint_extra={"inq": inq}, **extra)
        acc["inq"] = acc.pop(f"inq {inq.fraction:g}")
        return acc
    return train


_COMMON_TWN = (
    "LeNet-5 is the authors' Caffe net: 32C5-MP2-64C5-MP2-512FC-10 with BatchNorm after "
    "each hidden layer; every conv and FC layer is ternarized, first and last included, "
    "as in the authors' LeNet demo (keep_first_last=False).",
    "Schedule from the authors' solver: SGD momentum 0.9, weight decay 1e-4, batch 50, lr "
    "0.01, x0.1 after 15k and 25k iterations, 30k iterations (25 epochs of 60k images).",
    "Differences: inputs are standardized (mean/std) where Caffe scales to [0, 1]; data is "
    "shuffled every epoch (Caffe reads the LMDB in order); PyTorch's default init instead "
    "of Xavier. The fp32 run uses the same schedule (--no-baseline skips it).",
)
_COMMON_CIFAR = (
    "CIFAR ResNet of He et al. 2016 (option-A shortcuts); the authors' TensorFlow code uses "
    "a pre-activation variant. Standard augmentation: 4-pixel zero padding, random 32x32 "
    "crop, random horizontal flip.",
    "Full-precision pre-training (the TTQ paper is silent on it): He et al.'s schedule, SGD "
    "momentum 0.9, weight decay 1e-4, batch 128, lr 0.1, x0.1 at epochs 82 and 123, 164 "
    "epochs.",
)


def _ttq_recipe(depth: int, fp_err: float, ttq_err: float) -> Recipe:
    return Recipe(
        name=f"ttq-cifar10-resnet{depth}",
        title=f"TTQ, ResNet-{depth} on CIFAR-10 (Zhu et al. 2017, Table 1)",
        dataset="cifar10", model=f"resnet{depth}",
        reference={"fp32": round(100 - fp_err, 2), "ttq": round(100 - ttq_err, 2)},
        source=f"Zhu et al. 2017, Table 1: error {fp_err}% fp32 / {ttq_err}% TTQ",
        notes=(
            *_COMMON_CIFAR,
            "TTQ fine-tuning from the pre-trained model as in the authors' "
            "tw-cifar10-resnet.py (the paper gives only lr 0.1, momentum 0.9, weight decay "
            "2e-4): batch 128, x0.1 at epochs 82, 123 and 150, 400 epochs; t = 0.05; W_p = "
            "W_n = 1.0 at the start (init=1.0); the first conv stays fp32, the last FC layer "
            "is ternarized.",
            "Difference: the authors' script also applies weight decay to W_p / W_n; "
            "ttqlab's optimizer does not decay scales.",
        ),
        train=_ttq_resnet)


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe(
        name="twn-mnist", title="TWN, LeNet-5 on MNIST (Li et al. 2016, Table 2)",
        dataset="mnist", model="lenet5", reference={"fp32": 99.41, "twn": 99.35},
        source="Li et al. 2016, Table 2", notes=_COMMON_TWN, train=_twn_mnist),
    Recipe(
        name="twn-cifar10-vgg7", title="TWN, VGG-7 on CIFAR-10 (Li et al. 2016, Table 2)",
        dataset="cifar10", model="vgg7", reference={"fp32": 92.88, "twn": 92.56},
        source="Li et al. 2016, Table 2",
        notes=("VGG-7: 2x(128C3)-MP2-2x(256C3)-MP2-2x(512C3)-MP2-1024FC-10 with BatchNorm; "
               "all layers ternarized.",
               "Paper: SGD momentum 0.9, weight decay 1e-4, batch 100, lr 0.1, x0.1 at "
               "epochs 80 and 120. The paper does not give the total: we train 160 epochs. "
               "Augmentation (ours; the paper is silent): 4-pixel pad, random crop, flip."),
        train=_twn_vgg7),
    _ttq_recipe(20, 8.23, 8.87), _ttq_recipe(32, 7.67, 7.63),
    _ttq_recipe(44, 7.18, 7.02), _ttq_recipe(56, 6.80, 6.44),
    Recipe(
        name="inq-mnist-lenet5", title="INQ 5-bit, LeNet-5 on MNIST",
        dataset="mnist", model="lenet5", reference={},
        source="the INQ paper reports ImageNet only: 5-bit INQ matches or beats its fp32 "
               "start (ResNet-18 top-1 error 31.73% -> 31.02%)",
        notes=("Pre-training: the twn-mnist schedule in full precision (SGD, 30k "
               "iterations).",
               "INQ as in the paper: 5 bits, accumulated fractions 0.5, 0.75, 0.875, 1.0, "
               "largest |W| first, every layer quantized (keep_first_last=False).",
               "Re-training between steps (the paper is silent for small nets): 2 epochs "
               "each (8 in all; the paper: 'fewer than 8 epochs' for 5 bits), SGD momentum "
               "0.9, lr 1e-3, weight decay 1e-4, batch 50."),
        train=_inq({k: v for k, v in TWN_MNIST.items()}, 50, 1e-4)),
    Recipe(
        name="inq-cifar10-resnet20", title="INQ 5-bit, ResNet-20 on CIFAR-10",
        dataset="cifar10", model="resnet20", reference={},
        source="the INQ paper reports ImageNet only: 5-bit INQ matches or beats its fp32 "
               "start (ResNet-18 top-1 error 31.73% -> 31.02%)",
        notes=(
            *_COMMON_CIFAR,
            "INQ as in the paper: 5 bits, accumulated fractions 0.5, 0.75, 0.875, 1.0, "
            "largest |W| first, every layer quantized (first conv and last FC included).",
            "Re-training between steps (our choice; the paper gives ImageNet settings "
            "only): 2 epochs each, SGD momentum 0.9, lr 1e-3, weight decay 1e-4, batch 128, "
            "same augmentation."),
        train=_inq(HE_CIFAR, 128, 1e-4, transform=CropFlip(4))),
]}


# --------------------------------------------------------------------------- entry points


def _machine(device: torch.device | None) -> dict:
    info = {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__,
            "device": str(device or "cpu"), "processes": distributed.world_size()}
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run(name: str, out: str | os.PathLike | None = None, *, resume: bool = False,
        device: str | torch.device | None = None, epochs_scale: float = 1.0,
        max_epochs: int | None = None, dataset: str | None = None, seed: int = 0,
        baseline: bool = True, progress: bool = False, verbose: bool = True,
        callbacks: Iterable[Callable[[History, nn.Module], None]] = (),
        compile: bool = False, deterministic: bool = False,
        **data_options) -> dict:
    """Run recipe ``name``; return (and write to ``out/result.json``) what it measured.

    Args:
        name: a key of ``RECIPES`` (``ttqlab reproduce --list``).
        out: the run directory (default ``runs/<name>``); one checkpoint folder per phase.
        resume: continue an interrupted run in ``out`` exactly. ``out/run.json`` and
            ``out/<phase>/run.json`` record what defines the run (recipe, dataset and its
            sizes, model, seed, shortening; per phase its length, optimizer settings and
            quantization method and options); resuming with anything different is
            refused with a ``ValueError`` naming the differences.
        device: ``"cuda"`` recommended; under torchrun each process takes its own GPU.
        epochs_scale, max_epochs: shorten every phase (a quick run, not the paper's).
        dataset: train on another dataset (``"synthetic"`` for a test run).
        seed: same seed, same numbers.
        baseline: also train the full-precision comparison where a recipe has a separate
            one (TWN); TTQ and INQ always pre-train in full precision.
        compile: train through ``torch.compile`` (``fit(compile=True)``).
        deterministic: PyTorch's deterministic algorithms only (``fit(deterministic=True)``):
            on a GPU, what makes ``resume`` bit-exact.
        **data_options: passed to ``ttqlab.data.load`` (``limit_train``, ``root``, ...).

    Returns:
        ``{"recipe", "reference", "measured", "phases", "conditions"}``.
    """
    check_choice("name", name, sorted(RECIPES), hint="a recipe; ttqlab reproduce --list "
                                                     "describes each")
    epochs_scale = check_number("epochs_scale", epochs_scale, low=0, low_open=True,
                                hint="1 is the paper's schedule, 0.1 a tenth of it")
    max_epochs = check_int("max_epochs", max_epochs, low=1, none_ok=True,
                           hint="None runs every phase as the recipe (and epochs_scale) says")
    seed = check_int("seed", seed)
    resume, baseline, progress, verbose, compile, deterministic = (
        check_bool(flag, value) for flag, value in (
            ("resume", resume), ("baseline", baseline), ("progress", progress),
            ("verbose", verbose), ("compile", compile), ("deterministic", deterministic)))
    recipe = RECIPES[name]
    out = check_path("out", out) if out is not None else Path("runs") / name
    r = Run(recipe, out, resume=resume, device=torch.device(device) if device else None,
            epochs_scale=epochs_scale, max_epochs=max_epochs, dataset=dataset, seed=seed,
            progress=progress, verbose=verbose, baseline=baseline,
            callbacks=list(callbacks), data_options=data_options, compile=compile,
            deterministic=deterministic)
    d = r.data()
    _same_run(out, {"recipe": name, "dataset": d.name, "train": len(d.train),
                    "test": len(d.test), "input_shape": list(d.input_shape),
                    "num_classes": d.num_classes, "model": recipe.model, "seed": seed,
                    "epochs_scale": epochs_scale, "max_epochs": max_epochs,
                    "baseline": baseline,
                    "data": {k: v for k, v in data_options.items() if k != "root"}}, resume)
    measured = recipe.train(r)
    full = (epochs_scale == 1.0 and max_epochs is None and dataset is None
            and not set(data_options) - {"root"})
    result = {
        "recipe": name, "title": recipe.title, "source": recipe.source,
        "reference": recipe.reference, "measured": measured, "notes": list(recipe.notes),
        "conditions": {"dataset": d.name, "train": len(d.train), "test": len(d.test),
                       "model": recipe.model, "seed": seed, "full recipe": full,
                       "epochs": {p["phase"]: p["epochs"] for p in r.phases},
                       "machine": _machine(r.device)},
        "phases": r.phases,
    }
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps(result, indent=1))
        if verbose:
            print(format_result(result))
    return result


def format_result(result: dict) -> str:
    """The paper's numbers next to ours, plus the conditions, as text."""
    c = result["conditions"]
    lines = [f"{result['title']}",
             f"{c['dataset']} ({c['train']} train / {c['test']} test), model {c['model']}, "
             f"seed {c['seed']}, epochs {c['epochs']}, on {c['machine']['device']} x"
             f"{c['machine']['processes']}"]
    if not c["full recipe"]:
        lines.append("NOTE: a shortened or substituted run; not comparable to the paper.")
    lines.append(f"{'method':<12}{'paper (%)':>12}{'ttqlab (%)':>12}")
    for method, acc in result["measured"].items():
        ref = result["reference"].get(method)
        lines.append(f"{method:<12}{'-' if ref is None else f'{ref:.2f}':>12}{acc:>12.2f}")
    lines.append(f"paper: {result['source']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def main(args: argparse.Namespace) -> int:
    """``ttqlab reproduce`` (also under ``torchrun``; its parser:
    ``ttqlab.cli.add_reproduce_parser``, built without importing PyTorch)."""
    if args.list or args.name is None:
        print("\n\n".join(r.describe() for r in RECIPES.values()))
        return 0
    device = distributed.init_from_env(args.device)
    options = {}
    if args.limit_train:
        options["limit_train"] = args.limit_train
    if args.data_root:
        options["root"] = args.data_root
    try:
        run(args.name, args.out, resume=args.resume, device=device,
            epochs_scale=args.epochs_scale, max_epochs=args.max_epochs,
            dataset=args.dataset_override, seed=args.seed, baseline=not args.no_baseline,
            progress=args.progress, compile=args.compile,
            deterministic=args.deterministic, **options)
    except KeyboardInterrupt:
        print("\ninterrupted; continue with the same command plus --resume",
              file=sys.stderr)
        return 130
    finally:
        if distributed.world_size() > 1:
            torch.distributed.destroy_process_group()
    return 0
