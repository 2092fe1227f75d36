"""Kernels per training step: how many tensor operations each method adds to fp32's.

    python -m benchmarks.kernels [--models resnet20 lenet5] [--out results/kernels.json]

On a GPU a small model's quantized step is bound by kernel launches and the Python work
around them, not by arithmetic (issue 16): every elementwise operation on a weight is a
kernel of a few microseconds. This counts, without a GPU, the operations one forward and
backward pass dispatches (``TorchDispatchMode``; views, ``detach`` and other metadata-only
operations are not kernels and are not counted) on two paths:

* ``device`` -- the path ttqlab takes in eager mode on a GPU (any device but the CPU),
  run on the ``meta`` device: shapes only, no arithmetic, and any read of a value back to
  the host would raise (``host reads`` is therefore 0 there by construction, and
  ``tests/test_device_path.py`` checks it);
* ``cpu`` -- the CPU path, which reads each layer's threshold as a Python float once a
  step (``host reads``; cheap on a CPU) to use ``hardshrink``, its fastest threshold.

Counts are exact and machine-independent (for a given torch version); they are not times.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import ttqlab
from benchmarks import write_results

METHODS = ["fp32", "binary", "twn", "ttq", "inq", "bitnet"]
CONFIGS = {"resnet20": (3, 32, 32), "lenet5": (1, 28, 28)}
#: operations that only make a new view of existing memory (or read metadata): no kernel
NOT_KERNELS = {"detach", "view", "_unsafe_view", "reshape", "expand", "permute", "t",
               "transpose", "as_strided", "alias", "unsqueeze", "squeeze", "select", "slice",
               "_reshape_alias", "lift_fresh", "empty", "empty_like", "empty_strided"}
HOST_READS = {"_local_scalar_dense", "item", "is_nonzero", "equal"}


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count(model_name: str, method: str, path: str) -> dict:
    """Operations of one forward + backward pass (batch 2) of ``model_name`` quantized with
    ``method`` on ``path`` ("device": the meta device; "cpu")."""
    shape = CONFIGS[model_name]
    model = ttqlab.models.get(model_name, seed=0, input_shape=shape)
    if method == "inq":
        ttqlab.INQ(model).step()  # half frozen: INQ's re-training phase
    elif method != "fp32":
        ttqlab.quantize(model, method)
    layers = len(list(ttqlab.quantized_layers(model)))
    device = "meta" if path == "device" else "cpu"
    model = model.to(device).train()
    x = torch.randn(2, *shape).to(device)
    model(x).sum().backward()  # once outside the count: lazy state, first-call paths
    model.zero_grad(set_to_none=True)
    with _Count() as c:
        model(x).sum().backward()
    kernels = sum(n for op, n in c.ops.items() if op not in NOT_KERNELS | HOST_READS)
    return {"model": model_name, "method": method, "path": path, "layers": layers,
            "kernels": kernels, "host_reads": sum(c.ops[op] for op in HOST_READS),
            "top": dict(collections.Counter({op: n for op, n in c.ops.items()
                                             if op not in NOT_KERNELS}).most_common(6))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--quick", action="store_true", help="ResNet-20 only")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = []
    for name in (["resnet20"] if args.quick else args.models):
        for path in ("device", "cpu"):
            base = count(name, "fp32", path)["kernels"]
            for m in METHODS:
                r = count(name, m, path)
                r["extra"] = r["kernels"] - base
                r["extra_per_layer"] = r["extra"] / r["layers"] if r["layers"] else 0.0
                rows.append(r)
    cols = ["model", "path", "method", "layers", "kernels", "extra", "extra_per_layer",
            "host_reads"]
    print(ttqlab.stats.Table(rows, cols, title="kernels per forward+backward (batch 2)"))
    write_results(args.out, "kernels", rows, argv)
    return rows


if __name__ == "__main__":
    main()
