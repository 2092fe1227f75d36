"""Weight quantizers as `torch.nn.utils.parametrize` modules (re-exported).

Each method's module lives with its paper in ``ttqlab/methods/``; this module keeps the
old import path (``from ttqlab.layers import TTQWeight``) working.

A parametrized layer stays an ``nn.Conv2d`` / ``nn.Linear``; ``layer.weight`` is the
quantized weight, the latent float weight lives at
``layer.parametrizations.weight.original`` and is only ever changed by the optimizer.
"""

from __future__ import annotations

from .methods.base import WeightQuantizer
from .methods.binary import BinaryWeight
from .methods.bitnet import BitNetWeight
from .methods.inq import INQWeight
from .methods.ttq import TTQWeight
from .methods.twn import TWNWeight

__all__ = ["BinaryWeight", "BitNetWeight", "INQWeight", "TTQWeight", "TWNWeight",
           "WeightQuantizer"]
