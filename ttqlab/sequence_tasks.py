"""Generated sequence tasks whose label depends on the order of the tokens.

`temporal_order` is the *temporal order problem* of Hochreiter & Schmidhuber (1997, "Long
Short-Term Memory", experiments 6a and 6b): a sequence of random distractor tokens in which
``relevant`` tokens, each an ``X`` or a ``Y``, sit at random positions far apart (one in each
of ``relevant`` equal stretches of the sequence); the class is the order in which they
appear (``XX``, ``XY``, ``YX``, ``YY`` for two; ``XXX`` ... ``YYY``, eight classes, for three).
Between two relevant tokens lie many distractors: a model must keep what it saw early until
the end (long range), and the *order* is the label.

An order-blind model, one that sees only how often each token occurs (a bag of tokens),
cannot tell ``XY`` from ``YX``: it sees "one X, one Y" both times. With ``k`` relevant
tokens the bag determines only the number of X's (``k + 1`` possibilities) among the
``2**k`` equally likely classes, so no bag-of-tokens model can exceed the accuracy
``(k + 1) / 2**k`` (`bag_of_tokens_ceiling`; 3/4 for two relevant tokens, 1/2 for three),
whereas the order determines the class exactly.

Samples are one-hot signals of shape ``(vocab, length)``: channel ``c`` is 1 where token
``c`` sits, so ttqlab's sequence models read them with ``patch=1`` (one token per step, the
first ``nn.Linear`` acting as an embedding table). Everything is generated from ``seed``:
the same seed gives the same tensors.
"""

from __future__ import annotations

import itertools

import torch
from torch.utils.data import TensorDataset

from .data import Data
from .validation import check_int

__all__ = ["DISTRACTORS", "Builder", "bag_of_tokens_ceiling", "temporal_order", "tokens_of"]

#: the distractor tokens; the two relevant tokens are "X" and "Y" after them
DISTRACTORS = ("a", "b", "c", "d")


def bag_of_tokens_ceiling(relevant: int = 3) -> float:
    """The best accuracy (0..1) of any model that sees only the token counts:
    ``(relevant + 1) / 2**relevant`` (it knows how many X's, not where they are)."""
    relevant = check_int("relevant", relevant, low=1)
    return (relevant + 1) / 2 ** relevant


def _sample(n: int, length: int, relevant: int, gen: torch.Generator):
    vocab = len(DISTRACTORS) + 2
    tokens = torch.randint(0, len(DISTRACTORS), (n, length), generator=gen)
    bits = torch.randint(0, 2, (n, relevant), generator=gen)        # 0: X, 1: Y
    stretch = length // relevant
    offsets = torch.randint(0, stretch, (n, relevant), generator=gen)
    positions = torch.arange(relevant) * stretch + offsets           # one per stretch
    tokens.scatter_(1, positions, len(DISTRACTORS) + bits)
    label = (bits * (2 ** torch.arange(relevant - 1, -1, -1))).sum(1)  # XXX=0 ... YYY=7
    x = torch.nn.functional.one_hot(tokens, vocab).permute(0, 2, 1).float()
    return x.contiguous(), label


def temporal_order(n_train: int = 2000, n_test: int = 1000, *, length: int = 24,
                   relevant: int = 3, seed: int = 0) -> Data:
    """The temporal order problem (Hochreiter & Schmidhuber 1997) as a `ttqlab.data.Data`.

    Each sample is ``length`` tokens: distractors drawn uniformly from `DISTRACTORS`, and
    ``relevant`` tokens ``X`` / ``Y`` (each with probability 1/2), the i-th at a uniform
    position of the i-th of ``relevant`` equal stretches. The class is the X/Y sequence read
    as a binary number (X = 0, Y = 1, first token most significant): ``2**relevant``
    equally likely classes. Inputs are one-hot, shape ``(len(DISTRACTORS) + 2, length)``.

    Train and test are drawn independently from ``seed``; call ``.split_validation()`` on
    the result for the validation split every choice is made on.
    """
    n_train = check_int("n_train", n_train, low=1)
    n_test = check_int("n_test", n_test, low=1)
    relevant = check_int("relevant", relevant, low=1)
    length = check_int("length", length, low=1)
    if length < 2 * relevant:
        raise ValueError(f"length ({length}) must be at least 2 * relevant ({2 * relevant}) "
                         f"so that every relevant token has a stretch of its own; pass a "
                         f"longer length, e.g. length=24")
    seed = check_int("seed", seed, low=0)
    gen = torch.Generator().manual_seed(seed)
    train = _sample(n_train, length, relevant, gen)
    test = _sample(n_test, length, relevant, gen)
    classes = ["".join(c) for c in itertools.product("XY", repeat=relevant)]
    vocab = len(DISTRACTORS) + 2
    return Data(
        name=f"temporal-order-{relevant}", train=TensorDataset(*train),
        test=TensorDataset(*test), input_shape=(vocab, length), num_classes=len(classes),
        classes=classes,
        description=(f"temporal order problem (Hochreiter & Schmidhuber 1997): {length} "
                     f"one-hot tokens ({len(DISTRACTORS)} distractors, X, Y), {relevant} "
                     f"relevant X/Y tokens, one per stretch of {length // relevant}; "
                     f"{n_train} train / {n_test} test, generated with seed {seed}"))


def tokens_of(x: torch.Tensor) -> str:
    """One sample's one-hot ``(vocab, length)`` signal back as a string, e.g. ``"cbXad..."``."""
    if x.dim() != 2 or x.shape[0] != len(DISTRACTORS) + 2:
        raise ValueError(f"tokens_of takes one sample of shape ({len(DISTRACTORS) + 2}, "
                         f"length), e.g. data.train[0][0]; got shape {tuple(x.shape)}")
    names = [*DISTRACTORS, "X", "Y"]
    return "".join(names[i] for i in x.argmax(0).tolist())


class Builder:
    """``Builder(name, data, **kwargs)(seed)``: a fresh ``ttqlab.models.get(name, ...)`` for
    the token sequences of ``data`` (its input shape and classes, one token per step,
    ``patch=1``), the same weights for the same seed. A picklable object, so that
    ``ttqlab.experiments.compare(..., workers=2)`` can send it to another process."""

    def __init__(self, name: str, data: Data, **kwargs):
        from .models import MODELS

        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
        self.name = name
        self.kwargs = {"input_shape": tuple(data.input_shape),
                       "num_classes": data.num_classes, "patch": 1, **kwargs}

    def __call__(self, seed: int):
        from .models import get

        return get(self.name, seed=seed, **self.kwargs)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"Builder({self.name!r}, {args})"
