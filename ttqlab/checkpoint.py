"""Save a whole training run and resume it exactly, without pickle.

A checkpoint is two files in a run directory::

    checkpoint-000007.safetensors   every tensor: weights, W_p / W_n, INQ masks, optimizer
                                    moments, the shuffling generator, torch's RNG state
    checkpoint-000007.json          everything else: the step, history, scheduler and INQ
                                    position, optimizer hyper-parameters, python / numpy
                                    RNG states, the tensor file's name and SHA-256, and
                                    the SHA-256 of this JSON itself (``checksum``)

    ckpt = ttqlab.checkpoint
    ckpt.save("runs/a", 7, model=model, optimizer=opt, scheduler=sched, history={...})
    state = ckpt.load("runs/a", model=model, optimizer=opt, scheduler=sched)
    state["step"], state["history"]          # 7, the plain values saved alongside

Objects with ``state_dict()`` / ``load_state_dict()`` (models, optimizers, schedulers,
``ttqlab.INQ``) and ``torch.Generator`` s are restored in place by ``load``; anything else
(numbers, strings, lists, dicts, tensors) comes back in the returned dict.

Writes are atomic: each file goes to a temporary name, is flushed to disk and then
renamed over (``os.replace``), the tensor file first and the .json last. A checkpoint
counts only once its .json exists and the tensor file matches the SHA-256 recorded
there, so an interruption at any moment leaves the previous checkpoint usable; older
checkpoints are removed only after the new one is complete.

Integrity: the .json records the SHA-256 of the tensor file and of its own canonical
JSON (without the ``checksum`` field), so a damaged or edited byte in either is reported,
not restored. Version-1 checkpoints (before the JSON checksum) still load, with a warning
that their JSON is unchecked. The checksums detect accidents, not a forger. Independently
of them, ``load`` decodes only what ``save`` writes: numpy arrays of plain numeric dtypes
(:data:`NDARRAY_DTYPES`), whose size is bounded by the JSON text, and it validates every
part (weights, optimizer, python / numpy / torch / CUDA RNG states) before it restores
any, so a damaged checkpoint raises :class:`CheckpointError` and changes nothing.

A run directory may be a symlink to a directory: it is followed (the files are written
and read inside its target, with the same atomic renames).

Damaged files are not trusted and not silently ignored: ``latest`` skips a checkpoint
that is incomplete, corrupt, of another format or of a newer format version with a
warning naming it, and raises :class:`CheckpointError` when a directory holds checkpoint
files but none is usable (rather than letting a resumed run start over and overwrite
the evidence). ``save`` removes temporary files left by a killed writer and tensor files
whose .json never got written.

Only ``safetensors`` and ``json`` are read back: no pickle, so a checkpoint from someone
else cannot run code on your machine. Non-JSON Python values (tuples, bytes, dicts with
int keys, ``Counter`` s, numpy arrays) are written as small tagged JSON objects.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .validation import check_bool, check_int, check_path, is_int

__all__ = ["CheckpointError", "latest", "list_checkpoints", "load", "save"]

FORMAT = "ttqlab-checkpoint"
VERSION = 2
#: the numpy dtypes a checkpoint stores arrays in (no sub-array, string or object dtypes)
NDARRAY_DTYPES = frozenset(["bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                            "uint32", "uint64", "float16", "float32", "float64",
                            "complex64", "complex128"])
_NAME = re.compile(r"^checkpoint-(\d+)\.json$")
_TENSORS = re.compile(r"^checkpoint-(\d+)\.safetensors$")
_TMP = re.compile(r"^\.checkpoint-\d+\.(json|safetensors)\.tmp-(\d+)$")
_TAGS = ("__tensor__", "__tuple__", "__bytes__", "__items__", "__counter__", "__ndarray__")


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one that does not fit the objects it is loaded into."""


