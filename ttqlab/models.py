"""Small reference networks: MLP, 1-D CNN, LeNet-5 (TWN's), VGG-7, CIFAR ResNet-20/32/44/56.

Plain ``nn.Module`` s with nothing quantization-specific in them: quantize any of them
(or your own) with ``ttqlab.quantize``. Every constructor takes ``seed`` so the same
seed gives the same initial weights.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .validation import check_bool, check_int

__all__ = ["MODELS", "cnn1d", "get", "lenet5", "mlp", "resnet", "resnet20", "resnet32",
           "resnet44", "resnet56", "vgg7"]


def _seeded(build: Callable[[], nn.Module], seed: int | None) -> nn.Module:
    seed = check_int("seed", seed, none_ok=True, hint="the same seed gives the same weights")
    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _recorded(name: str):
    """Decorator: remember how a model was built (``model.ttqlab_spec``), so that
    ``ttqlab.export.load`` can rebuild a built-in architecture from a file alone."""
    def wrap(fn):
        @functools.wraps(fn)
        def builder(*args, **kwargs):
            if args:
                raise TypeError(f"{name}() takes keyword arguments only, e.g. "
                                f"{name}(input_shape=(1, 28, 28), num_classes=10)")
            model = fn(**kwargs)
            kwargs.pop("seed", None)
            spec = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
            model.ttqlab_spec = {"name": name, "kwargs": spec}
            return model
        return builder
    return wrap


@_recorded("mlp")
def mlp(
    input_shape: Sequence[int] = (1, 8, 8),
    num_classes: int = 10,
    hidden: Sequence[int] = (256, 256),
    *,
    batch_norm: bool = True,
    seed: int | None = None,
) -> nn.Module:
    """Flatten -> [Linear -> BatchNorm1d -> ReLU] per hidden width -> Linear."""
    batch_norm = check_bool("batch_norm", batch_norm)

    def build():
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers.append(nn.Linear(width, h, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            width = h
        layers.append(nn.Linear(width, num_classes))
        return nn.Sequential(*layers)
    return _seeded(build, seed)


@_recorded("cnn1d")
def cnn1d(
    input_shape: Sequence[int] = (1, 40),
    num_classes: int = 10,
    channels: int = 64,
    *,
    batch_norm: bool = True,
    seed: int | None = None,
) -> nn.Module:
    """MNIST-1D's convolutional baseline (Greydanus 2020): three Conv1d (kernels 5, 3, 3,
    stride 2) -> Linear; BatchNorm after each conv by default."""
    batch_norm = check_bool("batch_norm", batch_norm)
    if len(input_shape) != 2:
        raise ValueError(f"cnn1d takes 1-D samples of shape (channels, length), e.g. (1, 40) "
                         f"for mnist1d; got input_shape {tuple(input_shape)}")

    def build():
        c, length = input_shape
        layers: list[nn.Module] = []
        for k in (5, 3, 3):
            layers += [nn.Conv1d(c, channels, k, stride=2, padding=1, bias=not batch_norm),
                       nn.BatchNorm1d(channels) if batch_norm else nn.Identity(), nn.ReLU()]
            c, length = channels, (length + 2 - k) // 2 + 1
        if length < 1:
            raise ValueError(f"input_shape {tuple(input_shape)} is too short for cnn1d")
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * length, num_classes))
    return _seeded(build, seed)


class LeNet5(nn.Module):
    """TWN's LeNet-5: 32C5 - MP2 - 64C5 - MP2 - 512FC - classes (Li et al., Sec. 4.1).

    Inputs smaller than 28x28 (8x8 digits) use padding 2 so the two 5x5 convolutions fit.
    """

    def __init__(self, input_shape=(1, 28, 28), num_classes=10, batch_norm=True, width=1.0):
        super().__init__()
        c, h, w = input_shape
        c1, c2, f1 = (max(1, round(width * k)) for k in (32, 64, 512))
        pad = 0 if min(h, w) >= 28 else 2
        self.conv1 = nn.Conv2d(c, c1, 5, padding=pad, bias=not batch_norm)
        self.bn1 = nn.BatchNorm2d(c1) if batch_norm else nn.Identity()
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=pad, bias=not batch_norm)
        self.bn2 = nn.BatchNorm2d(c2) if batch_norm else nn.Identity()
        h, w = (h + 2 * pad - 4) // 2, (w + 2 * pad - 4) // 2
        h, w = (h + 2 * pad - 4) // 2, (w + 2 * pad - 4) // 2
        if h < 1 or w < 1:
            raise ValueError(f"input_shape {tuple(input_shape)} is too small for LeNet-5")
        self.fc1 = nn.Linear(c2 * h * w, f1, bias=not batch_norm)
        self.bn3 = nn.BatchNorm1d(f1) if batch_norm else nn.Identity()
        self.fc2 = nn.Linear(f1, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.fc1(x.flatten(1))))
        return self.fc2(x)


@_recorded("lenet5")
def lenet5(input_shape=(1, 28, 28), num_classes=10, *, batch_norm=True, width=1.0, seed=None):
    """TWN's LeNet-5 (32C5-MP2-64C5-MP2-512FC); BatchNorm after each layer by default.
    ``width`` scales the channel and hidden counts (0.25: 8C5-16C5-128FC)."""
    batch_norm = check_bool("batch_norm", batch_norm)
    return _seeded(lambda: LeNet5(tuple(input_shape), num_classes, batch_norm, width), seed)


@_recorded("vgg7")
def vgg7(input_shape=(3, 32, 32), num_classes=10, *, width=1.0, seed=None):
    """TWN's VGG-7: 2x(128C3) - MP2 - 2x(256C3) - MP2 - 2x(512C3) - MP2 - 1024FC - classes,
    BatchNorm after every conv. ``width`` scales the channel counts (0.25 for a quick run)."""
    def build():
        c, h, w = input_shape
        chans = [max(1, round(width * k)) for k in (128, 128, 256, 256, 512, 512)]
        layers: list[nn.Module] = []
        for i, out in enumerate(chans):
            layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU()]
            c = out
            if i % 2 == 1:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"input_shape {tuple(input_shape)} is too small for VGG-7 "
                             f"(three 2x2 poolings); use at least 8x8")
        hidden = max(1, round(width * 1024))
        layers += [nn.Flatten(), nn.Linear(c * h * w, hidden, bias=False),
                   nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
        return nn.Sequential(*layers)
    return _seeded(build, seed)


class _Block(nn.Module):
    """CIFAR basic block with the parameter-free shortcut (He et al. 2016, option A)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, cout - cin

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x
        if self.stride != 1 or self.pad:
            short = x[:, :, :: self.stride, :: self.stride]
            short = F.pad(short, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + short)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 16-32-64 channels, n blocks per stage."""

    def __init__(self, depth=20, input_shape=(3, 32, 32), num_classes=10, width=16):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        blocks, cin = [], width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                blocks.append(_Block(cin, cout, 2 if stage and i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@_recorded("resnet")
def resnet(depth=20, input_shape=(3, 32, 32), num_classes=10, *, width=16, seed=None):
    """CIFAR ResNet of depth 6n+2 (He et al. 2016), as used in the TTQ paper."""
    return _seeded(lambda: CifarResNet(depth, tuple(input_shape), num_classes, width), seed)


def resnet20(**kw):
    """CIFAR ResNet-20 (TTQ: 8.23% fp32 / 8.87% TTQ error on CIFAR-10)."""
    return resnet(depth=20, **kw)


def resnet32(**kw):
    """CIFAR ResNet-32."""
    return resnet(depth=32, **kw)


def resnet44(**kw):
    """CIFAR ResNet-44."""
    return resnet(depth=44, **kw)


def resnet56(**kw):
    """CIFAR ResNet-56."""
    return resnet(depth=56, **kw)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp, "cnn1d": cnn1d, "lenet5": lenet5, "vgg7": vgg7, "resnet": resnet,
    "resnet20": resnet20, "resnet32": resnet32, "resnet44": resnet44, "resnet56": resnet56,
}


def get(name: str, **kwargs) -> nn.Module:
    """Build a model by name: ``get("lenet5", input_shape=(1, 8, 8), seed=0)``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name](**kwargs)


