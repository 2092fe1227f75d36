"""Exercises for coursework: write the function, and a check tells you what is wrong.

Each ``check_*`` takes a student's function and runs it on fixed cases (all-zero tensors,
ties at the threshold, one element, 4-D conv weights, ...) and seeded random ones. It
compares the result with ttqlab's reference and prints a short verdict to stdout: either
"✓ all cases passed", or the first case that fails, what was expected, what came back
and, for a known mistake, a hint. It returns True or False (for autograders) and never
raises because of the student's function::

    def twn_threshold(w, factor=0.7):
        return factor * w.abs().mean()

    ttqlab.exercises.check_twn_threshold(twn_threshold)    # ✓ ... -> True

Known mistakes are spotted by running each catalogued wrong variant on the failing case
and matching the student's output against it (``HINTS`` lists the messages). That is
more reliable than guessing from the numbers.

Return a ``torch.Tensor`` (NumPy arrays, numbers and lists of numbers are converted), or
a tuple where the task asks for one. A function that raises ``NotImplementedError``, the
notebooks' stub, gets a "not implemented yet" note and False.
``grade(namespace)`` runs the check of every exercise function that a module or dict defines.

A function that hands back ttqlab's own answer (calls ``ttqlab.quantizers.*``,
``ttqlab.methods.*``, ``ttqlab.packing.pack``, ``ttqlab.export`` where the task is to count
a file's bytes, ... or an exercise's reference, directly,
through a helper or imported by name) fails with a message asking the student to write
it: while it runs, those functions are replaced by stand-ins that refuse to answer.

Layout: one module per notebook, each check next to its catalogue of mistakes:
``twn`` (1), ``ste`` (2), ``ttq`` (3), ``sparsity`` (4), ``inq`` (5), ``deployment`` (6),
``reviewers`` (7 and 7b), ``bitnet`` (8: ``check_ternarize_absmean``), ``own_model`` (9:
``check_payload_bytes``, the bytes of a packed model file), and ``reasoning`` (numeric
predictions: ``check_inq_sparsity``, ``check_laplace_threshold``; answers in
docs/answer_key.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .bitnet import ABSMEAN, check_ternarize_absmean
from .deployment import ADD_ONLY_MATMUL, PACK_2BIT, check_add_only_matmul, check_pack_2bit
from .inq import INQ_PARTITION, POW2_LEVELS, check_inq_partition, check_pow2_levels
from .own_model import PAYLOAD_BYTES, check_payload_bytes
from .reasoning import check_inq_sparsity, check_laplace_threshold, inq_sparsity_layer
from .reviewers import L2_SCALES, POW2_ACTIVATION, check_l2_scales, check_pow2_activation
from .sparsity import SPARSITY_THRESHOLD, check_sparsity_threshold
from .ste import BINARIZE, STE, check_binarize, check_ste
from .ttq import TTQ_BACKWARD, check_ttq_backward
from .twn import (
    OPTIMAL_TERNARY,
    TWN_SCALE,
    TWN_THRESHOLD,
    check_optimal_ternary,
    check_twn_scale,
    check_twn_threshold,
)

__all__ = [
    "EXERCISES",
    "HINTS",
    "REASONING",
    "check_add_only_matmul",
    "check_binarize",
    "check_inq_partition",
    "check_inq_sparsity",
    "check_l2_scales",
    "check_laplace_threshold",
    "check_optimal_ternary",
    "check_pack_2bit",
    "check_payload_bytes",
    "check_pow2_activation",
    "check_pow2_levels",
    "check_sparsity_threshold",
    "check_ste",
    "check_ternarize_absmean",
    "check_ttq_backward",
    "check_twn_scale",
    "check_twn_threshold",
    "grade",
    "inq_sparsity_layer",
]


# --------------------------------------------------------------------------- catalogue, grading

_ALL = (TWN_THRESHOLD, TWN_SCALE, OPTIMAL_TERNARY, BINARIZE, STE, TTQ_BACKWARD,
        SPARSITY_THRESHOLD, POW2_LEVELS, INQ_PARTITION, PACK_2BIT, ADD_ONLY_MATMUL, L2_SCALES,
        POW2_ACTIVATION, ABSMEAN, PAYLOAD_BYTES)

#: exercise (the student's function name) -> its check
EXERCISES: dict[str, Callable[..., bool]] = {
    "twn_threshold": check_twn_threshold,
    "twn_scale": check_twn_scale,
    "optimal_ternary": check_optimal_ternary,
    "binarize": check_binarize,
    "ste": check_ste,
    "ttq_backward": check_ttq_backward,
    "sparsity_threshold": check_sparsity_threshold,
    "pow2_levels": check_pow2_levels,
    "inq_partition": check_inq_partition,
    "pack_2bit": check_pack_2bit,
    "add_only_matmul": check_add_only_matmul,
    "l2_scales": check_l2_scales,
    "pow2_activation": check_pow2_activation,
    "ternarize_absmean": check_ternarize_absmean,
    "payload_bytes": check_payload_bytes,
}

#: reasoning exercise (the student answers with a number) -> its check
REASONING: dict[str, Callable[..., bool]] = {
    "inq_sparsity": check_inq_sparsity,
    "laplace_threshold": check_laplace_threshold,
}

#: exercise -> {mistake: the hint printed when a student's result reproduces it}
HINTS: dict[str, dict[str, str]] = {ex.name: {m: h for m, (_, h) in ex.mistakes.items()}
                                    for ex in _ALL}


def grade(namespace: Any, names: list[str] | None = None, *,
          verbose: bool = False) -> dict[str, bool]:
    """Run the check of every exercise function in ``namespace`` (a module, ``globals()``
    or any dict of functions) and return ``{exercise: passed}``.

    With ``names``, grade exactly those exercises (a missing function counts as failed).
    """
    found = namespace if isinstance(namespace, Mapping) else vars(namespace)
    names = [n for n in EXERCISES if n in found] if names is None else list(names)
    unknown = [n for n in names if n not in EXERCISES]
    if unknown:
        raise ValueError(f"unknown exercises {unknown}; pass names from {sorted(EXERCISES)}")
    results = {}
    for name in names:
        if name in found:
            results[name] = EXERCISES[name](found[name], verbose=verbose)
        else:
            results[name] = False
            if verbose:
                print(f"✗ {name}: no function of that name was found")
    return results
