"""Command line for the headless jobs: ``ttqlab train``, ``ttqlab compare``, ``ttqlab course``.

    ttqlab train --method ttq --model lenet5 --dataset digits --epochs 10
    ttqlab compare                      # mnist1d, cnn1d(32), 5 seeds, converged starts
    ttqlab course my-course

Every option and output path is checked before any work starts: a usage error exits with
status 2 and one line naming the option; a failure while working (a diverged run, a file
that cannot be read or written) exits with status 1 and one line, without a traceback.

The parsers are built without importing PyTorch (nor anything of ttqlab that imports it):
``ttqlab --help``, ``ttqlab --version``, every command's ``--help`` and every usage error
answer at once; the names the options accept (models, datasets, methods, packings, recipes)
are listed here and tests/test_cli.py checks them against the library's own registries.
The methods and their options come from the method registry (``ttqlab.methods``) once it
is loaded (a method registered by a script is then a ``--method`` too); before, from
`METHOD_TABLE`, its snapshot. ``ttqlab train``'s per-method flags (``--factor``, ``--t``,
``--bits``, ...) are generated from each method's ``OPTIONS_SPEC``; their values are checked
by the method's own checks before any work.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import importlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from . import __version__

# The names the options accept, without importing the modules that define them (they import
# PyTorch). tests/test_cli.py checks each against its source:
#: sorted(ttqlab.models.MODELS)
MODEL_NAMES: tuple[str, ...] = (
    "bag_of_tokens", "cnn1d", "gru", "lenet5", "lstm", "mlp", "resnet", "resnet20", "resnet32",
    "resnet44", "resnet56", "transformer", "vgg7")
#: ttqlab.data.DATASETS
DATASET_NAMES: tuple[str, ...] = (
    "digits", "mnist1d", "synthetic", "mnist", "fashion-mnist", "cifar10")
#: ttqlab.experiments.method_names() -> (the method's tag, whether it needs a trained model,
#: its command-line options: (name, type, default, choices, help) of each ``OPTIONS_SPEC``
#: entry with ``cli``): `_registry_table`'s answer, used until the registry is loaded
METHOD_TABLE: dict[str, tuple[str, bool, tuple[tuple, ...]]] = {
    "fp32": ("fp32", False, ()),
    "binary": ("binary", False, (
        ("scale", "str", "layer", ("layer", "channel", "none"),
         "binary alpha: one E|W| per 'layer', per output 'channel' (BWN) or 'none' "
         "(BinaryConnect)"),)),
    "twn": ("TWN", False, (
        ("factor", "float", 0.7, (), "TWN threshold factor: delta = factor * E|W|"),
        ("per_channel", "bool", False, (), "TWN: one delta and alpha per output channel"))),
    "ttq": ("TTQ", False, (
        ("t", "float", 0.05, (), "TTQ threshold t, in (0, 1): delta = t * max|w|"),
        ("sparsity", "float", None, (),
         "TTQ fixed-sparsity mode: target fraction of zeros, in (0, 1)"),
        ("reduce", "str", "sum", ("sum", "mean"),
         "TTQ scale gradient: 'sum' (the paper) or 'mean'"))),
    "inq": ("INQ", True, (
        ("bits", "int", 5, (), "INQ bit width b, 2 to 8 (5 in the paper; 2 is ternary)"),)),
    "inq-oneshot": ("INQ", True, (
        ("bits", "int", 5, (), "INQ bit width b, 2 to 8 (5 in the paper; 2 is ternary)"),)),
    "bitnet": ("BitNet", False, ()),
}
#: ttqlab.experiments.ALL_METHODS and DEFAULT_METHODS
ALL_METHODS: tuple[str, ...] = tuple(METHOD_TABLE)
DEFAULT_METHODS: tuple[str, ...] = ("fp32", "binary", "twn", "ttq", "inq", "inq-oneshot")
#: sorted(ttqlab.stats.PACKINGS)
PACKING_NAMES: tuple[str, ...] = ("2bit", "base3")
#: tuple(ttqlab.reproduce.RECIPES)
RECIPE_NAMES: tuple[str, ...] = (
    "twn-mnist", "twn-cifar10-vgg7", "ttq-cifar10-resnet20", "ttq-cifar10-resnet32",
    "ttq-cifar10-resnet44", "ttq-cifar10-resnet56", "inq-mnist-lenet5", "inq-cifar10-resnet20")

EXAMPLES = {
    "train": """examples:
  ttqlab train --method ttq --model lenet5 --dataset digits --epochs 10
  ttqlab train --method inq --model mlp --dataset mnist1d --bits 4 --json inq.json
  ttqlab train --method ttq --sparsity 0.5 --seed 1""",
    "compare": """examples:
  ttqlab compare                              # mnist1d, cnn1d(32), 5 seeds (about 2 min)
  ttqlab compare --seeds 10 --json results.json
  ttqlab compare --channels 64 --methods fp32 twn ttq
  ttqlab compare --dataset digits --init scratch      # no INQ rows: it needs a start""",
    "export": """examples:
  ttqlab export --method twn --model lenet5 --dataset digits --out lenet5-twn.safetensors
  ttqlab export --method ttq --packing 2bit --out lenet5-ttq.safetensors
  ttqlab report lenet5-twn.safetensors""",
    "report": """examples:
  ttqlab report lenet5-twn.safetensors""",
    "reproduce": """examples:
  ttqlab reproduce --list
  ttqlab reproduce twn-mnist --device cuda
  ttqlab reproduce twn-mnist --device cuda --resume        # after an interruption
  ttqlab reproduce ttq-cifar10-resnet20 --dataset-override synthetic --max-epochs 1""",
    "course": """examples:
  ttqlab course                      # into ./ttqlab-course
  ttqlab course ~/courses/ternary
  ttqlab course my-course --force    # overwrite your changed copies with fresh ones""",
}

