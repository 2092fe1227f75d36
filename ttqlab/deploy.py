"""Run a ternary model fast: export to ONNX with ONNX Runtime's 2-bit ``MatMulNBits``.

    path = ttqlab.export.to_onnx(model, "model.onnx")      # model: quantized by ttqlab
    session = ttqlab.export.onnx_session(path)             # one intra-op thread
    logits = ttqlab.deploy.predict(session, x)             # a torch.Tensor, like model(x)

Needs the extra ``pip install "ttqlab[deploy]"`` (``onnx`` and ``onnxruntime``, wheels
for Linux, macOS and Windows); both are imported only when these functions run.

**What the graph holds.** Every quantized ``nn.Linear`` (ttqlab's transformer's
``q/k/v/o`` and ``fc1/fc2``, the GRU's gate layers ``ih/hh``, an MLP's hidden layers)
becomes one ``com.microsoft.MatMulNBits`` node (plus an ``Add`` for its bias), which
computes

    Y = A @ dequant(B)^T,    dequant(B)[n, k] = (c[n, k] - 2) * s[n, k // block_size]

with 2-bit codes ``c = t + 2`` (t in {-1, 0, +1}; the zero point 2 is the operator's
default, so no zero-point input is stored), packed four to a byte, low bits first along
K, and one float32 scale ``s`` per row and block of ``block_size`` (default 128) inputs:
``128 * 2 / 8 + 4 = 36`` bytes per 128 weights, 2.25 bits per weight against fp32's 32.
``accuracy_level=4`` selects ONNX Runtime's fast CPU path, which quantizes the
activations ``A`` to int8 per block before the integer dot products (``accuracy_level``
0 computes in float and was measured about 270x slower than fp32 on an AVX-512 CPU:
never use it). Everything else (convolutions, BatchNorm, LayerNorm, attention's
softmax, the GRU's gates, layers kept in full precision) is standard ONNX in float32,
exported from the model with ``torch.onnx.export``.

**How the graph is made.** The quantized model is baked (``ttqlab.bake``), each
quantized ``nn.Linear`` is swapped for a module whose ``torch.autograd.Function`` has an
ONNX ``symbolic`` that emits ``MatMulNBits`` with the codes and scales as initializers, and
the whole model goes through ``torch.onnx.export(..., dynamo=False)``: torch's
TorchScript-based exporter, which needs nothing beyond torch and runs offline (torch 2.13
calls it deprecated; the ``dynamo=True`` exporter needs ``onnxscript``, which ttqlab does
not require). Its notices are silenced; the batch dimension is dynamic.

**Which weights each method gives, solved exactly.** TWN and binary weights are
``alpha * t`` with one ``alpha`` per layer or per output channel: one node, scale
``alpha``. TTQ's weights are ``{-W_n, 0, +W_p}`` with ``W_p != W_n``, which no single
scale per block can express (``(c - 2) * s`` is symmetric). The exporter splits the
ternary matrix ``T`` into its positive and negative parts, ``W = W_p P - W_n N`` with
``P = [T = +1]``, ``N = [T = -1]``, stacks them into one ``MatMulNBits`` node of ``2N``
output rows (codes ``P + 2`` with scale ``W_p`` and ``2 - N`` with scale ``W_n``) and
adds the two halves of its output: ``Y = Y[:, :N] + Y[:, N:] = A P^T W_p - A N^T W_n``,
the same product in exact arithmetic, at twice the bytes of a symmetric layer (4.5 bits
per weight). The rule is read off the weights themselves, per row and block: a block
whose nonzero weights are ``+s`` / ``-s`` is symmetric; if every block is, the layer
takes one pass. Either way the exporter checks that the codes and scales rebuild the
layer's weight bit for bit before it writes the file; a quantized weight with more than
three levels (INQ at 3 bits or more) cannot be held in 2-bit codes and stays float, with
a warning.

**Equal answers.** The weights are exact; the only difference is the int8 rounding of
the activations per block of ``accuracy_level=4``, about 0.5% of the outputs' scale per
layer: the largest logit error measured over the 1000 MNIST-1D test images was 3.1%
of the largest logit for a trained transformer (seven 2-bit layers in a row), and the
tests assert ``max |y_onnx - y_torch| <= 0.05 * max |y_torch|``. That rounding can flip
a near tie: on converged MNIST-1D models (``benchmarks/deploy_accuracy.py``: an MLP and
the course's transformer, TWN, TTQ and BitNet, 3 seeds each, on an AMD EPYC and an Intel
Xeon) up to 9 of 1000 test predictions changed at ``block_size`` 32-128 and the test
accuracy moved by up to 5 images, so the fast path does not promise the same accuracy to
the image (the tests assert that only near ties change). At ``block_size=16`` no
prediction changed: ONNX Runtime 1.32 gave outputs identical to ``accuracy_level=1``
there, i.e. no int8 kernel for 16-input blocks, and float compute instead, as slow as
``accuracy_level=1`` (a 1024 -> 4096 -> 1024 block at batch 1: about 18 ms against
0.13 ms at block 128).
``accuracy_level=1`` (float compute) gives PyTorch's answers to float round-off, the
same test accuracy to the image, but is slow: 6x slower than fp32 on a 128x128 layer,
50x on 1024x1024 (use it to check answers, not to deploy).

**Convolutions stay float.** A convolution could run as im2col + ``MatMulNBits``, but
at batch 1 the course's convolutions are small (a ``cnn1d`` layer of 32 channels and
kernel 5 has 5,120 weights, 20 KB in fp32, already in cache), so the bytes saved are
negligible while the im2col copy is not: ``benchmarks/inference.py`` measures the
2-bit matrix product of the im2col shape alone against ONNX Runtime's float ``Conv``
and finds no gain, so quantized convolutions are exported as float ``Conv`` nodes with
their quantized (baked) weights. The same holds for the weight matrices inside
``nn.MultiheadAttention`` / ``nn.GRU`` / ``nn.LSTM`` (exported by torch as fused ONNX
operators): they stay float, with a warning naming them. ttqlab's own ``transformer``
and ``gru`` use ``nn.Linear`` projections, so all their quantized layers are 2-bit.

**Why it is faster, and when.** At batch 1 a matrix-vector product reads every weight
once and does two flops with it: its time is the bytes of the weights divided by the
memory bandwidth. 2.25 bits instead of 32 is 14x fewer bytes, so a layer too large for
the cache can run up to ~14x faster; a small layer (the course's models have at most a
few ten thousand weights, well under 1 MB) sits in cache either way, and the time goes
to per-node overheads that do not shrink.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import models
from .convert import bake, extract, quantized_weights
from .validation import check_choice, check_int, check_path

__all__ = ["INSTALL", "OnnxExportError", "onnx_session", "predict", "to_onnx",
           "weight_bytes"]

#: what to run when the optional dependencies are missing
INSTALL = 'pip install "ttqlab[deploy]"'
#: the ONNX standard opset the graph uses (MatMulNBits is com.microsoft version 1)
OPSET = 17
INPUT, OUTPUT = "input", "logits"


class OnnxExportError(ValueError):
    """The model cannot be exported: the message names the layer (or operation) at fault."""


def _require(module: str):
    """Import ``onnx`` / ``onnxruntime`` or say which ``pip install`` adds it."""
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"ttqlab's ONNX export needs the package {module!r}, which is not "
                          f"installed; add it with: {INSTALL}") from None


# --------------------------------------------------------------------------- 2-bit codes


def _two_bit(weight: Tensor, block_size: int) -> tuple[Tensor, Tensor, bool] | None:
    """``weight`` (N, K) as MatMulNBits inputs: packed codes (rows, k_blocks, block/4)
    uint8, scales (rows, k_blocks) float32 and whether the rows are split in a positive
    and a negative half (rows = 2N); None if a block holds more than one positive or
    more than one negative magnitude (not ternary)."""
    w = weight.detach().to(torch.float32).cpu()
    n, k = w.shape
    kb = -(-k // block_size)
    padded = torch.zeros(n, kb * block_size)
    padded[:, :k] = w
    blocks = padded.reshape(n, kb, block_size)
    pos, neg = blocks > 0, blocks < 0
    inf = torch.tensor(float("inf"))
    p_hi = torch.where(pos, blocks, -inf).amax(-1)
    p_lo = torch.where(pos, blocks, inf).amin(-1)
    n_hi = torch.where(neg, -blocks, -inf).amax(-1)
    n_lo = torch.where(neg, -blocks, inf).amin(-1)
    has_p, has_n = pos.any(-1), neg.any(-1)
    if bool(((p_hi != p_lo) & has_p).any() | ((n_hi != n_lo) & has_n).any()):
        return None
    sp = torch.where(has_p, p_hi, 0.0)
    sn = torch.where(has_n, n_hi, 0.0)
    symmetric = bool(((sp == sn) | ~has_p | ~has_n).all())
    if symmetric:
        codes = (pos.to(torch.uint8) + 2 - neg.to(torch.uint8))
        scales = torch.maximum(sp, sn)
    else:
        codes = torch.cat([pos.to(torch.uint8) + 2, 2 - neg.to(torch.uint8)])
        scales = torch.cat([sp, sn])
    rebuilt = ((codes.to(torch.float32) - 2) * scales[..., None]).reshape(len(codes), -1)
    if not symmetric:
        rebuilt = rebuilt[:n] + rebuilt[n:]
    if not torch.equal(rebuilt[:, :k], w):  # a guard: the codes hold the weight exactly
        return None
    c = codes.reshape(len(codes), kb, block_size // 4, 4).to(torch.int32)
    packed = (c[..., 0] | c[..., 1] << 2 | c[..., 2] << 4 | c[..., 3] << 6).to(torch.uint8)
    return packed.contiguous(), scales.contiguous(), not symmetric


class _MatMulNBits(torch.autograd.Function):
    """``x @ dequant(codes)^T + bias`` in PyTorch (the exact weight, rebuilt from the
    codes); a ``com.microsoft::MatMulNBits`` node when exported."""

    @staticmethod
    def forward(ctx, x, codes, scales, bias, k, block_size, accuracy_level, split):
        c = torch.stack([(codes >> s) & 3 for s in (0, 2, 4, 6)], -1).reshape(
            codes.shape[0], codes.shape[1], -1).to(scales.dtype)
        w = ((c - 2) * scales[..., None]).reshape(codes.shape[0], -1)[:, :k]
        if split:
            w = w[:len(w) // 2] + w[len(w) // 2:]
        return nn.functional.linear(x, w.to(x.dtype), bias if bias.numel() else None)

    @staticmethod
    def symbolic(g, x, codes, scales, bias, k, block_size, accuracy_level, split):
        rows = codes.type().sizes()[0]
        y = g.op("com.microsoft::MatMulNBits", x, codes, scales, K_i=k, N_i=rows, bits_i=2,
                 block_size_i=block_size, accuracy_level_i=accuracy_level)
        sizes = x.type().sizes()  # tell the tracer the output's shape (..., rows)
        if sizes is not None:
            y.setType(x.type().with_sizes([*sizes[:-1], rows]))
        if split:
            half = g.op("Constant", value_t=torch.tensor([rows // 2, rows // 2]))
            a, b = g.op("Split", y, half, axis_i=-1, outputs=2)
            y = g.op("Add", a, b)
        if bias.type().sizes() != [0]:
            y = g.op("Add", y, bias)
        return y


class _NBitsLinear(nn.Module):
    """A quantized ``nn.Linear`` held as 2-bit codes, exported as ``MatMulNBits``."""

    def __init__(self, linear: nn.Linear, codes: Tensor, scales: Tensor, split: bool,
                 block_size: int, accuracy_level: int):
        super().__init__()
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales)
        bias = linear.bias.detach().float() if linear.bias is not None else torch.zeros(0)
        self.register_buffer("bias", bias)
        self.in_features, self.split = linear.in_features, split
        self.block_size, self.accuracy_level = block_size, accuracy_level

    def forward(self, x):
        return _MatMulNBits.apply(x, self.codes, self.scales, self.bias, self.in_features,
                                  self.block_size, self.accuracy_level, self.split)


# --------------------------------------------------------------------------- export


def _example_input(model: nn.Module, example: Tensor | None) -> Tensor:
    if example is not None:
        if not isinstance(example, Tensor):
            raise TypeError(f"example must be a torch.Tensor batch such as "
                            f"torch.randn(1, 1, 40), got {type(example).__name__}")
        return example.detach()
    spec = getattr(model, "ttqlab_spec", None)
    shape = None
    if isinstance(spec, dict) and spec.get("name") in models.MODELS:
        shape = spec.get("kwargs", {}).get("input_shape")
        if shape is None:  # built with the builder's default input shape
            default = inspect.signature(models.MODELS[spec["name"]]).parameters.get(
                "input_shape")
            shape = None if default is None else default.default
    if shape is None or shape is inspect.Parameter.empty:
        raise ValueError("cannot tell the model's input shape: pass an example batch, e.g. "
                         "to_onnx(model, path, example=torch.randn(1, 1, 40))")
    return torch.zeros(1, *shape)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    setattr(owner, child, new)


def _failing_layer(model: nn.Module, example: Tensor, message: str) -> str:
    """The module (by name) whose traced graph holds the operator the exporter named."""
    op = next((w.strip("'\"` ,.") for w in message.split()
               if w.strip("'\"`").startswith("aten::")), None)
    if op is None:
        return ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = torch.jit.trace(model, example, check_trace=False).inlined_graph
    except Exception:  # naming the layer is a courtesy, not a requirement
        return ""
    for node in graph.nodes():
        if node.kind() == op.split(".")[0]:
            scope = node.scopeName().split("/")[-1].removeprefix("__module.")
            return scope.rsplit("::", 1)[-1] if scope else ""
    return ""


@contextlib.contextmanager
def _quiet_fds():
    """Silence file descriptors 1 and 2: the exporter's C++ code prints notices (the
    legacy exporter, the custom operator's shape, the graph at an error) straight to
    them, past Python's ``sys.stdout`` and warnings."""
    import sys
    saved = []
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [(fd, os.dup(fd)) for fd in (1, 2)]
    except (OSError, ValueError, AttributeError):  # no real descriptors: nothing to hide
        for _, copy in saved:
            os.close(copy)
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            for fd, _ in saved:
                os.dup2(null.fileno(), fd)
            yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