# --------------------------------------------------------------------------- sequence models
# Built from nn.Linear only (no nn.MultiheadAttention / nn.GRU), so that every projection
# gets its own quantized layer and scale, as BitNet's BitLinear does: q, k, v, o, the MLP,
# the gates (ttqlab.quantize also quantizes nn.MultiheadAttention / nn.GRU, but their
# stacked matrices as one layer each).


def _tokens(input_shape: Sequence[int], patch: int, name: str) -> tuple[int, int]:
    """A (channels, length) signal cut into length / patch tokens of channels * patch."""
    if len(input_shape) != 2:
        raise ValueError(f"{name} takes 1-D samples of shape (channels, length), e.g. (1, 40) "
                         f"for mnist1d; got input_shape {tuple(input_shape)}")
    c, length = input_shape
    patch = check_int("patch", patch, low=1, hint=f"a divisor of the length {length}, e.g. 1")
    if length % patch:
        raise ValueError(f"patch must be a positive integer dividing the length {length}, "
                         f"got {patch!r}; e.g. patch=1 (one sample per token)")
    return length // patch, c * patch


def _as_tokens(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, C, L) -> (N, L / patch, C * patch): token t holds samples t*patch .. t*patch+patch-1."""
    n, c, length = x.shape
    return x.reshape(n, c, length // patch, patch).permute(0, 2, 1, 3).reshape(
        n, length // patch, c * patch)


class _Attention(nn.Module):
    """Multi-head self-attention with separate ``q``, ``k``, ``v``, ``o`` nn.Linear:
    ``softmax(Q K^T / sqrt(d_head)) V``, heads concatenated, then ``o``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x):
        n, t, d = x.shape

        def split(z):
            return z.reshape(n, t, self.heads, d // self.heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
        return self.o(y.transpose(1, 2).reshape(n, t, d))


class _EncoderBlock(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(LN(x))``, then ``x + fc2(GELU(fc1(LN(x))))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.fc1, self.fc2 = nn.Linear(dim, mlp_ratio * dim), nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class SignalTransformer(nn.Module):
    """Tokens (patches of the signal) -> ``embed`` -> + sinusoidal positions -> encoder
    blocks -> LayerNorm -> mean over tokens -> ``head``."""

    def __init__(self, input_shape, num_classes, dim, depth, heads, patch, mlp_ratio):
        super().__init__()
        tokens, width = _tokens(input_shape, patch, "transformer")
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads})")
        self.patch = patch
        self.embed = nn.Linear(width, dim)
        pos = torch.arange(tokens, dtype=torch.float32)[:, None]
        freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2) / dim)
        pe = torch.zeros(tokens, dim)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)[:, :dim // 2]
        self.register_buffer("positions", pe, persistent=False)  # fixed, not a weight
        self.blocks = nn.Sequential(*(_EncoderBlock(dim, heads, mlp_ratio)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        h = self.blocks(self.embed(_as_tokens(x, self.patch)) + self.positions)
        return self.head(self.norm(h).mean(dim=1))


@_recorded("transformer")
def transformer(
    input_shape: Sequence[int] = (1, 40),
    num_classes: int = 10,
    dim: int = 32,
    depth: int = 1,
    *,
    heads: int = 4,
    patch: int = 4,
    mlp_ratio: int = 2,
    seed: int | None = None,
) -> nn.Module:
    """A tiny transformer encoder classifier for 1-D signals (mnist1d: 10 tokens of 4
    samples). Every projection is an ``nn.Linear`` (``blocks.i.attn.q/k/v/o``,
    ``blocks.i.fc1/fc2``), so each gets its own quantized layer and scale; ``embed`` and
    ``head`` are the first and last layers."""
    return _seeded(lambda: SignalTransformer(input_shape, num_classes, dim, depth, heads,
                                             patch, mlp_ratio), seed)


class GRUClassifier(nn.Module):
    """Tokens -> ``embed`` -> GRU (gates from nn.Linear ``ih`` and ``hh``) -> last state
    -> ``head``. Per step (Cho et al. 2014, PyTorch's convention):
    ``r, z = sigmoid(ih_r x + hh_r h), sigmoid(ih_z x + hh_z h)``,
    ``n = tanh(ih_n x + r * hh_n h)``, ``h = (1 - z) * n + z * h``."""

    def __init__(self, input_shape, num_classes, hidden, patch):
        super().__init__()
        _, width = _tokens(input_shape, patch, "gru")
        self.patch = patch
        self.embed = nn.Linear(width, hidden)
        self.ih = nn.Linear(hidden, 3 * hidden)
        self.hh = nn.Linear(hidden, 3 * hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        gx = self.ih(self.embed(_as_tokens(x, self.patch)))  # all steps at once
        h = gx.new_zeros(gx.shape[0], self.hh.in_features)
        with parametrize.cached():  # a quantized hh.weight is computed once, not per step
            for t in range(gx.shape[1]):
                xr, xz, xn = gx[:, t].chunk(3, dim=-1)
                hr, hz, hn = self.hh(h).chunk(3, dim=-1)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                h = torch.lerp(torch.tanh(xn + r * hn), h, z)
        return self.head(h)


@_recorded("gru")
def gru(
    input_shape: Sequence[int] = (1, 40),
    num_classes: int = 10,
    hidden: int = 48,
    *,
    patch: int = 4,
    seed: int | None = None,
) -> nn.Module:
    """A GRU classifier for 1-D signals (mnist1d: 10 steps of 4 samples), its gates
    ``ih`` / ``hh`` as ``nn.Linear`` (each quantized layer of its own);
    ``embed`` and ``head`` are the first and last layers."""
    return _seeded(lambda: GRUClassifier(input_shape, num_classes, hidden, patch), seed)


MODELS.update(transformer=transformer, gru=gru)
__all__ += ["GRUClassifier", "SignalTransformer", "gru", "transformer"]


class LSTMClassifier(nn.Module):
    """Tokens -> ``embed`` -> LSTM (gates from nn.Linear ``ih`` and ``hh``) -> last state
    -> ``head``. Per step (Hochreiter & Schmidhuber 1997 with a forget gate, PyTorch's
    convention): ``i, f, g, o = ih x + hh h`` split in four,
    ``c = sigmoid(f) * c + sigmoid(i) * tanh(g)``, ``h = sigmoid(o) * tanh(c)``."""

    def __init__(self, input_shape, num_classes, hidden, patch):
        super().__init__()
        _, width = _tokens(input_shape, patch, "lstm")
        self.patch = patch
        self.embed = nn.Linear(width, hidden)
        self.ih = nn.Linear(hidden, 4 * hidden)
        self.hh = nn.Linear(hidden, 4 * hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        gx = self.ih(self.embed(_as_tokens(x, self.patch)))  # all steps at once
        h = gx.new_zeros(gx.shape[0], self.hh.in_features)
        c = torch.zeros_like(h)
        with parametrize.cached():  # a quantized hh.weight is computed once, not per step
            for t in range(gx.shape[1]):
                i, f, g, o = (gx[:, t] + self.hh(h)).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
        return self.head(h)


@_recorded("lstm")
def lstm(
    input_shape: Sequence[int] = (1, 40),
    num_classes: int = 10,
    hidden: int = 48,
    *,
    patch: int = 4,
    seed: int | None = None,
) -> nn.Module:
    """An LSTM classifier for 1-D signals or one-hot token sequences (``patch=1``: one
    token per step), its gates ``ih`` / ``hh`` as ``nn.Linear`` (each quantized layer of
    its own); ``embed`` and ``head`` are the first and last layers."""
    return _seeded(lambda: LSTMClassifier(input_shape, num_classes, hidden, patch), seed)


class BagOfTokens(nn.Module):
    """The order-blind control: ``embed`` each token, **average over the tokens** (which
    forgets their order: any permutation of the tokens gives the same output), then an MLP
    ``fc`` -> ReLU -> ``head``. It sees only how often each token occurs."""

    def __init__(self, input_shape, num_classes, hidden, patch):
        super().__init__()
        _, width = _tokens(input_shape, patch, "bag_of_tokens")
        self.patch = patch
        self.embed = nn.Linear(width, hidden)
        self.fc = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        h = self.embed(_as_tokens(x, self.patch)).mean(dim=1)
        return self.head(F.relu(self.fc(h)))


@_recorded("bag_of_tokens")
def bag_of_tokens(
    input_shape: Sequence[int] = (1, 40),
    num_classes: int = 10,
    hidden: int = 64,
    *,
    patch: int = 4,
    seed: int | None = None,
) -> nn.Module:
    """An order-blind classifier (`BagOfTokens`): mean of the embedded tokens, then an MLP.
    A baseline for sequence tasks: whatever it cannot learn depends on the order."""
    return _seeded(lambda: BagOfTokens(input_shape, num_classes, hidden, patch), seed)


MODELS.update(lstm=lstm, bag_of_tokens=bag_of_tokens)
__all__ += ["BagOfTokens", "LSTMClassifier", "bag_of_tokens", "lstm"]