# Failures while working: one line on stderr, exit status 1. (ImportError: an optional
# package a run needs, e.g. mnist1d for another MNIST-1D seed; the message says which pip
# install adds it.)
RUNTIME_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, RuntimeError, OSError, FloatingPointError, ArithmeticError, ImportError)


def _runtime_errors() -> tuple[type[BaseException], ...]:
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors is a dependency
        return RUNTIME_ERRORS
    return (*RUNTIME_ERRORS, SafetensorError)


def _registry_table() -> dict[str, tuple[str, bool, tuple[tuple, ...]]]:
    """`METHOD_TABLE` as the method registry has it now (imports it: PyTorch)."""
    from . import experiments, methods

    rows = {r.name: r for r in methods.rows()}
    out = {}
    for name in experiments.method_names():
        if name not in rows:  # the control
            out[name] = (name, False, ())
            continue
        r = rows[name]
        out[name] = (r.cls.tag, r.needs_trained, tuple(
            (o.name, o.type.__name__, o.default, tuple(o.choices), o.help)
            for o in r.cls.OPTIONS_SPEC if o.cli))
    return out


def method_table() -> dict[str, tuple[str, bool, tuple[tuple, ...]]]:
    """The live registry's `METHOD_TABLE` once ``ttqlab.methods`` is imported (no import
    here: ``--help`` stays fast), else the snapshot."""
    return _registry_table() if "ttqlab.methods" in sys.modules else METHOD_TABLE


# --------------------------------------------------------------------------- argument types