def to_onnx(model: nn.Module, path: str | os.PathLike, example: Tensor | None = None, *,
            block_size: int = 128, accuracy_level: int = 4) -> Path:
    """Write ``model`` as an ONNX graph whose quantized ``nn.Linear`` layers are 2-bit
    ``MatMulNBits`` nodes (see the module's docstring for the equations).

    Args:
        model: a model quantized with ``ttqlab.quantize`` (a float model exports too,
            all in float, with a warning). It is not modified.
        path: the ``.onnx`` file to write.
        example: a batch of inputs to trace with (any batch size; the exported batch
            dimension is dynamic). Optional for ``ttqlab.models`` built with an
            ``input_shape``.
        block_size: inputs per scale (16, 32, 64 or 128; 128 is the fastest measured and
            costs 0.25 extra bits per weight; ONNX Runtime 1.32 has no fast path for 256,
            and computes 16 in float: answers identical to ``accuracy_level=1``, and
            about as slow).
        accuracy_level: ``MatMulNBits``' compute mode, 0 to 4 (0 unset, 1 float32,
            2 float16, 3 bfloat16, 4 int8 activations per block); 4 is the fast CPU
            kernel, the others are for experiments (1 gives PyTorch's answers).

    Returns:
        ``path`` as a ``Path``. The graph has one input ``"input"`` (batch first) and one
        output ``"logits"``.

    Raises:
        ImportError: ``onnx`` is missing (the message says ``pip install "ttqlab[deploy]"``).
        OnnxExportError: an operation of the model has no ONNX form; names the layer.
    """
    onnx = _require("onnx")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    path = check_path("path", path)
    block_size = int(check_choice("block_size", block_size, (16, 32, 64, 128),
                                  hint="a power of two with a fast ONNX Runtime kernel; "
                                       "128 is the fastest measured"))
    accuracy_level = int(check_choice("accuracy_level", accuracy_level, (0, 1, 2, 3, 4),
                                      hint="MatMulNBits' compute mode: 4 (int8 activations) "
                                           "is the fast CPU kernel, 1 computes in float32"))
    x = _example_input(model, example)
    quantized = {name: (module, param) for name, module, param, _ in quantized_weights(model)}
    if not quantized:
        warnings.warn("the model has no quantized layer (ttqlab.quantize was not called): "
                      "exporting it all in float, which runs no faster than PyTorch",
                      stacklevel=2)
    codes = extract(model) if quantized else {}
    plain = bake(model).eval()
    kept, convs = [], 0
    for name, (module, param) in quantized.items():
        parent = name.rpartition(".")[0]
        inside = isinstance(model.get_submodule(parent), nn.MultiheadAttention) if name else False
        if not (isinstance(module, nn.Linear) and param == "weight") or inside:
            if isinstance(module, nn.modules.conv._ConvNd):
                convs += 1
            else:
                kept.append(name)
            continue
        linear = plain.get_submodule(name) if name else plain
        two = _two_bit(codes[name].dequantize().to(linear.weight.dtype), block_size)
        if two is None:
            kept.append(name)
            continue
        new = _NBitsLinear(linear, *two, block_size=block_size, accuracy_level=accuracy_level)
        if name:
            _replace(plain, name, new)
        else:
            plain = new
    if kept:
        warnings.warn(f"kept in float (no 2-bit MatMulNBits form): {', '.join(kept)} (weights "
                      f"with more than three levels, or inside nn.MultiheadAttention / "
                      f"nn.GRU / nn.LSTM)", stacklevel=2)
    buffer = io.BytesIO()
    custom = {"com.microsoft": 1} if len(kept) < len(quantized) - convs else {}
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_fds():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices
            torch.onnx.export(plain.float(), (x.float(),), buffer, dynamo=False,
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                              opset_version=OPSET, custom_opsets=custom,
                              do_constant_folding=True)
    except Exception as e:  # re-raised with the layer's name
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        where = _failing_layer(plain, x.float(), str(e))
        at = f"layer {where!r}: " if where else ""
        raise OnnxExportError(f"{at}cannot export to ONNX ({message[:300]}); replace that "
                              f"layer or operation with one ONNX supports (nn.Linear, "
                              f"nn.Conv*, activations, norms)") from e
    graph = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(graph)
    onnx.save(graph, path)
    return path


