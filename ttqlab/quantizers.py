"""Pure tensor functions: the quantization rules of BinaryConnect/BWN, TWN, TTQ and INQ.

Every function takes a float tensor and returns a tensor of the same shape. Each rule
lives with its paper in ``ttqlab/methods/`` (``binary.py``, ``twn.py``, ``ttq.py``,
``inq.py``, next to the parametrization module that trains it); this module is the one
place that gathers them under the names the notebooks and exercises use.

Notation follows the papers (see ``shared/papers.md`` in the repository):

* TWN   (Li et al. 2016):   W ~ alpha * T,  T in {-1, 0, +1}
* TTQ   (Zhu et al. 2017):  w_t in {-W_n, 0, +W_p}
* INQ   (Zhou et al. 2017): W in P_l = {+-2^n1, ..., +-2^n2, 0}
* BitNet b1.58 (Ma et al. 2024): W ~ gamma * RoundClip(W / (gamma + eps), -1, 1), gamma = E|W|
"""

from __future__ import annotations

from .methods.base import _check_finite, ste  # noqa: F401  (_check_finite: activations.py)
from .methods.binary import binarize, ste_sign
from .methods.bitnet import absmean_codes, ste_absmean, ternarize_absmean
from .methods.inq import (  # noqa: F401  (_exponent_of_nearest_pow2: activations.py)
    _exponent_of_nearest_pow2,
    inq_exponent_range,
    pow2_exponents,
    pow2_from_codes,
    pow2_levels,
    quantize_pow2,
)
from .methods.ttq import _TTQFunction, ternarize_ttq, ttq_threshold  # noqa: F401  (exercises)
from .methods.twn import (
    optimal_ternary_params,
    ste_tern,
    ternarize_optimal,
    ternarize_twn,
    ternary_codes,
    twn_scale,
    twn_threshold,
)

__all__ = [
    "absmean_codes",
    "binarize",
    "inq_exponent_range",
    "optimal_ternary_params",
    "pow2_exponents",
    "pow2_from_codes",
    "pow2_levels",
    "quantize_pow2",
    "ste",
    "ste_absmean",
    "ste_sign",
    "ste_tern",
    "ternarize_absmean",
    "ternarize_optimal",
    "ternarize_ttq",
    "ternarize_twn",
    "ternary_codes",
    "ttq_threshold",
    "twn_scale",
    "twn_threshold",
]