def positive_int(text: str) -> int:
    """An integer >= 1 (epochs, batch size, sample counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rate, TWN factor)."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value:g}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (weight decay)."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value:g}")
    return value


def whole_number(text: str) -> int:
    """An integer (its range is the option's own check)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


#: how a command line spells an option of each ``Option.type`` (its range is checked by
#: the method's own check, in `_validate`)
_TYPES = {"float": _float, "int": whole_number, "str": str}


# --------------------------------------------------------------------------- checks before work


def check_device(device: str | None) -> str | None:
    """Return ``device`` if this PyTorch can use it, else raise ``ValueError`` saying why."""
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {device!r} is not a device; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        why = ("this PyTorch is a CPU-only build" if torch.version.cuda is None
               else "no GPU is visible")
        raise ValueError(f"--device {device}: {why} (torch {torch.__version__}); use "
                         f"--device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available here; use --device cpu")
    return device


def _existing_ancestor(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists():
            return parent
    return Path.cwd()  # pragma: no cover - the root always exists


def _check_writable_folder(folder: Path, option: str, target: Path) -> None:
    if not folder.is_dir():
        raise ValueError(f"{option} {target}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(f"{option} {target}: cannot write in {folder} "
                         f"({e.strerror or e}); pass a path in a folder you can write to") \
            from None


def check_output_file(path: Path | None, option: str) -> None:
    """Raise ``ValueError`` unless ``path`` can be written (its folder may not exist yet)."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; pass a file name, e.g. "
                         f"{path / 'out.json'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{option} {path}: the file exists and is not writable")
    _check_writable_folder(_existing_ancestor(path.parent), option, path)


def check_output_folder(path: Path | None, option: str) -> None:
    """Raise ``ValueError`` unless ``path`` is (or can become) a writable folder."""
    if path is None:
        return
    path = Path(path)
    _check_writable_folder(_existing_ancestor(path), option, path)


def _validate(args: argparse.Namespace) -> None:
    """Every check that needs no work; ``ValueError`` is a usage error (exit status 2)."""
    check_output_file(getattr(args, "json", None), "--json")
    if args.command == "export":
        check_output_file(args.out, "--out")
    if args.command == "reproduce":
        if args.limit_train is not None and args.limit_train < 1:
            raise ValueError(f"--limit-train must be at least 1, got {args.limit_train}")
        if args.epochs_scale is not None and not args.epochs_scale > 0:
            raise ValueError(f"--epochs-scale must be positive, got {args.epochs_scale:g}")
        if args.max_epochs is not None and args.max_epochs < 1:
            raise ValueError(f"--max-epochs must be at least 1, got {args.max_epochs}")
        if args.name is not None and not args.list:
            check_output_folder(args.out, "--out")
            from .reproduce import _holds_checkpoints

            out = args.out if args.out is not None else Path("runs") / args.name
            if not args.resume and _holds_checkpoints(out):
                raise ValueError(f"--out {out} already holds a run: add --resume to continue "
                                 f"it, or pass another --out to start afresh")
        if args.data_root is not None:
            check_output_folder(args.data_root, "--data-root")
    if args.command == "compare":
        if args.seeds < 1:
            raise ValueError(f"--seeds is the number of seeds and must be >= 1, got "
                             f"{args.seeds}; e.g. --seeds 3")
        if args.seed < 0:  # validation.check_seeds' rule, without importing it (torch)
            raise ValueError(f"--seed must be >= 0, got {args.seed}; e.g. --seed 0")
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        if not 0 < args.val_fraction < 1:
            raise ValueError(f"--val-fraction must be in (0, 1), e.g. 0.1, got "
                             f"{args.val_fraction:g}")
        table = method_table()
        if args.init == "scratch" and args.methods == list(DEFAULT_METHODS):
            args.methods = [m for m in args.methods if not table[m][1]]
        trained = [m for m in args.methods if table[m][1]]
        if args.init == "scratch" and trained:
            tags = " and ".join(dict.fromkeys(table[m][0] for m in trained))
            raise ValueError(f"{tags} quantizes a trained model: with --init scratch pass "
                             f"--methods without {' and '.join(trained)}")
        if len(set(args.methods)) != len(args.methods):
            raise ValueError(f"--methods lists a method twice: {' '.join(args.methods)}")
        _compare_model(args)  # --channels only with cnn1d
    if args.command == "report" and not Path(args.file).is_file():
        raise ValueError(f"no such file: {args.file}")
    if args.command == "course":
        from . import course

        if not args.dest.strip():  # Path("") would be the current folder
            raise ValueError("DEST is empty; name the folder to copy the course into, e.g. "
                             "ttqlab course my-course")
        args.dest = Path(args.dest)
        try:
            course.check_destination(args.dest, force=args.force)
        except FileExistsError as e:
            raise ValueError(str(e)) from None
        check_output_folder(args.dest, "DEST")
    # the checks that import PyTorch come last: a usage error above answers without it
    if args.command in ("train", "export"):
        _check_method_options(args)
    if getattr(args, "device", None) is not None:
        args.device = check_device(args.device)
    if getattr(args, "progress", False) is None:  # progress bars only on a terminal
        args.progress = sys.stderr.isatty()


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def method_options(args: argparse.Namespace) -> dict:
    """The options of ``args.method`` given on the command line (the others take the
    method's defaults); ``ValueError`` for a flag of another method."""
    table = method_table()
    mine = {o[0] for o in table[args.method][2]}
    given = {o[0]: getattr(args, o[0]) for row in table.values() for o in row[2]
             if getattr(args, o[0], None) is not None}
    other = sorted(set(given) - mine)
    if other:
        owners = [m for m, row in table.items() if any(o[0] == other[0] for o in row[2])]
        raise ValueError(f"{_flag(other[0])} is an option of {', '.join(owners)}, not of "
                         f"--method {args.method}; drop it")
    return given


def _check_method_options(args: argparse.Namespace) -> None:
    """Each given option by its method's own check (imports the registry: PyTorch)."""
    given = method_options(args)
    if not given:
        return
    from . import methods

    cls = next((r.cls for r in methods.rows() if r.name == args.method), None)
    if cls is None:
        return
    for name, value in given.items():
        try:
            cls.check_options(**{name: value})
        except ValueError as e:
            raise ValueError(f"{_flag(name)}: {e}") from None


def _add_method_options(p: argparse.ArgumentParser) -> None:
    """One flag per option name of every method (``--factor``, ``--t``, ``--bits``, ...),
    default None: the method's own default. An option named like one of the command's
    flags stays off the command line."""
    table = method_table()
    seen = _flags(p)
    for _, _, options in table.values():
        for name, kind, default, choices, text in options:
            flag = _flag(name)
            if flag in seen:
                continue
            seen.add(flag)
            users = [m for m, row in table.items() if any(o[0] == name for o in row[2])]
            text = f"{text} ({', '.join(users)}; default {default})"
            if kind == "bool":
                p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                               default=None, help=text)
            else:
                p.add_argument(flag, dest=name, type=_TYPES.get(kind, str), default=None,
                               choices=choices or None, help=text)


# --------------------------------------------------------------------------- commands


def _build(args, data):
    from . import models

    kwargs = {"input_shape": data.input_shape, "num_classes": data.num_classes}
    if args.model in ("resnet20", "resnet32", "resnet44", "resnet56") and len(
            data.input_shape) != 3:
        raise ValueError(f"model {args.model} needs image data; dataset {args.dataset} has "
                         f"samples of shape {data.input_shape}")
    return lambda seed: models.get(args.model, seed=seed, **kwargs)


def _common(p: argparse.ArgumentParser, *, epochs_help: str = "epochs per method (default 10)",
            lr: float | None = 1e-3, lr_help: str = "learning rate (default 1e-3)",
            model_help: str = "network (default lenet5)",
            dataset_help: str = "dataset (default digits: offline)") -> None:
    p.add_argument("--model", default="lenet5", choices=MODEL_NAMES, help=model_help)
    p.add_argument("--dataset", default="digits", choices=DATASET_NAMES, help=dataset_help)
    p.add_argument("--epochs", type=positive_int, default=10, help=epochs_help)
    p.add_argument("--lr", type=positive_float, default=lr, help=lr_help)
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"],
                   help="adam (default) or sgd with momentum 0.9")
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="samples per training step (default 64)")
    p.add_argument("--weight-decay", type=non_negative_float, default=0.0,
                   help="L2 weight decay (default 0)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same numbers (default 0)")
    p.add_argument("--quantize-first-last", action="store_true",
                   help="also quantize the first and last layer (kept fp32 by default)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    p.add_argument("--json", type=Path, default=None,
                   help="also write the results to this JSON file (checked before training)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: only when stderr is a terminal)")
    p.add_argument("--compile", action="store_true",
                   help="train through torch.compile (fit(compile=True))")
    p.add_argument("--deterministic", action="store_true",
                   help="use only deterministic PyTorch kernels (fit(deterministic=True))")


