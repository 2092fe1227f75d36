"""Converged full-precision starts, trained once and cached.

The papers quantize networks that full precision has already trained to convergence (TTQ
fine-tunes its CIFAR ResNets, INQ always starts from a trained model). A start here is a
float model trained by a `Recipe` until its validation accuracy has plateaued; `pretrain`
trains it, or reads it back from the cache if the very same start was trained before.

The cache key is a SHA-256 of everything that determines the weights: the training and
validation tensors themselves, the fresh model's architecture and initial weights, the
recipe, the seed, the torch version and this cache's format. Change any of them and the
key changes. An entry is two files in ``ttqlab.data.cache_dir() / "starts"``:
``start-KEY.safetensors`` (the state_dict, no pickle) and ``start-KEY.json`` (the recipe,
the training curve and the SHA-256 of both files). An entry is used only if every check
passes (sizes bounded before reading, checksums, the exact names, shapes and dtypes of
the fresh model); a damaged or foreign entry is rebuilt, never used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .train import History, fit
from .validation import check_bool, check_int, check_number, check_seeds, is_number

__all__ = ["FORMAT", "Recipe", "Start", "cache_key", "pretrain", "pretrain_seeds"]

#: bump when what an entry holds, or how the key is made, changes
FORMAT = 1
_MAX_MANIFEST = 1 << 20  # bytes: a manifest is a few KB (the recipe and one curve)


@dataclass(frozen=True)
class Recipe:
    """How a full-precision start is trained to its plateau (``fit``'s arguments).

    The default is measured on ``cnn1d`` / MNIST-1D (README, "Why this protocol"): Adam at
    1e-2 with a cosine schedule over 40 epochs reaches the validation accuracy that
    constant 1e-3 needs more than 80 epochs to approach.
    """

    epochs: int = 40
    lr: float = 1e-2
    optimizer: str = "adam"
    lr_schedule: str | None = "cosine"
    batch_size: int = 64
    weight_decay: float = 0.0

    def __post_init__(self):
        # normalised (numpy's ints and floats to python's) so that the recipe writes as JSON
        object.__setattr__(self, "epochs", check_int("Recipe.epochs", self.epochs, low=1))
        lr = check_number("Recipe.lr", self.lr, low=0, low_open=True, hint="e.g. 1e-2")
        if not isinstance(self.lr, (int, float)):  # an int lr keeps its cache key
            object.__setattr__(self, "lr", lr)
        object.__setattr__(self, "batch_size",
                           check_int("Recipe.batch_size", self.batch_size, low=1))
        wd = check_number("Recipe.weight_decay", self.weight_decay, low=0)
        if not isinstance(self.weight_decay, (int, float)):
            object.__setattr__(self, "weight_decay", wd)
        if not isinstance(self.optimizer, str):
            raise ValueError(f"Recipe.optimizer must be a name such as 'adam' or 'sgd' (a "
                             f"cached start needs a recipe that can be written down), "
                             f"got {self.optimizer!r}")

    def fit_kwargs(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        sched = {None: "constant lr", "cosine": "cosine schedule"}.get(
            self.lr_schedule, f"lr x0.1 at epochs {self.lr_schedule}")
        wd = f", weight decay {self.weight_decay:g}" if self.weight_decay else ""
        return (f"{self.epochs} epochs, {self.optimizer} lr {self.lr:g}, {sched}, batch "
                f"{self.batch_size}{wd}")


@dataclass
class Start:
    """A trained full-precision model and how it came to be."""

    model: nn.Module
    history: History  # the pre-training curve (validation accuracy per epoch)
    seconds: float    # what training it cost (also when it was read from the cache)
    cached: bool      # True when read back from the cache instead of trained now
    key: str
    recipe: Recipe
    seed: int

    @property
    def plateau(self) -> dict:
        """Held-out accuracy (%) at the end and its gain over the last quarter of the
        epochs: a converged start gains little."""
        h = self.history
        key = f"{h.heldout}_acc"
        accs = h[key]
        last = accs[-1]
        earlier = accs[max(0, len(accs) - 1 - max(1, self.recipe.epochs // 4))]
        return {"split": h.heldout, "final": 100 * last, "gain_last_quarter":
                100 * (last - earlier)}


def _digest_tensors(h, tensors) -> None:
    for t in tensors:
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def cache_key(model: nn.Module, data, recipe: Recipe, seed: int) -> str:
    """SHA-256 (hex) of the fresh ``model`` (architecture and initial weights), the data
    (training and validation tensors), ``recipe``, ``seed``, torch's version and `FORMAT`."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT, "torch": torch.__version__, "seed": seed,
                         "recipe": dataclasses.asdict(recipe), "arch": repr(model)},
                        sort_keys=True).encode())
    for name, value in model.state_dict().items():
        h.update(name.encode())
        _digest_tensors(h, [value])
    for split in ("train", "val"):
        ds = getattr(data, split, None)
        h.update(split.encode())
        if ds is not None:
            _digest_tensors(h, ds.tensors)
    return h.hexdigest()


