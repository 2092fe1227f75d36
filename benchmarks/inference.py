"""Inference latency: fp32 PyTorch against fp32 and 2-bit ONNX Runtime (issue 26).

    python -m benchmarks.inference [--quick] [--repeats 7] [--out results/inference.json]
                                   [--figure docs/figures/inference.png]

Three ways to run the same network: its fp32 weights in PyTorch (``model(x)`` under
``torch.inference_mode``), the same fp32 graph in ONNX Runtime, and the ternary model
exported by ``ttqlab.export.to_onnx`` (every quantized ``nn.Linear`` a 2-bit
``MatMulNBits``, 2.25 bits per weight with its scales). Weights are random ternary
(TWN's rule on a seeded random init): timing does not depend on what was learned.

* ``layer N``: one ``nn.Linear(N, N)`` (no bias) for N from 256 to 4096 (65K to 16.8M
  weights), batch 1, one thread: the figure, with the memory-traffic limit drawn
  (fp32's time times the ratio of weight bytes, 2.25 / 32: what 2-bit weights would
  cost if the layer were bound by reading its weights, as a matrix-vector product
  that does not fit in cache is).
* ``ffn d``: a BitNet-style transformer feed-forward block, ``LayerNorm(d) ->
  Linear(d, 4d) -> GELU -> Linear(4d, d)`` (both linear layers quantized), d = 1024 and
  2048 (4.2M and 16.8M weights): the Linear-heavy network of the goal (at least 4x
  faster than fp32 PyTorch at batch 1 on one thread).
* the course's models on MNIST-1D shapes: ``mlp``, ``cnn1d`` (32 channels),
  ``transformer`` and ``gru`` as ``ttqlab.models`` builds them (first and last layers in
  float, as ``ttqlab.quantize`` keeps them), all under 100K weights.
* ``conv``: is im2col + ``MatMulNBits`` worth it for a convolution at batch 1? The
  2-bit product of the im2col shape alone (M = output length, K = in channels x
  kernel, N = out channels; the im2col copy itself not even counted) against ONNX
  Runtime's float ``Conv`` of ``cnn1d``'s middle layer.

Protocol: batch 1 and 8, 1 and 2 intra-op threads (PyTorch ``torch.set_num_threads``,
ONNX Runtime ``intra_op_num_threads``); ``--repeats`` rounds, each timing every arm once
(arms interleaved, in a seeded shuffled order per round, so that a burst of load on
the shared machine hits all arms alike); one timing is the mean of as many calls as
fill ``--block-ms``; a row reports the median over rounds and the spread (min and max).
Weight memory is the bytes of the weights each arm holds (fp32: 4 per weight; ONNX:
the file's constant tensors, ``ttqlab.deploy.weight_bytes``).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import ttqlab
from benchmarks import write_results
from ttqlab import deploy

ARMS = ("fp32 torch", "fp32 onnx", "2-bit onnx")
SIZES = (256, 512, 1024, 2048, 4096)
FFN = (1024, 2048)
COURSE = {"mlp": {"hidden": (256, 256)}, "cnn1d": {"channels": 32}, "transformer": {},
          "gru": {}}
BITS_2 = 2.25  # bits per weight of a 2-bit MatMulNBits layer, its fp32 scale per 128


class FFNBlock(nn.Module):
    """``LayerNorm(d) -> Linear(d, 4d) -> GELU -> Linear(4d, d)`` (BitNet's layout)."""

    def __init__(self, d: int):
        super().__init__()
        self.norm, self.up, self.down = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        return self.down(nn.functional.gelu(self.up(self.norm(x))))


def _network(kind: str, size, seed: int) -> tuple[nn.Module, tuple[int, ...], bool]:
    """(float model, input shape of one sample, keep first / last layer float)."""
    torch.manual_seed(seed)
    if kind == "layer":
        return nn.Linear(size, size, bias=False), (size,), False
    if kind == "ffn":
        return FFNBlock(size), (size,), False
    return ttqlab.models.get(size, input_shape=(1, 40), seed=seed, **COURSE[size]), (1, 40), True


def _time(fn, block_s: float) -> float:
    """Mean seconds per call over as many calls as fill ``block_s`` (at least 3)."""
    start, n = time.perf_counter(), 0
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if n >= 3 and elapsed >= block_s:
            return elapsed / n


def measure(kind: str, size, batches, threads, repeats: int, block_ms: float, seed: int,
            folder: Path) -> list[dict]:
    """Rows for one network: every (batch, threads) with the three arms interleaved."""
    float_model, shape, keep = _network(kind, size, seed)
    float_model.eval()
    quantized = ttqlab.quantize(_network(kind, size, seed)[0], "twn",
                                keep_first_last=keep).eval()
    example = torch.zeros(1, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the float export warns that it is all float
        f32 = deploy.to_onnx(float_model, folder / "f32.onnx", example)
    q2 = deploy.to_onnx(quantized, folder / "q2.onnx", example)
    params = sum(p.numel() for n, p in float_model.named_parameters()
                 if n.endswith("weight") and p.dim() >= 2)
    quantized_weights = sum(m.weight.numel() for _, m, _ in ttqlab.quantized_layers(quantized))
    memory = {"fp32 torch": 4 * sum(p.numel() for p in float_model.parameters()),
              "fp32 onnx": deploy.weight_bytes(f32)["total"],
              "2-bit onnx": deploy.weight_bytes(q2)["total"]}
    baked = ttqlab.bake(quantized).eval()
    rng = random.Random(seed)
    rows = []
    for t in threads:
        sessions = {"fp32 onnx": deploy.onnx_session(f32, t),
                    "2-bit onnx": deploy.onnx_session(q2, t)}
        for b in batches:
            x = torch.randn(b, *shape, generator=torch.Generator().manual_seed(seed))
            xn = x.numpy()
            torch.set_num_threads(t)

            def run_torch(x=x):
                with torch.inference_mode():
                    float_model(x)

            calls = {"fp32 torch": run_torch,
                     "fp32 onnx": lambda s=sessions["fp32 onnx"], xn=xn: s.run(None, {"input": xn}),
                     "2-bit onnx": lambda s=sessions["2-bit onnx"], xn=xn: s.run(None,
                                                                                {"input": xn})}
            with torch.inference_mode():
                ref = baked(x)
            got = torch.from_numpy(sessions["2-bit onnx"].run(None, {"input": xn})[0])
            error = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
            for fn in calls.values():  # warm up: first-call allocations, lazy init
                _time(fn, block_ms / 4000)
            times = {a: [] for a in ARMS}
            for _ in range(repeats):
                order = list(ARMS)
                rng.shuffle(order)
                for a in order:
                    times[a].append(_time(calls[a], block_ms / 1000))
            base = statistics.median(times["fp32 torch"])
            for a in ARMS:
                med = statistics.median(times[a])
                rows.append({"network": f"{kind} {size}" if kind != "course" else size,
                             "kind": kind, "weights": params,
                             "quantized weights": quantized_weights, "batch": b, "threads": t,
                             "arm": a, "median_us": med * 1e6, "min_us": min(times[a]) * 1e6,
                             "max_us": max(times[a]) * 1e6, "repeats": repeats,
                             "speedup_vs_fp32_torch": base / med,
                             "weight_bytes": memory[a],
                             "max_rel_error": error if a == "2-bit onnx" else 0.0})
    return rows


def conv_check(repeats: int, block_ms: float, seed: int) -> list[dict]:
    """cnn1d's middle convolution at batch 1, one thread: float Conv against the 2-bit
    product of its im2col shape (the copy not counted)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    model = ttqlab.models.cnn1d(input_shape=(1, 40), channels=32, seed=seed)
    conv = [m for m in model.modules() if isinstance(m, nn.Conv1d)][1]  # the middle one
    seen = {}
    handle = conv.register_forward_hook(lambda m, i, o: seen.update(i=i[0].shape, o=o.shape))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 1, 40))
    handle.remove()
    c_in, c_out, k = conv.in_channels, conv.out_channels, conv.kernel_size[0]
    length, out_length = seen["i"][-1], seen["o"][-1]
    stride, pad = conv.stride[0], conv.padding[0]
    rng = np.random.default_rng(seed)
    t = rng.integers(-1, 2, (c_out, c_in * k))
    weight = (0.05 * t).astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3

    def session(node, inputs, inits):
        graph = helper.make_graph([node], "g", inputs,
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                  inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
        m.ir_version = 9
        return ort.InferenceSession(m.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])

    float_conv = session(
        helper.make_node("Conv", ["x", "w"], ["y"], pads=[pad, pad], strides=[stride]),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, length])],
        [numpy_helper.from_array(weight.reshape(c_out, c_in, k), "w")])
    codes, scales, _ = deploy._two_bit(torch.from_numpy(weight), 128)
    nbits = session(
        helper.make_node("MatMulNBits", ["x", "B", "s"], ["y"], domain="com.microsoft",
                         K=c_in * k, N=c_out, bits=2, block_size=128, accuracy_level=4),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [out_length, c_in * k])],
        [numpy_helper.from_array(codes.numpy(), "B"),
         numpy_helper.from_array(scales.numpy(), "s")])
    xc = rng.standard_normal((1, c_in, length)).astype(np.float32)
    xm = rng.standard_normal((out_length, c_in * k)).astype(np.float32)
    calls = {"float Conv": lambda: float_conv.run(None, {"x": xc}),
             "2-bit im2col product": lambda: nbits.run(None, {"x": xm})}
    for fn in calls.values():
        _time(fn, block_ms / 4000)
    times = {a: [] for a in calls}
    order = list(calls)
    r = random.Random(seed)
    for _ in range(repeats):
        r.shuffle(order)
        for a in order:
            times[a].append(_time(calls[a], block_ms / 1000))
    return [{"network": f"cnn1d conv {c_in}->{c_out} k{k} s{stride}, length {length}",
             "kind": "conv",
             "weights": c_out * c_in * k, "batch": 1, "threads": 1, "arm": a,
             "median_us": statistics.median(v) * 1e6, "min_us": min(v) * 1e6,
             "max_us": max(v) * 1e6, "repeats": repeats} for a, v in times.items()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="seconds: two layer sizes, one FFN width, one course model")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds (default 7)")
    ap.add_argument("--block-ms", type=float, default=20.0,
                    help="milliseconds of calls per timing (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--figure", type=Path, default=None,
                    help="also draw the figure (latency against layer size) there")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.block_ms <= 0:
        raise SystemExit("--repeats must be at least 1 and --block-ms positive")
    saved = torch.get_num_threads()
    quick = args.quick
    repeats = 3 if quick else args.repeats
    block = 5.0 if quick else args.block_ms
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            jobs = ([("layer", n, (1,), (1,)) for n in ((256, 1024) if quick else SIZES)]
                    + [("ffn", d, (1, 8), (1, 2)) for d in ((1024,) if quick else FFN)]
                    + [("course", m, (1, 8), (1, 2))
                       for m in (("cnn1d",) if quick else COURSE)])
            for kind, size, batches, threads in jobs:
                rows += measure(kind, size, batches, threads, repeats, block, args.seed,
                                folder)
                r = [x for x in rows if x["network"] == (f"{kind} {size}" if kind != "course"
                                                         else size)]
                print(f"{r[0]['network']}: " + ", ".join(
                    f"b{x['batch']} t{x['threads']} {x['arm']} {x['median_us']:.0f}us"
                    for x in r), flush=True)
            rows += conv_check(repeats, block, args.seed)
    finally:
        torch.set_num_threads(saved)
    cols = ["network", "batch", "threads", "arm", "median_us", "min_us", "max_us",
            "speedup_vs_fp32_torch", "weight_bytes"]
    print(ttqlab.stats.Table(rows, cols, title="inference latency (median of interleaved "
                                               f"repeats, load {os.getloadavg()[0]:.1f})"))
    doc = write_results(args.out, "inference", rows, argv)
    if args.figure is not None:
        from benchmarks import report
        report.plot_inference(doc, args.figure)
    return rows


if __name__ == "__main__":
    main()