def _fit_kwargs(args) -> dict:
    kwargs = {"lr": args.lr, "optimizer": args.optimizer, "batch_size": args.batch_size,
              "weight_decay": args.weight_decay, "device": args.device}
    for key in ("compile", "deterministic"):  # passed only when set: fit may predate them
        if getattr(args, key, False):
            kwargs[key] = True
    return kwargs


def cmd_train(args) -> int:
    from . import data as datasets
    from . import experiments
    from .inq import SCHEDULES
    from .stats import layer_report

    data = datasets.load(args.dataset, seed=args.seed)
    build = _build(args, data)
    options = method_options(args)
    tag, needs_trained, _ = method_table()[args.method]
    model = build(args.seed)
    print(f"{data}\nmodel: {args.model}, method: {args.method}, epochs: {args.epochs}")
    init = "scratch"
    if needs_trained:
        print(f"pre-training full precision for {args.epochs} epochs ({tag} starts from a "
              f"trained model)")
        experiments.train_method(model, experiments.CONTROL, data, epochs=args.epochs,
                                 seed=args.seed, progress=args.progress, **_fit_kwargs(args))
        init = "pretrained"
    result = experiments.train_method(model, args.method, data, epochs=args.epochs, init=init,
                                      options=options,
                                      keep_first_last=not args.quantize_first_last,
                                      inq_schedule=SCHEDULES["default"], seed=args.seed,
                                      progress=args.progress, **_fit_kwargs(args))
    print(result.history.table())
    print()
    packing = getattr(args, "packing", None) or "2bit"  # `ttqlab export`: the file's packing
    report = layer_report(result.model, packing=packing)
    print(report)
    summary, total = result.summary, report.rows[-1]
    size = ("" if getattr(args, "out", None) is not None else  # the file's report says it
            f", model {total['packed bytes']:,} bytes packed {packing} "
            f"({total['ratio']:.2f}x smaller than fp32)")
    print(f"\ntest accuracy {100 * summary['test_acc']:.2f}%{size}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, **result.history.to_dict()},
                                        indent=1))
    if getattr(args, "out", None) is not None:  # `ttqlab export`: save it packed too
        from . import export
        export.save(result.model, args.out, packing=args.packing)
        print("\n" + export.report(args.out))
    return 0