def pretrain(build: Callable[[int], nn.Module], data, seed: int, recipe: Recipe | None = None,
             *, cache: bool = True, root: str | os.PathLike | None = None,
             progress: bool = False, device=None) -> Start:
    """The full-precision model ``build(seed)`` trained on ``data`` by ``recipe`` (default
    `Recipe()`), from the cache when the same start was trained before.

    ``data`` should have a validation split (``data.split_validation()``): the curve the
    start records, and everything chosen from it, is then on validation, never on test.
    ``cache=False`` always trains and writes nothing; ``root`` is the cache folder
    (default ``ttqlab.data.cache_dir()``: ``$TTQLAB_DATA`` or ``./data``).
    """
    from .data import cache_dir

    recipe = Recipe() if recipe is None else recipe
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a ttqlab.starts.Recipe, got {type(recipe).__name__}")
    seed = check_int("seed", seed)  # a python int: it is written into the cache key
    cache = check_bool("cache", cache)
    model = build(seed)
    key = cache_key(model, data, recipe, seed)
    folder = cache_dir(root) / "starts" if cache else None
    if folder is not None:
        found = _read(folder, key, model)
        if found is not None:
            history, seconds = found
            return Start(model, history, seconds, True, key, recipe, seed)
    start = time.perf_counter()
    history = fit(model, data, seed=seed, progress=progress, device=device,
                  **recipe.fit_kwargs())
    seconds = time.perf_counter() - start
    if folder is not None:
        _write(folder, key, model, history, seconds, recipe, seed)
    return Start(model, history, seconds, False, key, recipe, seed)


def pretrain_seeds(build: Callable[[int], nn.Module], data, seeds: Sequence[int],
                   recipe: Recipe | None = None, *, cache: bool = True,
                   root: str | os.PathLike | None = None, progress: bool = True,
                   device=None) -> list[Start]:
    """`pretrain` for each seed in ``seeds``, in order, with one progress bar over the seeds
    (``tqdm.auto``: a widget in a notebook; cached starts tick by at once)."""
    from tqdm.auto import tqdm

    seeds = check_seeds(seeds)
    progress = check_bool("progress", progress)
    out = []
    for seed in tqdm(seeds, desc="full-precision starts", unit="seed", disable=not progress):
        out.append(pretrain(build, data, seed, recipe, cache=cache, root=root, device=device))
    return out


def _paths(folder: Path, key: str) -> tuple[Path, Path]:
    return folder / f"start-{key}.safetensors", folder / f"start-{key}.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest_digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _write(folder: Path, key: str, model: nn.Module, history: History, seconds: float,
           recipe: Recipe, seed: int) -> None:
    """Write the entry atomically (temporary files, then rename): a crash leaves either
    the whole entry or none."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights, manifest_path = _paths(folder, key)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
    os.close(fd)
    try:
        save_file(state, tmp)
        manifest = {"format": FORMAT, "key": key, "seed": seed,
                    "recipe": dataclasses.asdict(recipe), "torch": torch.__version__,
                    "seconds": seconds, "bytes": os.path.getsize(tmp),
                    "sha256": _sha256(Path(tmp)), "history": history.to_dict()}
        manifest["manifest_sha256"] = _manifest_digest(manifest)
        os.replace(tmp, weights)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
        with os.fdopen(fd, "w") as f:
            json.dump(manifest, f)
        os.replace(tmp, manifest_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _expected_bytes(model: nn.Module) -> int:
    """An upper bound on the entry's safetensors size: the tensors plus a generous header."""
    state = model.state_dict()
    return sum(v.numel() * v.element_size() for v in state.values()) + 256 * (len(state) + 4)


def _read(folder: Path, key: str, model: nn.Module) -> tuple[History, float] | None:
    """Load the entry into ``model`` and return (history, seconds), or None (after a
    warning if an entry was there but failed a check): nothing is changed unless every
    check has passed."""
    weights, manifest_path = _paths(folder, key)
    if not weights.exists() and not manifest_path.exists():
        return None
    try:
        state, history, seconds = _checked_entry(weights, manifest_path, key, model)
    except (OSError, ValueError, KeyError, TypeError) as err:
        warnings.warn(f"ttqlab.starts: ignoring the cached start {weights.name} ({err}); "
                      f"training it again", stacklevel=3)
        return None
    model.load_state_dict(state, strict=True)
    return history, seconds


def _checked_entry(weights: Path, manifest_path: Path, key: str, model: nn.Module):
    from safetensors.torch import load_file

    if manifest_path.is_symlink() or weights.is_symlink():
        raise ValueError("a cache entry is a symbolic link")
    if manifest_path.stat().st_size > _MAX_MANIFEST:
        raise ValueError(f"manifest larger than {_MAX_MANIFEST} bytes")
    manifest = json.loads(manifest_path.read_text())
    if not isinstance(manifest, dict):
        raise ValueError("manifest is not a JSON object")
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise ValueError("manifest checksum mismatch (damaged)")
    if manifest.get("format") != FORMAT or manifest.get("key") != key:
        raise ValueError("manifest of another format or another start")
    size = weights.stat().st_size
    if size != manifest.get("bytes") or size > _expected_bytes(model):
        raise ValueError(f"weights file of {size} bytes, expected {manifest.get('bytes')}")
    if _sha256(weights) != manifest.get("sha256"):
        raise ValueError("weights checksum mismatch (damaged)")
    state = load_file(str(weights))
    fresh = model.state_dict()
    if set(state) != set(fresh):
        raise ValueError("the weights are of another model (different tensor names)")
    for k, v in fresh.items():
        if state[k].shape != v.shape or state[k].dtype != v.dtype:
            raise ValueError(f"{k}: {state[k].dtype} {tuple(state[k].shape)} in the file, "
                             f"{v.dtype} {tuple(v.shape)} in the model")
        if v.is_floating_point() and not torch.isfinite(state[k]).all():
            raise ValueError(f"{k} holds NaN or infinite values")
    h = manifest.get("history")
    if not isinstance(h, dict) or not isinstance(h.get("epochs"), list) or \
            not all(isinstance(r, dict) for r in h["epochs"]) or not h["epochs"]:
        raise ValueError("manifest has no training curve")
    seconds = manifest.get("seconds")
    if not is_number(seconds):
        raise ValueError("manifest has no training time")
    return state, History(epochs=h["epochs"], layers=list(h.get("layers") or [])), \
        float(seconds)
