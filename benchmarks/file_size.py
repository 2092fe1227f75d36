"""Packed file size on disk vs the fp32 ``state_dict`` file, per model, method and packing.

    python -m benchmarks.file_size [--quick] [--all-layers] [--markdown]
                                   [--out results/file_size.json]

For LeNet-5 (28x28 inputs) and ResNet-20 (32x32) quantized with TWN, TTQ and INQ-5bit
(first / last layer in fp32, ttqlab's default) every number is ``os.path.getsize`` of
a real file:

* quantized layers alone: ``torch.save`` of those layers' fp32 weights vs a packed file
  holding only their codes, scales and manifest (``ttqlab.export.pack`` minus the float
  tensors; written for this measurement only, it cannot be loaded on its own);
* whole model: ``torch.save(float_model.state_dict())`` vs ``ttqlab.export.save``;
* naive: ``torch.save(quantized_model.state_dict())``, what you get without packing
  (latent weights, W_p / W_n, INQ's masks: no smaller than fp32, often larger).

``outputs equal`` checks that ``ttqlab.export.load`` of the packed file gives exactly
(``torch.equal``) the quantized model's outputs on a random batch. Sizes do not depend
on training (the layout has no entropy coding), so the models are not trained here.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch

import ttqlab
from ttqlab import export

CONFIGS = {
    "lenet5": dict(input_shape=(1, 28, 28)),
    "resnet20": dict(input_shape=(3, 32, 32)),
}
RUNS = [("twn", "2bit"), ("twn", "base3"), ("ttq", "2bit"), ("ttq", "base3"), ("inq", "-")]


def build(model_name: str, method: str, keep_first_last: bool):
    model = ttqlab.models.get(model_name, seed=0, **CONFIGS[model_name])
    if method == "inq":
        inq = ttqlab.INQ(model, bits=5, keep_first_last=keep_first_last)
        while not inq.done:
            inq.step()
    else:
        ttqlab.quantize(model, method, keep_first_last=keep_first_last)
    return model.eval()


def measure(model_name: str, method: str, packing: str, keep_first_last: bool,
            tmp: Path) -> dict:
    model = build(model_name, method, keep_first_last)
    names = [n for n, _, _ in ttqlab.quantized_layers(model)]
    float_state = ttqlab.bake(model).state_dict()
    files = {k: tmp / k for k in ("fp32", "fp32_q", "packed", "packed_q", "naive")}
    torch.save(float_state, files["fp32"])
    torch.save({f"{n}.weight": float_state[f"{n}.weight"] for n in names}, files["fp32_q"])
    torch.save(model.state_dict(), files["naive"])
    store = "base3" if packing == "-" else packing  # INQ-5bit ignores the ternary packing
    export.save(model, files["packed"], packing=store)
    tensors, manifest = export.pack(model, packing=store)
    export.write(files["packed_q"], {k: tensors[k] for k in (export.CODES, export.SCALES)},
                 manifest)
    size = {k: os.path.getsize(f) for k, f in files.items()}
    x = torch.randn(8, *CONFIGS[model_name]["input_shape"],
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        equal = torch.equal(export.load(files["packed"])(x), model(x))
    params = sum(float_state[f"{n}.weight"].numel() for n in names)
    return {
        "model": model_name, "method": "inq-5bit" if method == "inq" else method,
        "packing": packing, "first/last": "fp32" if keep_first_last else "quantized",
        "quantized params": params,
        "q fp32 file": size["fp32_q"], "q packed file": size["packed_q"],
        "q ratio": size["fp32_q"] / size["packed_q"],
        "q bits/weight": 8 * size["packed_q"] / params,
        "model fp32 file": size["fp32"], "model packed file": size["packed"],
        "model ratio": size["fp32"] / size["packed"],
        "naive file": size["naive"], "outputs equal": equal,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="LeNet-5 only (a few seconds)")
    ap.add_argument("--all-layers", action="store_true",
                    help="also quantize the first and last layer (extra rows)")
    ap.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    names = ["lenet5"] if args.quick else args.models
    keeps = (True, False) if args.all_layers else (True,)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            for keep in keeps:
                for method, packing in RUNS:
                    rows.append(measure(name, method, packing, keep, Path(tmp)))
    cols = ["model", "method", "packing", "first/last", "quantized params", "q fp32 file",
            "q packed file", "q ratio", "q bits/weight", "model fp32 file",
            "model packed file", "model ratio", "naive file", "outputs equal"]
    table = ttqlab.stats.Table(rows, cols, title="file size on disk (bytes): packed vs fp32 "
                                                 "state_dict")
    print(table.to_markdown() if args.markdown else table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
    return table


if __name__ == "__main__":
    main()
