"""Command line for the headless jobs: ``ttqlab train``, ``ttqlab compare``.

    ttqlab train --method ttq --model lenet5 --dataset digits --epochs 10
    ttqlab compare                      # mnist1d, cnn1d(16), 3 seeds, equal budgets
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import data as datasets
from . import models
from .experiments import ALL_METHODS, compare, train_method
from .inq import SCHEDULES
from .stats import layer_report


def _build(args, data):
    kwargs = {"input_shape": data.input_shape, "num_classes": data.num_classes}
    if args.model in ("resnet20", "resnet32", "resnet44", "resnet56") and len(
            data.input_shape) != 3:
        raise SystemExit(f"error: model {args.model} needs image data; dataset "
                         f"{args.dataset} has samples of shape {data.input_shape}")
    return lambda seed: models.get(args.model, seed=seed, **kwargs)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="lenet5", choices=sorted(models.MODELS),
                   help="network (default lenet5)")
    p.add_argument("--dataset", default="digits", choices=datasets.DATASETS,
                   help="dataset (default digits: offline)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per method (default 10)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0, help="same seed, same numbers")
    p.add_argument("--quantize-first-last", action="store_true",
                   help="also quantize the first and last layer (kept fp32 by default)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--progress", action="store_true", help="show progress bars")


def _fit_kwargs(args) -> dict:
    return {"lr": args.lr, "optimizer": args.optimizer, "batch_size": args.batch_size,
            "weight_decay": args.weight_decay, "device": args.device}


def cmd_train(args) -> int:
    data = datasets.load(args.dataset, seed=args.seed)
    build = _build(args, data)
    options = {}
    if args.method == "twn":
        options = {"factor": args.factor}
    elif args.method == "ttq":
        options = {"t": args.t} if args.sparsity is None else {"sparsity": args.sparsity}
    elif args.method == "inq":
        options = {"bits": args.bits}
    model = build(args.seed)
    print(f"{data}\nmodel: {args.model}, method: {args.method}, epochs: {args.epochs}")
    init = "scratch"
    if args.method == "inq":
        print(f"pre-training full precision for {args.epochs} epochs (INQ starts from a "
              f"trained model)")
        train_method(model, "fp32", data, epochs=args.epochs, seed=args.seed,
                     progress=args.progress, **_fit_kwargs(args))
        init = "pretrained"
    result = train_method(model, args.method, data, epochs=args.epochs, init=init,
                          options=options, keep_first_last=not args.quantize_first_last,
                          inq_schedule=SCHEDULES["default"], seed=args.seed,
                          progress=args.progress, **_fit_kwargs(args))
    print(result.history.table())
    print()
    print(layer_report(result.model))
    summary = result.summary
    print(f"\ntest accuracy {summary['test_acc']:.4f}, model {summary['model bytes']} bytes "
          f"packed ({summary['model ratio']:.2f}x smaller than fp32)")
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

    from .experiments import check_seeds

    if args.seeds < 1:
        raise ValueError(f"--seeds is the number of seeds and must be >= 1, got "
                         f"{args.seeds}; e.g. --seeds 3")
    seeds = check_seeds(list(range(args.seed, args.seed + args.seeds)))
    if args.json:  # checked before any training: a run is never lost to a bad path
        _check_writable(args.json)
    model_kwargs = _compare_model(args)
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    data = datasets.load(args.dataset, seed=args.seed)  # seeds vary the init and the order
    _build(args, data)  # checks that the model fits the data

    def build(seed):
        return models.get(args.model, seed=seed, input_shape=data.input_shape,
                          num_classes=data.num_classes, **model_kwargs)
    kw_text = "".join(f", {k}={v}" for k, v in model_kwargs.items())
    print(f"{data}\nmodel: {args.model}{kw_text}; training "
          f"{', '.join(args.methods)} ({args.epochs} epochs each in total, init={args.init},"
          f" seeds {', '.join(map(str, seeds))})", flush=True)
    start = time.perf_counter()
    table, _ = compare(build, data, epochs=args.epochs, methods=args.methods,
                       init=args.init, seeds=seeds, pretrain_epochs=args.pretrain_epochs,
                       keep_first_last=not args.quantize_first_last,
                       progress=args.progress, **_fit_kwargs(args))
    wall = time.perf_counter() - start
    print(table)
    print(f"Wall time: {wall:.0f} s for {len(args.methods)} methods x {len(seeds)} seeds.")
    if args.json:
        args.json.write_text(json.dumps({**table.to_dict(), "dataset": args.dataset,
                                         "model": args.model, "wall_seconds": wall},
                                        indent=1))
        print(f"Wrote {args.json}")
    return 0


#: compare's default model per dataset: the narrow cnn1d on mnist1d leaves the headroom in
#: which the methods differ beyond seed noise (README, "Results")
COMPARE_MODELS = {"mnist1d": ("cnn1d", {"channels": 16}), "digits": ("lenet5", {}),
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


def _check_writable(path: Path) -> None:
    """Fail now, not after minutes of training, if ``path`` cannot be written."""
    if path.is_dir():
        raise ValueError(f"--json {path} is a directory; pass a file name such as "
                         f"{path / 'compare.json'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        with open(path, "a"):
            pass
        if not existed:
            path.unlink()
    except OSError as e:
        raise ValueError(f"cannot write --json {path}: {e.strerror or e}; pass a writable "
                         f"path") from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ttqlab", description="Ternary and low-bit weight "
                                 "quantization (TWN, TTQ, INQ) on PyTorch.")
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one model with one method")
    t.add_argument("--method", required=True, choices=ALL_METHODS)
    _common(t)
    t.add_argument("--factor", type=float, default=0.7, help="TWN threshold factor (0.7)")
    t.add_argument("--t", type=float, default=0.05, help="TTQ threshold t (0.05)")
    t.add_argument("--sparsity", type=float, default=None,
                   help="TTQ fixed-sparsity mode: target fraction of zeros")
    t.add_argument("--bits", type=int, default=5, help="INQ bit width (5)")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("compare", help="train fp32, binary, TWN, TTQ and INQ; print a table")
    _common(c)
    c.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=ALL_METHODS)
    c.add_argument("--init", default="pretrained", choices=["pretrained", "scratch"],
                   help="quantized methods start from the pre-trained fp32 model (default) "
                        "or from scratch; every method trains --epochs epochs in total")
    c.set_defaults(dataset="mnist1d", model=None)
    c.add_argument("--channels", type=int, default=None,
                   help="cnn1d's channel count (default 16 on mnist1d: a narrow model with "
                        "headroom; 64 is MNIST-1D's baseline)")
    c.add_argument("--threads", type=int, default=1,
                   help="PyTorch CPU threads (default 1: fastest for these small models, "
                        "and not slowed down by a busy machine)")
    c.add_argument("--seeds", type=int, default=3,
                   help="number of seeds, --seed, --seed+1, ... (default 3): mean +- std")
    c.add_argument("--pretrain-epochs", type=int, default=None,
                   help="full-precision pre-training epochs within --epochs (default half)")
    c.set_defaults(func=cmd_compare)

    from .reproduce import add_parser as add_reproduce  # ttqlab reproduce NAME ...

    add_reproduce(sub)

    from .export import add_parser as add_export  # ttqlab export ..., ttqlab report FILE

    add_export(sub, train=t)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