# --------------------------------------------------------------------------- running


def onnx_session(path: str | os.PathLike, threads: int = 1) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU for a file from :func:`to_onnx`.

    ``threads`` is ONNX Runtime's intra-op thread count (default 1: at batch 1 a
    matrix-vector product is limited by memory traffic, and on a shared or small machine
    extra threads mostly wait; ``benchmarks/inference.py`` measures 1 and 2). Inter-op
    parallelism is off; graph optimisations are all on.
    """
    ort = _require("onnxruntime")
    threads = check_int("threads", threads, low=1,
                        hint="ONNX Runtime's intra-op thread count; 1 is the default")
    path = check_path("path", path)
    if not path.is_file():
        raise FileNotFoundError(f"no such ONNX file: {path}; write one with "
                                f"ttqlab.export.to_onnx(model, path)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: nothing on stderr in a notebook
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def predict(session: Any, x: Tensor) -> Tensor:
    """Run ``session`` on a batch ``x`` (a tensor, as the model takes it): the logits."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor batch, got {type(x).__name__}")
    out = session.run([OUTPUT], {INPUT: x.detach().cpu().float().contiguous().numpy()})[0]
    return torch.from_numpy(out)


def weight_bytes(path: str | os.PathLike) -> dict[str, int]:
    """Bytes of the constant tensors of an ONNX file, split into ``"2bit"`` (codes and
    scales of ``MatMulNBits``) and ``"float"`` (every other weight, bias and norm) and
    their ``"total"``: the memory the weights take when the model runs."""
    onnx = _require("onnx")
    from onnx import numpy_helper
    graph = onnx.load(str(path)).graph
    sizes = {i.name: numpy_helper.to_array(i).nbytes for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    sizes[node.output[0]] = numpy_helper.to_array(a.t).nbytes
    nbits = {name for node in graph.node if node.op_type == "MatMulNBits"
             for name in node.input[1:]}
    two = sum(v for k, v in sizes.items() if k in nbits)
    total = sum(sizes.values())
    return {"2bit": two, "float": total - two, "total": total}