def cmd_compare(args) -> int:
    import time

    from . import data as datasets
    from . import experiments
    from .starts import Recipe

    seeds = list(range(args.seed, args.seed + args.seeds))  # checked in _validate
    model_kwargs = _compare_model(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    data = datasets.load(args.dataset, seed=args.seed)  # seeds vary the init and the order
    _build(args, data)  # checks that the model fits the data

    # a partial of a module-level function: picklable, for --workers
    build = functools.partial(_compare_build, args.model, data.input_shape, data.num_classes,
                              model_kwargs)
    recipe = Recipe(epochs=args.pretrain_epochs, lr=args.pretrain_lr,
                    optimizer=args.optimizer, batch_size=args.batch_size,
                    weight_decay=args.weight_decay)
    kw_text = "".join(f", {k}={v}" for k, v in model_kwargs.items())
    start_text = (f"a full-precision start per seed ({recipe}; cached), then "
                  if args.init == "pretrained" else "")
    print(f"{data}\nmodel: {args.model}{kw_text}; {start_text}{', '.join(args.methods)} "
          f"fine-tune {args.epochs} epochs each; seeds {', '.join(map(str, seeds))}",
          flush=True)
    start = time.perf_counter()
    fit_kwargs = _fit_kwargs(args)
    lr = fit_kwargs.pop("lr")
    table, _ = experiments.compare(build, data, epochs=args.epochs, methods=args.methods,
                                   init=args.init, seeds=seeds, recipe=recipe, lr=lr,
                                   val_fraction=args.val_fraction, cache=not args.no_cache,
                                   keep_first_last=not args.quantize_first_last,
                                   progress=args.progress, workers=args.workers, **fit_kwargs)
    wall = time.perf_counter() - start
    print(f"Wall time: {wall:.0f} s for {len(args.methods)} methods x {len(seeds)} seeds "
          f"({args.workers} process{'es' if args.workers > 1 else ''}).")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**table.to_dict(), "model": args.model,
                                         "model_kwargs": model_kwargs,
                                         "wall_seconds": wall}, indent=1))
        print(f"Wrote {args.json}")
    print(table)  # last: its notes end with the next step, `ttqlab course DEST`
    return 0


