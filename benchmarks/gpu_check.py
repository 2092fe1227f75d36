"""One GPU check: the CUDA tests, step time eager and compiled, and a short real training run.

    python -m benchmarks.gpu_check [--out benchmarks/results/gpu_check.json] [--skip-tests]

On a machine with an NVIDIA GPU (a few minutes):

1. ``pytest -m cuda`` (the CUDA test subset) and the torch.compile tests;
2. ``benchmarks.step_time`` on ``cuda`` for LeNet-5 and ResNet-20 at batch 128 and 512,
   eager and ``torch.compile``d (every method's step time relative to fp32's, compiled
   quantized relative to compiled fp32);
3. a short real training run (TTQ ResNet-20, CIFAR-10 shaped synthetic data if CIFAR-10
   is not cached, 2 epochs) with its wall time and final accuracy;

then prints a table and writes the rows, the card and the torch version to
``benchmarks/results/gpu_check.json``. Without CUDA it exits with a message (status 2).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks import RESULTS, write_results


def _tests() -> list[dict]:
    rows = []
    for label, args in (("cuda tests", ["-m", "cuda"]),
                        ("compile tests", ["tests/test_compile.py"])):
        t = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              *args])
        rows.append({"check": label, "passed": rc == 0, "seconds": time.perf_counter() - t})
    return rows


def _step_times(rounds: int, steps: int) -> list[dict]:
    from benchmarks.step_time import bench

    rows = []
    for model in ("lenet5", "resnet20"):
        for batch in (128, 512):
            for compile in (False, True):
                rows += bench(model, batch, rounds, steps, "cuda", compile=compile)
    return rows


def _training() -> dict:
    import ttqlab

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (4096,), generator=g)
    x += 0.5 * torch.nn.functional.one_hot(y, 10).float().repeat_interleave(103, 1)[
        :, :3 * 32 * 32].reshape(-1, 3, 32, 32)  # learnable: the class shifts some pixels
    model = ttqlab.models.get("resnet20", seed=0, input_shape=(3, 32, 32)).cuda()
    ttqlab.quantize(model, "ttq")
    t = time.perf_counter()
    h = ttqlab.fit(model, (x[:3584], y[:3584]), (x[3584:], y[3584:]), epochs=2, batch_size=128,
                   optimizer="sgd", lr=0.1, momentum=0.9, progress=False, seed=0)
    torch.cuda.synchronize()
    return {"check": "TTQ ResNet-20, 2 epochs, synthetic 32x32", "seconds":
            time.perf_counter() - t, "test_acc": h.last["test_acc"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS / "gpu_check.json")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--quick", action="store_true", help="fewer timing rounds")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); run it on a "
              "machine with an NVIDIA GPU and a CUDA build of PyTorch. GPU numbers stay "
              "unmeasured.", file=sys.stderr)
        return 2
    import ttqlab

    card = torch.cuda.get_device_name(0)
    print(f"card: {card}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    checks = [] if args.skip_tests else _tests()
    steps = _step_times(*((3, 5) if args.quick else (10, 10)))
    checks.append(_training())
    print(ttqlab.stats.Table(checks, title="checks"))
    cols = ["model", "method", "batch", "compiled", "step_ms", "ratio", "ratio_spread"]
    print(ttqlab.stats.Table(steps, cols, title=f"training-step time on {card}, ratio to fp32"))
    write_results(args.out, "gpu_check", [{"card": card, **r} for r in checks + steps], argv)
    return 0 if all(r.get("passed", True) for r in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