# --------------------------------------------------------------------------- encoding


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``obj`` as JSON, with every tensor moved to ``tensors`` under its path."""
    if isinstance(obj, torch.Tensor):
        if path in tensors:
            raise CheckpointError(f"two values map to the tensor name {path!r}")
        tensors[path] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": path}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        if str(obj.dtype) not in NDARRAY_DTYPES:
            raise CheckpointError(f"cannot save a numpy array of dtype {obj.dtype} at {path!r}: "
                                  f"checkpoints hold arrays of {sorted(NDARRAY_DTYPES)}; "
                                  f"save a list or convert it (arr.astype(...))")
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, bytes):
        return {"__bytes__": obj.hex()}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        items = [[_encode(k, f"{path}/key{i}", tensors), _encode(v, f"{path}/{k}", tensors)]
                 for i, (k, v) in enumerate(obj.items())]
        if isinstance(obj, collections.Counter):
            return {"__counter__": items}
        if all(isinstance(k, str) and k not in _TAGS for k in obj):
            return {k: v for k, v in zip(obj, (v for _, v in items))}
        return {"__items__": items}  # int keys (optimizer state) and the like
    raise CheckpointError(f"cannot save a value of type {type(obj).__name__} at {path!r}: "
                          f"checkpoints hold tensors, numbers, strings, bytes, lists, "
                          f"tuples, dicts and numpy arrays (no pickle)")


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__bytes__" in obj:
        return bytes.fromhex(obj["__bytes__"])
    if "__ndarray__" in obj:
        return _ndarray(obj)
    if "__items__" in obj or "__counter__" in obj:
        pairs = ((_decode(k, tensors), _decode(v, tensors))
                 for k, v in obj.get("__items__", obj.get("__counter__")))
        return collections.Counter(dict(pairs)) if "__counter__" in obj else dict(pairs)
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _ndarray(obj: dict) -> np.ndarray:
    """A tagged array, only in a dtype ``save`` writes, so that its size is the JSON's."""
    dtype, values = obj.get("dtype"), obj["__ndarray__"]
    if not isinstance(dtype, str) or dtype not in NDARRAY_DTYPES:
        raise ValueError(f"an array of dtype {str(dtype)[:40]!r}; checkpoints hold only "
                         f"{sorted(NDARRAY_DTYPES)}")
    if not isinstance(values, (list, bool, int, float)):
        raise ValueError(f"an array's values must be a (nested) list, got "
                         f"{type(values).__name__}")
    return np.asarray(values, dtype=dtype)


def _state_of(obj: Any) -> Any:
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        return obj.state_dict()
    return obj