def _compare_build(name: str, input_shape, num_classes: int, kwargs: dict, seed: int):
    from . import models

    return models.get(name, seed=seed, input_shape=input_shape, num_classes=num_classes,
                      **kwargs)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


#: compare's default model per dataset: on mnist1d the cnn1d width at which the ternary
#: methods' gap to fp32 has shrunk to a few points (benchmarks/capacity.py, README "Results")
COMPARE_MODELS = {"mnist1d": ("cnn1d", {"channels": 32}), "digits": ("lenet5", {}),
                  "synthetic": ("mlp", {}), "mnist": ("lenet5", {}),
                  "fashion-mnist": ("lenet5", {}), "cifar10": ("resnet20", {})}


def _compare_model(args) -> dict:
    """Fill in ``args.model`` from the dataset; the builder's extra kwargs."""
    default, kwargs = COMPARE_MODELS.get(args.dataset, ("lenet5", {}))
    if args.model is None:
        args.model = default
    elif args.model != default:
        kwargs = {}
    if args.channels is not None:
        if args.model != "cnn1d":
            raise ValueError(f"--channels sets cnn1d's width; model {args.model} has no "
                             f"channels option (drop --channels or pass --model cnn1d)")
        kwargs = {"channels": args.channels}
    return kwargs


def cmd_course(args) -> int:
    from . import course

    copied = course.copy(args.dest, force=args.force)
    print(f"copied {len(copied)} files of the ttqlab course into {args.dest}")
    print(course.how_to_open(args.dest))
    return 0


