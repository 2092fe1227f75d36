"""Scale out with PyTorch's own engine: ``torchrun`` and DistributedDataParallel.

Nothing ttqlab-specific is needed to train on several processes or GPUs::

    torchrun --nproc_per_node 4 -m ttqlab reproduce ttq-cifar10-resnet20 --device cuda

``init_from_env`` joins the process group that ``torchrun`` describes in the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ...). Once a group exists, ``ttqlab.fit``

* wraps the model in ``DistributedDataParallel``, which all-reduces the gradients of
  every parameter: latent weights, TTQ's W_p / W_n, biases, BatchNorm;
* draws the same seeded permutation and augmentation on every process and gives
  process r the r-th slice of each global batch, so ``batch_size`` keeps its meaning
  (the papers' global batch) whatever the number of processes;
* broadcasts buffers (BatchNorm statistics, INQ masks) from rank 0 after every epoch,
  so every process evaluates the same model on the whole test set (the same numbers),
  and lets only rank 0 show progress and write checkpoints (into a directory every
  process can read: on several machines, a shared file system).

INQ's freezing needs no communication: the magnitude partition of identical weights is
identical, and the random partition uses a seeded generator.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["all_reduce_sum", "barrier", "broadcast_buffers", "init_from_env", "is_main",
           "rank", "shard", "world_size", "wrap"]


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on the process that prints and writes files (rank 0)."""
    return rank() == 0


def init_from_env(device: str | torch.device | None = None) -> torch.device:
    """Join the process group ``torchrun`` set up, if any; return this process's device.

    Without ``WORLD_SIZE`` > 1 in the environment this only resolves ``device``. Under
    torchrun, ``"cuda"`` becomes ``cuda:<LOCAL_RANK>`` and the backend is NCCL; on CPU
    it is gloo.
    """
    device = torch.device(device or "cpu")
    n = int(os.environ.get("WORLD_SIZE", "1"))
    if n > 1 and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    elif n > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when distributed, else ``model`` itself."""
    if world_size() == 1:
        return model
    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def shard(batch: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """This process's slice of a global batch (contiguous, sizes differ by at most 1)."""
    n = world_size()
    if n == 1:
        return tuple(batch)
    return tuple(t.tensor_split(n)[rank()] for t in batch)


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Sum of ``values`` over all processes (``values`` itself when not distributed)."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics, INQ masks) to every process."""
    if world_size() == 1:
        return
    for b in model.buffers():
        dist.broadcast(b, src=0)


def barrier() -> None:
    """Wait for every process (no-op when not distributed)."""
    if world_size() > 1:
        dist.barrier()