def _rng_state() -> dict:
    """Python's, numpy's and torch's global random states (CUDA's too when in use)."""
    # numpy's legacy global state is what other libraries (mnist1d, sklearn) draw from
    state = {"python": random.getstate(), "numpy": np.random.get_state(),  # noqa: NPY002
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _check_rng_state(meta_path: Path, state: Any) -> None:
    """``CheckpointError`` if ``state`` cannot be restored by :func:`_set_rng_state`, found
    by setting each part on a fresh generator (the global ones are left alone)."""
    where = f"{meta_path.name}: the saved RNG state"
    if not isinstance(state, dict) or not {"python", "numpy", "torch"} <= set(state):
        raise CheckpointError(f"{where} is damaged: it needs 'python', 'numpy' and 'torch'; "
                              f"load with rng=False to skip it")
    checks = {"python": lambda v: random.Random().setstate(v),
              "numpy": lambda v: np.random.RandomState().set_state(v),
              "torch": lambda v: torch.Generator().set_state(v),
              "cuda": _check_cuda_states}
    for part, check in checks.items():
        if part not in state:
            continue
        try:
            check(state[part])
        except Exception as e:  # each library raises its own kinds
            raise CheckpointError(f"{where} {part!r} is damaged ({type(e).__name__}: "
                                  f"{str(e)[:200]}); load with rng=False to skip it") from None


def _check_cuda_states(states: Any) -> None:
    if not isinstance(states, (list, tuple)) or not all(
            isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.dim() == 1
            for t in states):
        raise TypeError("expected a list of 1-D uint8 tensors, one per GPU")
    if torch.cuda.is_available():
        if len(states) > torch.cuda.device_count():
            raise ValueError(f"{len(states)} GPU states, this machine has "
                             f"{torch.cuda.device_count()} GPUs")
        for i, t in enumerate(states):
            if t.numel() != torch.cuda.get_rng_state(i).numel():
                raise ValueError(f"GPU {i}: a state of {t.numel()} bytes, expected "
                                 f"{torch.cuda.get_rng_state(i).numel()}")


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- files


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _json_digest(meta: Mapping) -> str:
    """SHA-256 of ``meta``'s canonical JSON, without its ``checksum`` field."""
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def _check_json(meta_path: Path, meta: dict) -> None:
    """The JSON's own checksum matches (version 2 on); version 1 has none: a warning."""
    if meta["version"] == 1 and "checksum" not in meta:
        warnings.warn(f"{meta_path} is checkpoint format version 1, whose JSON (step, "
                      f"history, RNG states) has no checksum, so damage to it cannot be "
                      f"detected; save the run again to add one", stacklevel=4)
        return
    if meta.get("checksum") != _json_digest(meta):
        raise CheckpointError(f"{meta_path} does not match the SHA-256 recorded in its "
                              f"'checksum' field: the JSON was damaged or edited")


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, json path)`` of every checkpoint in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def _read(meta_path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The checkpoint's JSON and its verified tensors; ``CheckpointError`` saying what is
    wrong if it is incomplete, damaged, not a checkpoint or from a newer ttqlab."""
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{meta_path} is not a readable checkpoint: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not a ttqlab checkpoint")
    version = meta.get("version")
    if not is_int(version) or version < 1:
        raise CheckpointError(f"{meta_path}: 'version' must be a positive integer, got "
                              f"{version!r}")
    if version > VERSION:
        raise CheckpointError(f"{meta_path} has checkpoint format version {version}; this "
                              f"ttqlab reads versions up to {VERSION}: upgrade ttqlab")
    step, name, digest = meta.get("step"), meta.get("tensors"), meta.get("sha256")
    if (not is_int(step) or step < 0
            or not isinstance(name, str) or not _TENSORS.match(name)
            or not isinstance(digest, str) or "state" not in meta):
        raise CheckpointError(f"{meta_path} is incomplete or damaged (needs 'step', "
                              f"'tensors' (a checkpoint-N.safetensors name), 'sha256', "
                              f"'state')")
    _check_json(meta_path, meta)
    tensor_path = meta_path.with_name(name)
    try:
        blob = tensor_path.read_bytes()
    except OSError:
        raise CheckpointError(f"{tensor_path} is missing") from None
    if hashlib.sha256(blob).hexdigest() != digest:
        raise CheckpointError(f"{tensor_path} does not match the SHA-256 in {meta_path.name}")
    try:
        return meta, st_load(blob)
    except Exception as e:  # safetensors raises its own error type
        raise CheckpointError(f"{tensor_path} is not a valid safetensors file: {e}") from None


def latest(directory: str | os.PathLike) -> Path | None:
    """The newest usable checkpoint (its .json) in ``directory``, or None if it holds no
    checkpoint at all.

    Unusable checkpoints (incomplete, damaged, newer format) are skipped with a warning
    naming each. Raises :class:`CheckpointError` if there are checkpoint files but none
    is usable: resuming would silently start over and overwrite them.
    """
    found = list_checkpoints(directory)
    problems = []
    for _, path in reversed(found):
        try:
            _read(path)
        except CheckpointError as e:
            problems.append(str(e))
            warnings.warn(f"skipping an unusable checkpoint: {e}", stacklevel=2)
            continue
        return path
    if found:
        raise CheckpointError(
            f"{directory} holds checkpoint files but none is usable:\n  "
            + "\n  ".join(problems)
            + "\nRestore a good copy, or move these files away to start the run afresh.")
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _clean_leftovers(directory: Path, keep: str) -> None:
    """Remove temporary files of writers that died, and tensor files without a .json
    (a writer killed between the two renames), except ``keep``."""
    for p in directory.iterdir():
        m = _TMP.match(p.name)
        if m and int(m.group(2)) != os.getpid() and not _pid_alive(int(m.group(2))):
            p.unlink(missing_ok=True)
        elif _TENSORS.match(p.name) and p.name != keep and not p.with_suffix(".json").exists():
            p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- API


def save(directory: str | os.PathLike, step: int, *, keep: int = 1, rng: bool = True,
         **objects: Any) -> Path:
    """Write checkpoint number ``step`` into ``directory``; return its .json path.

    Args:
        directory: the run directory (created if needed).
        step: a non-negative integer, usually the epoch just finished.
        keep: how many checkpoints to keep (older ones are deleted after this one is
            complete; at least 1).
        rng: also save the global python, numpy and torch random states.
        **objects: what to save, by name: modules, optimizers, schedulers, ``INQ``,
            ``torch.Generator`` s (their state), or plain values and tensors.
    """
    step = check_int("step", step, low=0)
    keep = check_int("keep", keep, low=1)
    rng = check_bool("rng", rng)
    if "step" in objects or "rng" in objects:
        raise ValueError("'step' and 'rng' are reserved names; choose another")
    directory = check_path("directory", directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    state = {name: _state_of(obj) for name, obj in objects.items()}
    if rng:
        state["rng"] = _rng_state()
    encoded = _encode(state, "", tensors)
    blob = st_save(tensors)
    stem = f"checkpoint-{step:06d}"
    _write_atomic(directory / f"{stem}.safetensors", blob)
    meta = {"format": FORMAT, "version": VERSION, "step": step,
            "tensors": f"{stem}.safetensors", "sha256": hashlib.sha256(blob).hexdigest(),
            "state": encoded}
    meta["checksum"] = _json_digest(meta)
    meta_path = directory / f"{stem}.json"
    _write_atomic(meta_path, json.dumps(meta, indent=1).encode())
    _clean_leftovers(directory, keep=f"{stem}.safetensors")
    for old_step, old in list_checkpoints(directory)[:-keep]:
        if old_step != step:
            old.unlink(missing_ok=True)
            old.with_suffix(".safetensors").unlink(missing_ok=True)
    return meta_path


def _check_fits(meta_path: Path, name: str, obj: Any, saved: Any, strict: bool) -> None:
    """``CheckpointError`` naming ``name`` if ``saved`` cannot be restored into ``obj``
    (another architecture, another optimizer), before anything is changed."""
    where = f"{meta_path.name}: {name!r}"
    if isinstance(obj, torch.Generator):
        if not isinstance(saved, torch.Tensor) or saved.shape != obj.get_state().shape:
            raise CheckpointError(f"{where} is not a saved torch.Generator state")
        return
    if not hasattr(obj, "load_state_dict"):
        raise CheckpointError(f"cannot restore {name!r} in place: a {type(obj).__name__} has "
                              f"no load_state_dict")
    if isinstance(obj, torch.nn.Module):
        if not isinstance(saved, dict):
            raise CheckpointError(f"{where} was not saved from a module")
        mine = obj.state_dict()
        if strict:
            missing, extra = sorted(set(mine) - set(saved)), sorted(set(saved) - set(mine))
            if missing or extra:
                raise CheckpointError(f"{where}: the checkpoint's model differs (it lacks "
                                      f"{missing[:5]}, has extra {extra[:5]}): another "
                                      f"architecture or quantization method")
        for k in sorted(set(mine) & set(saved)):
            a, b = mine[k], saved[k]
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape != b.shape:
                raise CheckpointError(f"{where}: {k!r} has shape {tuple(b.shape)} in the "
                                      f"checkpoint, {tuple(a.shape)} in the model")
    elif isinstance(obj, torch.optim.Optimizer):
        groups = saved.get("param_groups") if isinstance(saved, dict) else None
        mine = obj.state_dict()["param_groups"]
        if not isinstance(groups, list) or len(groups) != len(mine):
            raise CheckpointError(f"{where}: the checkpoint's optimizer has "
                                  f"{len(groups) if isinstance(groups, list) else 'no'} "
                                  f"parameter groups, this {type(obj).__name__} {len(mine)}")
        for g, m in zip(groups, mine):
            if not isinstance(g, dict) or set(g) != set(m):
                keys = sorted(set(g) - {"params"}) if isinstance(g, dict) else g
                raise CheckpointError(
                    f"{where}: the checkpoint was saved by another optimizer (hyper-parameters "
                    f"{keys}); this {type(obj).__name__} has {sorted(set(m) - {'params'})}")
            if not isinstance(g["params"], list) or len(g["params"]) != len(m["params"]):
                n = len(g["params"]) if isinstance(g["params"], list) else "no"
                raise CheckpointError(f"{where}: a parameter group of the checkpoint's "
                                      f"optimizer has {n} parameters, this one "
                                      f"{len(m['params'])}: build the optimizer over the "
                                      f"same parameters as the saved run")
        if not isinstance(saved.get("state"), dict):
            raise CheckpointError(f"{where}: the checkpoint's optimizer state is damaged "
                                  f"(no 'state' dict)")


def load(path: str | os.PathLike, *, rng: bool = True, strict: bool = True,
         **objects: Any) -> dict[str, Any]:
    """Restore a checkpoint into ``objects`` (in place) and return the other values.

    Args:
        path: a run directory (its newest complete checkpoint is used) or one
            checkpoint's .json file.
        rng: also restore the global python, numpy and torch random states.
        strict: passed to ``model.load_state_dict``.
        **objects: the same names that were given to ``save``; each is restored with
            ``load_state_dict`` (or ``set_state`` for a ``torch.Generator``).

    Returns:
        ``{"step": ..., name: value}`` for every saved value not restored in place.

    Raises:
        CheckpointError: no complete checkpoint, or a name that was not saved.
    """
    rng, strict = check_bool("rng", rng), check_bool("strict", strict)
    path = check_path("path", path)
    meta_path = latest(path) if path.is_dir() else path
    if meta_path is None:
        raise CheckpointError(f"no complete checkpoint in {path}")
    meta, tensors = _read(meta_path)
    try:
        state = _decode(meta["state"], tensors)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
        raise CheckpointError(f"{meta_path} is damaged: its state does not decode "
                              f"({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{meta_path} is damaged: its state is not a dict")
    missing = sorted(set(objects) - set(state))
    if missing:
        raise CheckpointError(f"{meta_path.name} holds no {missing}; it has "
                              f"{sorted(k for k in state if k != 'rng')}")
    for name, obj in objects.items():  # everything checked before anything is restored
        _check_fits(meta_path, name, obj, state[name], strict)
    if rng and "rng" in state:
        _check_rng_state(meta_path, state["rng"])
    for name, obj in objects.items():
        saved = state.pop(name)
        try:
            if isinstance(obj, torch.Generator):
                obj.set_state(saved)
            elif isinstance(obj, torch.nn.Module):
                obj.load_state_dict(saved, strict=strict)
            else:
                obj.load_state_dict(saved)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            raise CheckpointError(f"{meta_path.name}: cannot restore {name!r} "
                                  f"({type(obj).__name__}): {type(e).__name__}: {e}") from None
    rng_state = state.pop("rng", None)
    if rng and rng_state is not None:
        _set_rng_state(rng_state)
    return {"step": meta["step"], **state}