def _parser(sub, name: str, **kwargs) -> argparse.ArgumentParser:
    return sub.add_parser(name, epilog=EXAMPLES[name],
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


class _Version(argparse.Action):
    """``--version``: ttqlab's version and the installed torch's, read from its metadata
    (importing torch would take seconds)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="show ttqlab's and PyTorch's versions and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib import metadata

        try:
            torch_version = metadata.version("torch")
        except metadata.PackageNotFoundError:
            torch_version = "not installed"
        print(f"ttqlab {__version__} (torch {torch_version})")  # stdout, as argparse's
        parser.exit()


def _lazy(module: str, name: str, args: argparse.Namespace) -> int:
    """Run ``ttqlab.<module>.<name>(args)``, importing the module only now."""
    return getattr(importlib.import_module(f".{module}", __package__), name)(args)


def add_reproduce_parser(sub) -> argparse.ArgumentParser:
    """Register ``ttqlab reproduce NAME ...`` (runs `ttqlab.reproduce.main`)."""
    p = sub.add_parser("reproduce", help="run a paper's experiment with its hyper-parameters "
                       "(downloads MNIST / CIFAR-10; a GPU is recommended)")
    p.add_argument("name", nargs="?", choices=RECIPE_NAMES, metavar="NAME",
                   help=f"one of: {', '.join(RECIPE_NAMES)}")
    p.add_argument("--list", action="store_true", help="describe every recipe and exit")
    p.add_argument("--out", type=Path, default=None, help="run directory (runs/NAME)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    quick = p.add_mutually_exclusive_group()
    quick.add_argument("--epochs-scale", type=float, default=1.0,
                       help="multiply every phase's epochs (a quick run: not the paper's)")
    quick.add_argument("--max-epochs", type=int, default=None,
                       help="at most this many epochs per phase (a quick run)")
    p.add_argument("--dataset-override", default=None, choices=DATASET_NAMES,
                   help="train on another dataset, e.g. synthetic for a test run")
    p.add_argument("--limit-train", type=int, default=None, help="use the first N samples")
    p.add_argument("--data-root", type=Path, default=None, help="dataset cache folder")
    p.add_argument("--seed", type=int, default=0, help="same seed, same numbers (default 0)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the separate full-precision run (TWN recipes)")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument("--compile", action="store_true",
                   help="train through torch.compile (fit(compile=True))")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic PyTorch kernels only (bit-exact --resume on a GPU)")
    p.set_defaults(func=functools.partial(_lazy, "reproduce", "main"))
    return p


def add_export_parsers(sub, train: argparse.ArgumentParser) -> None:
    """Register ``ttqlab export`` (``train``'s options plus ``--out`` and ``--packing``;
    `cmd_train` saves when ``args.out`` is set) and ``ttqlab report FILE``
    (`ttqlab.export.cmd_report`)."""
    e = sub.add_parser("export", parents=[train], conflict_handler="resolve",
                       help="train like `ttqlab train`, then save the model packed and print "
                            "the file's size report")
    e.add_argument("--out", type=Path, required=True,
                   help="file to write, e.g. model.ttq.safetensors")
    e.add_argument("--packing", default="base3", choices=PACKING_NAMES,
                   help="ternary packing: base3 (1.6 bits per weight, default) or 2bit")
    r = sub.add_parser("report", help="print what a packed file holds and its bytes per layer")
    r.add_argument("file", type=Path, help="a file written by ttqlab export / ttqlab.export.save")
    r.set_defaults(func=functools.partial(_lazy, "export", "cmd_report"))


def build_parser() -> argparse.ArgumentParser:
    """The ``ttqlab`` parser and its commands' (imports nothing heavy: no PyTorch)."""
    return _assemble()[0]


def _assemble() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``ttqlab`` parser and ``{command: its parser}``."""
    table = method_table()
    names = tuple(table)
    ap = argparse.ArgumentParser(
        prog="ttqlab", formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        description="Ternary and low-bit weight quantization (TWN, TTQ, INQ) on PyTorch.",
        epilog="examples:\n  ttqlab compare\n  ttqlab course my-course\n"
               "  ttqlab COMMAND --help      # the options and examples of one command\n\n"
               "exit status: 0 done, 1 failed while working, 2 bad options")
    ap.add_argument("--version", action=_Version)
    # no abbreviations: `--epoch 3` is a typo to report, not a silent `--epochs 3`
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND",
                            parser_class=functools.partial(argparse.ArgumentParser,
                                                           allow_abbrev=False))

    t = _parser(sub, "train", help="train one model with one method",
                description="Train one model with one method; print its history and layer "
                            "report.")
    t.add_argument("--method", required=True, choices=names,
                   help=f"quantization method: {', '.join(names)}")
    _common(t)
    _add_method_options(t)  # --factor, --t, --bits, ...: the methods' OPTIONS_SPEC
    t.set_defaults(func=cmd_train)

    c = _parser(sub, "compare", help="fp32, binary, TWN, TTQ and INQ from one converged "
                                      "start; a table with the papers' claims judged",
                description="Train a full-precision start to its plateau (cached), fine-tune "
                            "it with every method,\nthe fp32 control included, for the same "
                            "epochs with a cosine schedule, over several seeds;\nprint a "
                            "table and each paper's claim with its 95% interval.")
    _common(c, epochs_help="fine-tuning epochs of every row, fp32 control included "
                           "(default 10)", lr=None,
            lr_help="fine-tuning learning rate of every row (default: each method's own, "
                    "chosen on the validation split: ttqlab.experiments.FINETUNE_LRS)",
            model_help="network (default: the dataset's, cnn1d with 32 channels on mnist1d)",
            dataset_help="dataset (default mnist1d: generated offline)")
    c.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=names,
                   help=f"the methods to train (default {' '.join(DEFAULT_METHODS)})")
    c.add_argument("--init", default="pretrained", choices=["pretrained", "scratch"],
                   help="every row fine-tunes the converged fp32 start (default) or trains "
                        "--epochs from the random init (INQ rows are then dropped)")
    c.set_defaults(dataset="mnist1d", model=None)
    c.add_argument("--channels", type=positive_int, default=None,
                   help="cnn1d's channel count (default 32 on mnist1d; 64 is MNIST-1D's "
                        "baseline; python -m benchmarks.capacity shows the gap per width)")
    c.add_argument("--threads", type=int, default=1,
                   help="PyTorch CPU threads (default 1: fastest for these small models, "
                        "and not slowed down by a busy machine)")
    c.add_argument("--workers", type=positive_int, default=min(2, _usable_cores()),
                   help="processes that train seeds at once, each on --threads threads "
                        "(default: 2 where this machine lets this process use 2 cores, else "
                        "1); the numbers do not depend on it")
    c.add_argument("--seeds", type=int, default=5,
                   help="number of seeds, --seed, --seed+1, ... (default 5): 95%% intervals "
                        "of the paired differences need at least 2")
    c.add_argument("--pretrain-epochs", type=positive_int, default=40,
                   help="epochs of the full-precision start (default 40: its plateau)")
    c.add_argument("--pretrain-lr", type=positive_float, default=1e-2,
                   help="learning rate of the start, cosine schedule (default 1e-2)")
    c.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of the training set held out for validation (default 0.1)")
    c.add_argument("--no-cache", action="store_true",
                   help="train the starts again instead of reading them from the cache "
                        "($TTQLAB_DATA/starts or ./data/starts)")
    c.set_defaults(func=cmd_compare)

    r = add_reproduce_parser(sub)  # ttqlab reproduce NAME ...
    r.epilog, r.formatter_class = EXAMPLES["reproduce"], argparse.RawDescriptionHelpFormatter
    r.set_defaults(progress=None)  # bars only on a terminal unless --progress

    add_export_parsers(sub, train=t)  # ttqlab export ..., ttqlab report FILE
    for name in ("export", "report"):
        sub.choices[name].epilog = EXAMPLES[name]
        sub.choices[name].formatter_class = argparse.RawDescriptionHelpFormatter

    k = _parser(sub, "course", help="copy the course notebooks into a folder of yours",
                description="Copy the course notebooks into DEST (created if needed) and say "
                            "how to open them.\nYour changed copies are never overwritten "
                            "without --force.")
    k.add_argument("dest", nargs="?", type=str, default="ttqlab-course", metavar="DEST",
                   help="folder for the course (default ./ttqlab-course)")
    k.add_argument("--force", action="store_true",
                   help="overwrite notebooks you have changed in DEST")
    k.set_defaults(func=cmd_course)
    return ap, dict(sub.choices)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (2 = bad options, 1 = failed)."""
    parser, commands = _assemble()
    given = sys.argv[1:] if argv is None else list(argv)
    first = next((a for a in given if not a.startswith("-")), None)
    if first is not None and first not in commands:  # a mistyped command: name the closest
        close = difflib.get_close_matches(first, list(commands), n=1, cutoff=0.6)
        parser.error(f"argument COMMAND: invalid choice: {first!r} "
                     + (f"(did you mean {close[0]}?) " if close else "")
                     + f"(choose from {', '.join(commands)})")
    args, unknown = parser.parse_known_args(argv)
    sub = commands[args.command]
    if unknown:  # the command's own usage, and the option it most likely meant
        sub.error(_unrecognized(sub, unknown))
    try:
        _validate(args)
    except ValueError as e:
        sub.error(str(e))  # prints usage and the message, exits with status 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except _runtime_errors() as e:
        print(f"ttqlab {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1


def _flags(p: argparse.ArgumentParser) -> set[str]:
    """The long options of ``p``, read from its usage line."""
    return set(re.findall(r"--[A-Za-z0-9][\w-]*", p.format_usage()))


def _unrecognized(sub: argparse.ArgumentParser, unknown: list[str]) -> str:
    known = sorted(_flags(sub))
    text = f"unrecognized arguments: {' '.join(unknown)}"
    for arg in unknown:
        close = difflib.get_close_matches(arg.split("=", 1)[0], known, n=1, cutoff=0.6)
        if arg.startswith("-") and close:
            return f"{text} (did you mean {close[0]}?)"
    return text


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, FloatingPointError):
        text += " (the training diverged: try a smaller --lr)"
    return " ".join(text.split()) if len(text) < 400 else text


if __name__ == "__main__":
    sys.exit(main())
