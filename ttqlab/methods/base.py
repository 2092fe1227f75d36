"""The interface every quantization method implements, and the helpers they share.

A method is a ``torch.nn.utils.parametrize`` module: ``forward(latent) -> quantized
weight``. The rest of ttqlab (``convert``, ``stats``, ``train``, ``export``) only talks
to this interface, so a method lives in one file (``ttqlab/methods/<name>.py``):

* ``method``: its name; ``OPTIONS_SPEC``: its options, one :class:`Option` each (name,
  default, check, help), declared once for the constructor, ``ttqlab.export`` (a file's
  options) and ``ttqlab train``'s flags (``OPTIONS``, the names alone, follows);
* ``build(weight, **options)``: the module for one layer;
* ``codes(w)`` (int8) and ``scales(w)`` (tensors), and the static ``dequantize(codes,
  scales)`` that rebuilds the weight from them bit for bit;
* ``stats_row(w)`` (the scale columns of ``ttqlab.fit``'s per-layer history) and
  ``scales_text(w)`` (the "scales" column of ``ttqlab.layer_report``);
* packing: ``bits``, ``scheme(bits, packing)`` (which ``ttqlab.packing`` scheme stores the
  codes), ``scale_names`` and ``n_scales(options, shape)`` (the float scales a file holds)
  and ``scales_from_file(values, options, shape)``;
* the manifest: ``manifest_fields(qw)`` (per-layer values a packed file records besides
  codes and float scales, e.g. INQ's ``n1``), ``read_manifest(group, where)`` (their
  checks) and ``scales_from_manifest(values, options, shape, fields)``;
* the applications: ``tag`` (report label), ``color`` (figures), ``order`` (the row order
  of ``ttqlab compare``), ``finetune_lr``, ``needs_trained``, ``trainer`` (a training
  driver other than quantize-then-fit, e.g. INQ's schedule) and ``VARIANTS`` (further rows
  trained with the same method, e.g. INQ in one step).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..validation import is_number

__all__ = ["Option", "Variant", "WeightQuantizer", "ste"]


# --------------------------------------------------------------------------- checks


def _check_finite(w: Tensor, name: str = "w") -> None:
    if not isinstance(w, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}; "
                        f"pass torch.as_tensor(...) instead")
    if not w.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {w.dtype}; "
                        f"pass {name}.float()")
    if w.numel() and not bool(torch.isfinite(w).all()):
        raise ValueError(f"{name} contains NaN or inf; quantizing it would give a NaN scale. "
                         f"Check the training run that produced these weights.")


def _check_unit_interval(value: float, name: str) -> None:
    if not is_number(value) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}; "
                         f"the papers use {name}=0.05 (TTQ t) or 0.5 (target sparsity)")


def _check_number(value, name: str, rule: str, ok: Callable[[float], bool]) -> None:
    """``value`` must be a finite real number (not a bool) with ``ok(value)``; ``rule`` says
    what to pass."""
    if not is_number(value) or not ok(value):
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def _per_channel_view(w: Tensor) -> Tensor:
    """Rows = output channels (dim 0 of Conv*d and Linear weights)."""
    return w.reshape(w.shape[0], -1) if w.dim() > 1 else w.reshape(1, -1)


def _broadcast(v: Tensor, w: Tensor) -> Tensor:
    """Shape a per-channel vector so that it broadcasts against ``w``."""
    return v.reshape(-1, *([1] * (w.dim() - 1))) if w.dim() > 1 else v


# --------------------------------------------------------------------------- STE


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, q):
        return q

    @staticmethod
    def backward(ctx, g):
        return g, None


def ste(w: Tensor, q: Tensor) -> Tensor:
    """Straight-through estimator: forward ``q`` exactly, backward ``dL/dw = dL/dq``.

    This is the rule of BinaryConnect and TWN: "the gradient is applied unchanged to a
    full-precision latent copy". (The popular one-liner ``w + (q - w).detach()`` has the
    same gradient but its forward value is ``q`` only up to float round-off, so the
    "ternary" weights would not be exactly ternary.)
    """
    return _StraightThrough.apply(w, q.detach())


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Option:
    """One keyword option of a method, declared once (``WeightQuantizer.OPTIONS_SPEC``).

    ``check(value)`` raises ``ValueError`` saying what to pass; the constructor calls it
    (through ``check_options``), ``ttqlab.export`` calls it on a file's options, and
    ``ttqlab train`` on its ``--name`` flag. ``type`` (``float``, ``int``, ``str`` or
    ``bool``) and ``choices`` say how a command line spells the value; ``cli=False``
    leaves it off the command line. ``required``: a packed file must record it (it
    changes the file's layout)."""

    name: str
    default: Any
    help: str
    check: Callable[[Any], None] | None = None
    type: type = float
    choices: tuple = ()
    cli: bool = True
    required: bool = False


@dataclass(frozen=True)
class Variant:
    """A further row of ``ttqlab compare`` / ``train_method`` trained with the same method
    (e.g. INQ in one step): its name, report ``tag``, ``color``, fine-tuning learning rate
    and the keyword arguments it gives the method's training driver."""

    name: str
    tag: str
    color: str | None = None
    finetune_lr: float | None = None
    driver: Mapping[str, Any] = field(default_factory=dict)
    needs_trained: bool | None = None  # None: the method's


# --------------------------------------------------------------------------- interface


class WeightQuantizer(nn.Module):
    """Base class: ``forward(latent) -> quantized weight`` plus the code/scale view."""

    #: the name ``ttqlab.quantize(model, method)`` takes
    method: ClassVar[str] = ""
    #: the keyword options ``ttqlab.quantize`` accepts, one :class:`Option` each (a class
    #: that sets only ``OPTIONS``, the names, gets unchecked options without flags)
    OPTIONS_SPEC: ClassVar[tuple[Option, ...]] = ()
    #: the names of ``OPTIONS_SPEC``, in order (set from it)
    OPTIONS: ClassVar[tuple[str, ...]] = ()
    #: the label of reports and tables ("TWN"); default: ``method`` in capitals
    tag: ClassVar[str] = ""
    #: the colour of its curves in every figure (hex); None: one of ``ttqlab.palette``'s
    #: spare colours
    color: ClassVar[str | None] = None
    #: position among ``ttqlab compare``'s rows (the papers' order; then by name)
    order: ClassVar[float] = 1000.0
    #: ``ttqlab compare``'s fine-tuning learning rate from a start (chosen on validation);
    #: None: the start's recipe lr
    finetune_lr: ClassVar[float | None] = None
    #: the method quantizes a trained model (``compare(init="scratch")`` refuses it)
    needs_trained: ClassVar[bool] = False
    #: a training driver other than quantize-then-fit (INQ's incremental schedule): a
    #: function, or ``"module:function"`` (resolved by ``ttqlab.experiments`` when it trains
    #: the method, so a method file need not import what lies above it); called
    #: ``driver(model, data, *, epochs, options, keep_first_last, progress, fit_kwargs,
    #: schedule, **variant.driver)`` (``schedule``: ``train_method``'s ``inq_schedule``)
    #: and returns the ``History``
    trainer: ClassVar[str | Callable | None] = None
    #: further rows trained with this method (see :class:`Variant`)
    VARIANTS: ClassVar[tuple[Variant, ...]] = ()
    #: the float scales a packed file stores, in order (see ``n_scales``)
    scale_names: ClassVar[tuple[str, ...]] = ()
    #: bits per weight in ttqlab's simple packing (2-bit codes for ternary)
    bits: int = 32

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "OPTIONS_SPEC" in cls.__dict__:
            cls.OPTIONS = tuple(o.name for o in cls.OPTIONS_SPEC)
        elif "OPTIONS" in cls.__dict__:  # names only (a method written before the specs)
            cls.OPTIONS_SPEC = tuple(Option(n, None, f"option {n} of {cls.method}", cli=False)
                                     for n in cls.OPTIONS)
        if not cls.__dict__.get("tag"):
            cls.tag = cls.method.upper()

    @classmethod
    def check_options(cls, **options) -> None:
        """Check each given option with its :class:`Option` (``ValueError`` saying what to
        pass); an option this method does not take is an error too."""
        spec = {o.name: o for o in cls.OPTIONS_SPEC}
        for name, value in options.items():
            if name not in spec:
                raise ValueError(f"unknown option {name!r} for method {cls.method!r}; "
                                 f"allowed: {', '.join(spec) or 'none'}")
            if spec[name].check is not None:
                spec[name].check(value)

    @classmethod
    def build(cls, weight: Tensor, **options) -> WeightQuantizer:
        """The quantizer for one layer whose float weight is ``weight``."""
        return cls(**options)

    def codes(self, w: Tensor) -> Tensor:
        """Integer codes (int8) of the quantized weight computed from latent ``w``."""
        raise NotImplementedError

    def scales(self, w: Tensor) -> dict[str, Tensor]:
        """Float (or integer) scalars that, with the codes, give the quantized weight."""
        raise NotImplementedError

    @staticmethod
    def dequantize(codes: Tensor, scales: dict[str, Tensor]) -> Tensor:
        """Quantized weight from codes and scales; equals ``forward`` bit for bit."""
        raise NotImplementedError

    def options(self) -> dict:
        """The constructor options, for reports and for rebuilding the layer."""
        return {}

    # ---- reports and training history

    def stats_row(self, w: Tensor) -> dict[str, float]:
        """Scale columns for ``ttqlab.fit``'s per-layer history (floats). Default: the
        mean of each scale (``alpha`` of a per-channel layer is averaged)."""
        return {k: float(v.float().mean()) for k, v in self.scales(w).items()
                if v.is_floating_point()}

    def scales_text(self, w: Tensor) -> str:
        """The "scales" column of ``ttqlab.layer_report``."""
        parts = []
        for k, v in self.scales(w).items():
            text = f"{k}={float(v.float().mean()):.4g}"
            parts.append(text + (" (per channel)" if v.numel() > 1 else ""))
        return " ".join(parts)

    def history_codes(self, w: Tensor) -> Tensor | None:
        """Codes to count flips between epochs, or None where they do not exist yet."""
        return self.codes(w)

    @classmethod
    def ops(cls, n: int, nonzero: int, outs: int, positions: int) -> dict[str, int]:
        """Arithmetic of one inference of a layer with ``n`` weights (``nonzero`` of them
        non-zero) and ``outs`` output channels at ``positions`` output positions, for
        ``ttqlab.stats.op_counts``: ``{"mults", "adds", "shifts"}``. Default: a float
        layer, one multiply and one add per weight per position."""
        return {"mults": n * positions, "adds": n * positions, "shifts": 0}

    # ---- packing (``ttqlab.export``, ``ttqlab.stats.packed_nbytes``)

    @classmethod
    def scheme(cls, bits: int, packing: str) -> tuple[str, int | None]:
        """The ``ttqlab.packing`` scheme (and its bits) storing this method's codes;
        ``packing`` is the file's ternary packing ("2bit" or "base3")."""
        raise NotImplementedError

    @classmethod
    def n_scales(cls, options: dict, shape: list[int]) -> int:
        """How many float scales a packed file stores for one layer."""
        return len(cls.scale_names)

    @classmethod
    def scales_from_file(cls, values: Tensor, options: dict, shape: list[int]) -> dict:
        """The ``scales`` dict of :meth:`dequantize` from the floats a file stores."""
        return {k: values[j].clone() for j, k in enumerate(cls.scale_names)}

    # ---- the manifest of a packed file (``ttqlab.export``)

    @classmethod
    def manifest_fields(cls, qw) -> dict[str, Any]:
        """Per-layer values a packed file records in its manifest besides the codes and
        float scales, ``{field: JSON value}`` for the ``QuantizedWeight`` ``qw``; each goes
        to ``group[field][layer]``. ``ValueError`` if the layer cannot be stored."""
        return {}

    @classmethod
    def read_manifest(cls, group: Mapping, where: str) -> dict[str, dict[str, Any]]:
        """``{layer: {field: value}}`` of :meth:`manifest_fields` from a checked manifest
        group (its ``options`` already checked); ``ValueError`` naming the field at fault.
        ``where`` names the group (``"quantized[0]"``)."""
        return {name: {} for name in group["layers"]}

    @classmethod
    def scales_from_manifest(cls, values: Tensor, options: dict, shape: list[int],
                             fields: Mapping[str, Any]) -> dict:
        """The ``scales`` of :meth:`dequantize` from a file: its floats ``values`` and the
        layer's manifest ``fields``. Default: :meth:`scales_from_file`."""
        return cls.scales_from_file(values, options, shape)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options().items())
