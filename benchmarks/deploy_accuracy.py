"""ONNX fast path on converged models: test predictions flipped per block_size (issue 26, item 2).

Each arm, as notebook 06 does it (``ttqlab.experiments.compare``): a converged full-precision
start (``ttqlab.starts.pretrain`` with the default ``Recipe()``, cached) on MNIST-1D, quantized
by TWN, TTQ or BitNet and fine-tuned 5 epochs (cosine, ``experiments.FINETUNE_LRS``, the
course's seed offset), then exported with
``accuracy_level=4`` (int8 activations per block of ``block_size`` inputs) for each block size.
Reported per arm: test predictions that differ from ttqlab's float model ("flips") and the test
accuracy difference in images (fast path minus float model).

    python -m benchmarks.deploy_accuracy [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch

import ttqlab
from benchmarks import write_results
from ttqlab import deploy, experiments, export
from ttqlab.starts import Recipe, pretrain

OUT = Path(__file__).parent / "results" / "deploy_accuracy.json"
BLOCK_SIZES = (16, 32, 64, 128)
METHODS = ("twn", "ttq", "bitnet")
RECIPE = Recipe()
FINETUNE = dict(epochs=5, lr_schedule="cosine")  # lr: experiments.FINETUNE_LRS[method]
BUILDS = {
    "mlp": lambda s: ttqlab.models.mlp(input_shape=(1, 40), hidden=(128, 128), seed=s),
    "transformer": lambda s: ttqlab.models.transformer(seed=s),
}


def measure(seeds=(0, 1, 2), recipe: Recipe = RECIPE, finetune: dict | None = None,
            root=None) -> list[dict]:
    """One row per (model, method, seed, block_size): flips and accuracy difference.

    ``root``: the starts' cache folder (``ttqlab.starts.pretrain``; default the data cache)."""
    finetune = FINETUNE if finetune is None else finetune
    data = ttqlab.data.load("mnist1d").split_validation(0.1, seed=0)
    x, y = data.test.tensors
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in BUILDS.items():
            for seed in seeds:
                start = pretrain(build, data, seed, recipe, root=root)
                for method in METHODS:
                    model = ttqlab.quantize(copy.deepcopy(start.model), method)
                    options = {"lr": experiments.FINETUNE_LRS[method], **finetune}
                    ttqlab.fit(model, data, seed=seed + experiments.FINETUNE_SEED_OFFSET,
                               progress=False, **options)
                    model.eval()
                    with torch.no_grad():
                        ref = model(x)
                    right = int((ref.argmax(1) == y).sum())
                    for bs in BLOCK_SIZES:
                        path = export.to_onnx(model, Path(tmp) / f"{name}{bs}.onnx",
                                              block_size=bs)
                        got = deploy.predict(export.onnx_session(path), x)
                        flips = int((got.argmax(1) != ref.argmax(1)).sum())
                        diff = int((got.argmax(1) == y).sum()) - right
                        rows.append(dict(model=name, method=method, seed=seed, block_size=bs,
                                         start_val_acc=start.plateau["final"],
                                         test_acc=right / len(y), flips=flips,
                                         acc_diff_images=diff))
                        print(f"{name:>11} {method:>6} seed {seed} block {bs:>3}: "
                              f"acc {100 * right / len(y):5.1f}%  flips {flips:2d}  "
                              f"diff {diff:+d}", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """Max flips and max |accuracy difference| over seeds, per model, method and block size."""
    lines = ["| model | method | " + " | ".join(f"block {b}" for b in BLOCK_SIZES) + " |",
             "|---|---|" + "---|" * len(BLOCK_SIZES)]
    for name in BUILDS:
        for method in METHODS:
            cells = []
            for bs in BLOCK_SIZES:
                sel = [r for r in rows if (r["model"], r["method"], r["block_size"]) ==
                       (name, method, bs)]
                if sel:
                    cells.append(f"{max(r['flips'] for r in sel)} / "
                                 f"{max(abs(r['acc_diff_images']) for r in sel)}")
            if cells:
                lines.append(f"| {name} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n(max over seeds: flipped predictions / |accuracy difference| " \
        "in test images)"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed (a smoke run)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"result file (default {OUT})")
    args = ap.parse_args(argv)
    seeds = (0,) if args.quick else (0, 1, 2)
    t0 = time.perf_counter()
    rows = measure(seeds)
    print(table(rows))
    doc = write_results(None, "deploy_accuracy", rows, argv)
    doc.update({"recipe": str(RECIPE), "finetune": FINETUNE, "seeds": list(seeds),
                "seconds": round(time.perf_counter() - t0, 1)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
