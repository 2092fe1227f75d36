"""Write the README's results section and the figures from ``benchmarks/results/*.json``.

    python -m benchmarks.report [--results benchmarks/results] [--readme README.md]
                                [--figures docs/figures]

Nothing here is typed in by hand except the papers' published numbers (``PAPERS``, from
the papers' tables as collected in the project's papers.md): our numbers, the run
conditions (dataset, model, epochs, seeds, machine) and the pass / fail of each goal are
read from the result files, so re-running a benchmark and then this script regenerates
the README text between ``<!-- results:start -->`` and ``<!-- results:end -->`` and the
PNGs under ``docs/figures/``. ``ttqlab reproduce`` results copied to
``benchmarks/results/reproduce-<recipe>.json`` are included too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections import defaultdict
from pathlib import Path

from benchmarks import RESULTS, read_results

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
METHODS = ["fp32", "binary", "twn", "ttq", "inq", "bitnet"]
REFERENCE = "fp32-continued"  # accuracy benchmark: fp32 trained as long as the quantized
ACC_METHODS = ["fp32", REFERENCE, "binary", "twn", "ttq", "inq"]
LABELS = {"fp32": "full precision", "binary": "binary", "twn": "TWN", "ttq": "TTQ",
          "inq": "INQ 5-bit", "inq-5bit": "INQ 5-bit", "bitnet": "BitNet b1.58",
          REFERENCE: "full precision, as many epochs"}
COLORS = {"fp32": "#4c4c4c", REFERENCE: "#000000", "binary": "#d62728", "twn": "#1f77b4",
          "ttq": "#2ca02c", "inq": "#9467bd", "inq-5bit": "#9467bd", "naive": "#bbbbbb",
          "bitnet": "#8c564b"}

#: published test accuracy (%) = 100 - the published error where a paper gives errors
PAPERS: list[tuple[str, str, dict[str, float]]] = [
    ("MNIST, LeNet-5", "TWN", {"fp32": 99.41, "binary": 99.05, "twn": 99.35}),
    ("CIFAR-10, VGG-7", "TWN", {"fp32": 92.88, "binary": 90.18, "twn": 92.56}),
    ("CIFAR-10, ResNet-20", "TTQ", {"fp32": 91.77, "ttq": 91.13}),
    ("ImageNet, ResNet-18 top-1", "INQ",
     {"fp32": 68.27, "binary": 60.80, "twn": 61.80, "inq": 68.98}),
]
PAPER_SOURCES = ("TWN: Li et al. 2016, Table 2 (binary = their binary-weight counterpart, an "
                 "unscaled sign: BinaryConnect, ttqlab's `scale=\"none\"`; the binary rows "
                 "measured here use the default `scale=\"layer\"`). TTQ: Zhu et al. 2017, "
                 "Table 1, as 100 − error. INQ: Zhou et al. 2017, 100 − top-1 error of "
                 "ResNet-18; binary (BWN, one scale per output channel: ttqlab's "
                 "`scale=\"channel\"`) and TWN as quoted there.")
ONESHOT_NOTE = ("What the INQ ablation controls for: \"one step\" freezes every weight at "
                "once and then re-trains for the same epochs, but then only what stays in full "
                "precision (first and last layer, biases, BatchNorm) can still learn; INQ's "
                "steps leave free weights to re-train. Against one-shot rounding followed by "
                "straight-through fine-tuning of every weight at an equal budget, INQ does "
                "*not* win on these small networks (notebooks 5 and 7b measure it): what "
                "shows is that re-training free weights helps, not that incremental freezing "
                "is needed.")
TERNARY_GAP = 1.5   # goal: ternary within 1.5 points of full precision
STEP_RATIO = 1.10   # goal: training-step time at most 1.10x full precision



def _save(fig, path: Path) -> None:
    """Write a figure as PNG with no software stamp (the file only changes with its data)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)

# --------------------------------------------------------------------------- helpers


def load(results: Path) -> dict[str, dict]:
    """Every result file in ``results``, by benchmark name (reproduce-* by file stem)."""
    docs = {}
    for path in sorted(Path(results).glob("*.json")):
        if path.stem.startswith("reproduce-"):  # a result.json of ttqlab reproduce
            docs[path.stem] = json.loads(path.read_text())
        else:
            doc = read_results(path)
            docs[doc["benchmark"]] = doc
    return docs


def _md(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "−")


def _machine(meta: dict) -> str:
    if not meta:
        return "machine not recorded"
    text = f"{meta.get('cpu', '?')}, {meta.get('cores', '?')} cores"
    if meta.get("gpu"):
        text += f", {meta['gpu']}"
    text += f", torch {meta.get('torch', '?')}"
    if "load average" in meta:
        text += f", load average {meta['load average']} when the run ended"
        if meta["load average"] > meta.get("cores", 1):
            text += " (other work shared the machine: times are inflated)"
    if "date" in meta:
        text += f", {meta['date'][:10]}"
    return text


def _quick_note(meta: dict) -> str:
    return " **(quick CI configuration: not representative)**" if meta.get("quick") else ""


# --------------------------------------------------------------------------- accuracy


ACC_ORDER = ["fp32", "binary", "twn", "ttq", "inq", "inq-oneshot"]
ACC_LABELS = {**LABELS, "inq-oneshot": "INQ 5-bit, one step (ablation)"}


def _groups(rows: list[dict]) -> dict[tuple, dict[str, dict]]:
    """(dataset, model, layers, init) -> method -> row (rows of benchmarks.accuracy)."""
    out: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        if r.get("method") in ACC_ORDER and "test_acc_mean" in r:
            out[_key(r)][r["method"]] = r
    return {k: {m: g[m] for m in ACC_ORDER if m in g} for k, g in out.items()}


def _key(row: dict) -> tuple:
    return row["dataset"], row["model"], row.get("layers", "inner"), row.get("init", "")


def _group_name(key: tuple) -> str:
    dataset, model, layers, init = key
    extra = (", all layers" if layers == "all" else "") + (
        ", from scratch" if init == "scratch" else "")
    return f"{dataset}, {model}{extra}"


def _claims(g: dict[str, dict]) -> list[str]:
    """Each paper's claim as the paired per-seed difference, and whether it shows."""
    from benchmarks.accuracy import CLAIMS

    lines = []
    test = next(iter(g.values())).get("test")
    one = 100 / test if test else 0.0
    for claim, paper, better, worse in CLAIMS:
        if better not in g or worse not in g:
            continue
        d = [a - b for a, b in zip(g[better]["test_acc"], g[worse]["test_acc"])]
        m = sum(d) / len(d)
        s = math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1)) if len(d) > 1 else 0.0
        if worse == "fp32":
            shows = m > -max(2 * s, one)
        else:
            shows = m > 0 and m > 2 * s
        lines.append(f"- {paper}: *{claim}* ({ACC_LABELS[better]} − {ACC_LABELS[worse]}): "
                     f"{_signed(m)} ± {s:.2f} points per seed: "
                     + ("**shows** here." if shows else "**does not show** here."))
    return lines


def accuracy_section(doc: dict, figure: str | None) -> str:
    groups = _groups(doc["rows"])
    if not groups:
        return ""
    text = ["### Accuracy", ""]
    for key, g in groups.items():
        r0 = next(iter(g.values()))
        seeds = len(r0["seeds"])
        header = ["method", f"test accuracy (%), {_group_name(key)}", "Δ vs fp32 (points)",
                  "zeros (%)"] + [f"{name} ({src} paper)" for name, src, _ in PAPERS]
        table = []
        for m, r in g.items():
            d = r.get("delta_vs_fp32_mean")
            cells = [ACC_LABELS[m], f"{r['test_acc_mean']:.2f} ± {r['test_acc_std']:.2f}",
                     "reference" if m == "fp32" else "–" if d is None else
                     f"{_signed(d)} ± {r['delta_vs_fp32_std']:.2f}",
                     f"{100 * r['sparsity']:.1f}"]
            for _, _, ref in PAPERS:
                v = ref.get(m)
                cells.append("–" if v is None else f"{v:.2f}" + (
                    "" if m == "fp32" else f" ({_signed(v - ref['fp32'])})"))
            table.append(cells)
        minutes = r0.get("compare seconds")
        text += [
            f"Test accuracy in %, mean ± standard deviation over {_n(seeds, 'seed')}; Δ is "
            "the mean ± std of the per-seed differences to full precision. Equal budgets: "
            f"every method trained {_n(r0['epochs'], 'epoch')} in total, half full-precision "
            "pre-training and half fine-tuning (INQ: re-training spread over its steps, the "
            "same total; fp32 trains on unquantized: the control). One test image = "
            f"{r0['point per test image']:.2f} points. The papers' published numbers beside "
            "them, with their gap to their own full precision (other datasets and networks: "
            f"see *Not reproduced here*).{_quick_note(doc['meta'])}",
            "",
            _md(header, table),
            "",
            f"Papers: {PAPER_SOURCES}",
            "",
            f"Conditions: {_conditions(key, g)}. Machine: {_machine(doc['meta'])}. "
            f"`{doc['meta'].get('command', 'python -m benchmarks accuracy')}`."
            + (f" The {len([m for m in g if m != 'inq-oneshot'])}-method comparison over "
               f"{_n(seeds, 'seed')} took {minutes:.0f} s on this (shared) machine."
               if minutes else ""),
            "",
            "Which papers' claims show on this dataset (a difference counts when it exceeds "
            "twice its per-seed spread):",
            "",
            *_claims(g),
            "",
            *([ONESHOT_NOTE, ""] if "inq-oneshot" in g else []),
        ]
    if figure:
        text += [f"![Test accuracy, Δ to full precision and size per method]({figure})"]
    return "\n".join(text).rstrip()


def _conditions(key: tuple, g: dict) -> str:
    """One setup's data, model, epochs and training, from its rows."""
    r = next(iter(g.values()))
    size = f" ({r['train']} train / {r['test']} test)" if "train" in r else ""
    layers = "all layers quantized" if key[2] == "all" else "first and last layer fp32"
    return (f"{key[0]}{size}, {key[1]}, {layers}, seeds {', '.join(map(str, r['seeds']))}, "
            f"{_n(r['epochs'], 'epoch')} per method" +
            (f", {r['training']}" if "training" in r else ""))


def plot_accuracy(doc: dict, path: Path) -> bool:
    """ttqlab.viz.accuracy_intervals of the first setup: dots with seed error bars."""
    groups = _groups(doc["rows"])
    if not groups:
        return False
    import matplotlib

    matplotlib.use("Agg")
    from ttqlab import viz

    key, g = next(iter(groups.items()))
    fig = viz.accuracy_intervals(list(g.values()), title=f"{_group_name(key)}: "
                                 f"{len(next(iter(g.values()))['seeds'])} seeds, equal budgets")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    return True


# --------------------------------------------------------------------------- step time


def step_time_section(doc: dict) -> str:
    rows = doc["rows"]
    if not rows:
        return ""
    by = defaultdict(dict)
    for r in rows:
        by[(r["model"], r["device"], r["batch"], r.get("threads"), bool(r.get("compiled")))][
            r["method"]] = r
    methods = [m for m in METHODS if any(m in v for v in by.values())]
    header = ["model", "device", "batch", "fp32 step (ms)"] + [
        f"{LABELS[m]} / fp32" for m in methods if m != "fp32"]
    table, worst = [], []
    for (model, device, batch, threads, compiled), v in by.items():
        how = _n(threads, "thread") + (", torch.compile" if compiled else "")
        cells = [model, f"{device} ({how})", str(batch),
                 f"{v['fp32']['step_ms']:.1f}"]
        for m in methods:
            if m != "fp32":
                ratio = v[m]["ratio"]
                worst.append((ratio, f"{LABELS[m]} on {model}"
                              + (" (compiled)" if compiled else "")))
                spread = v[m].get("ratio_spread")
                cells.append(f"{ratio:.2f}" + (f" ± {spread:.2f}" if spread else "")
                             + ("" if ratio <= STEP_RATIO else " ✗"))
        table.append(cells)
    ratio, where = max(worst)
    verdict = ("met" if ratio <= STEP_RATIO else
               f"not met: worst {ratio:.2f} ({where})")
    return "\n".join([
        "### Training-step time",
        "",
        "One training step (forward, cross-entropy, backward, Adam) of each method divided "
        "by the full-precision step on the same model and batch, timed in interleaved rounds "
        "(fp32, binary, TWN, TTQ, INQ, BitNet, fp32, ...): the median over rounds of each "
        "round's ratio, ± half its range over the rounds (the machine's noise). "
        "`torch.compile` rows compare compiled quantized models with compiled fp32 (the "
        "compilation happens in the warm-up, untimed)."
        f"{_quick_note(doc['meta'])}",
        "",
        _md(header, table),
        "",
        f"Goal: every ratio ≤ {STEP_RATIO:.2f}: {verdict}. LeNet-5 on 1x28x28 inputs "
        "(MNIST-shaped), ResNet-20 on 3x32x32 (CIFAR-shaped), random data; INQ measured "
        f"with half the weights frozen. Machine: {_machine(doc['meta'])}. "
        f"`{doc['meta'].get('command', 'python -m benchmarks step_time')}`.",
    ])


# --------------------------------------------------------------------------- file size


def file_size_section(doc: dict, figure: str | None) -> str:
    rows = [r for r in doc["rows"] if r.get("first/last", "fp32") == "fp32"] or doc["rows"]
    if not rows:
        return ""
    table = []
    for r in rows:
        table.append([r["model"], LABELS.get(r["method"], r["method"]), r["packing"],
                      f"{r['q fp32 file']:,} → {r['q packed file']:,}",
                      f"{r['q ratio']:.1f}x ({r['q bits/weight']:.2f} bits/weight)",
                      f"{r['model fp32 file']:,} → {r['model packed file']:,}",
                      f"{r['model ratio']:.1f}x", f"{r['naive file']:,}",
                      "yes" if r["outputs equal"] else "NO"])
    header = ["model", "method", "packing", "quantized layers: fp32 → packed (bytes)",
              "ratio", "whole model: fp32 → packed (bytes)", "ratio",
              "unpacked quantized state_dict (bytes)", "loaded model = trained model"]
    text = ["### File size", "",
            "Bytes on disk (`os.path.getsize`) of `torch.save(state_dict)` in fp32 against "
            "`ttqlab.export.save`; the whole model keeps its first and last layer, biases "
            f"and BatchNorm in fp32.{_quick_note(doc['meta'])}", "", _md(header, table), "",
            f"Machine: {_machine(doc['meta'])}. "
            f"`{doc['meta'].get('command', 'python -m benchmarks file_size')}`."]
    if figure:
        text += ["", f"![File size per method]({figure})"]
    return "\n".join(text)


def plot_file_size(doc: dict, path: Path) -> bool:
    """Whole-model file size per method and packing, one panel per model."""
    rows = [r for r in doc["rows"] if r.get("first/last", "fp32") == "fp32"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    if not models:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        rs = [r for r in rows if r["model"] == model]
        names = ["fp32\nstate_dict", "quantized\nstate_dict\n(unpacked)"] + [
            f"{LABELS.get(r['method'], r['method'])}" + (
                f"\n{r['packing']}" if r["packing"] != "-" else "") for r in rs]
        kib = [rs[0]["model fp32 file"] / 1024, rs[0]["naive file"] / 1024] + [
            r["model packed file"] / 1024 for r in rs]
        colors = [COLORS["fp32"], COLORS["naive"]] + [COLORS.get(r["method"], "C0")
                                                      for r in rs]
        bars = ax.bar(range(len(kib)), kib, color=colors)
        for b, r in zip(bars[2:], rs):
            ax.annotate(f"{r['model ratio']:.1f}x", (b.get_x() + b.get_width() / 2,
                                                     b.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(kib)), names, fontsize=7)
        ax.set_ylabel("file size (KiB)")
        ax.set_xlabel("storage (method, packing)")
        ax.set_title(f"{model}: whole-model file on disk")
    fig.suptitle("File size per method (labels: times smaller than the fp32 file)")
    _save(fig, path)
    return True


# --------------------------------------------------------------------------- others


def kernels_section(doc: dict) -> str:
    rows = doc["rows"]
    if not rows:
        return ""
    methods = [m for m in METHODS if m != "fp32" and any(r["method"] == m for r in rows)]
    by = defaultdict(dict)
    for r in rows:
        by[(r["model"], r["path"])][r["method"]] = r
    table = []
    for (model, path), v in by.items():
        cells = [model, {"device": "GPU, eager (any device but the CPU)", "cpu": "CPU"}[path],
                 str(v["fp32"]["kernels"])]
        for m in methods:
            r = v[m]
            cells.append(f"{r['extra_per_layer']:.0f}" + (
                f" (+{r['host_reads'] // r['layers']} host read"
                f"{'s' if r['host_reads'] // r['layers'] > 1 else ''})" if r["host_reads"] else ""))
        table.append(cells)
    header = ["model", "path", "fp32 kernels per step"] + [
        f"{LABELS[m]}: extra per layer" for m in methods]
    return "\n".join([
        "### Kernels per training step",
        "",
        "Tensor operations one forward and backward pass dispatches, counted exactly "
        "(views and metadata excluded): on a GPU a small model's quantized step is bound "
        "by such kernel launches, not by arithmetic. The GPU path is counted on PyTorch's "
        "`meta` device, where any read of a value back to the host would fail: none does. "
        "These are counts, not times; GPU step times are in *Training-step time* once "
        "measured." + _quick_note(doc["meta"]),
        "",
        _md(header, table),
        "",
        f"`{doc['meta'].get('command', 'python -m benchmarks.kernels')}` "
        f"(torch {doc['meta'].get('torch', '?')}).",
    ])


def generic_section(title: str, doc: dict, intro: str) -> str:
    rows = doc["rows"]
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v):
        if isinstance(v, float):
            return "–" if math.isnan(v) else f"{v:.3g}"
        return "–" if v is None else str(v)

    return "\n".join([f"### {title}", "", intro + _quick_note(doc["meta"]), "",
                      _md(cols, [[fmt(r.get(c)) for c in cols] for r in rows]), "",
                      f"Machine: {_machine(doc['meta'])}. "
                      f"`{doc['meta'].get('command', '')}`."])


def reproduce_section(docs: dict[str, dict]) -> str:
    from ttqlab.reproduce import RECIPES

    measured = {name.removeprefix("reproduce-"): doc for name, doc in docs.items()
                if name.startswith("reproduce-")}
    table = []
    for name, recipe in RECIPES.items():
        paper = ", ".join(f"{LABELS.get(k, k)} {v:.2f}" for k, v in recipe.reference.items())
        got = measured.get(name)
        ours = "not run here"
        if got and "measured" in got:
            machine = got["conditions"]["machine"]
            ours = ", ".join(f"{LABELS.get(k, k)} {v:.2f}" for k, v in got["measured"].items()
                             if k in METHODS)
            ours += f" ({machine.get('gpu', machine['device'])} x{machine['processes']}" + (
                "" if got["conditions"]["full recipe"] else ", shortened run") + ")"
        table.append([f"`ttqlab reproduce {name}`", recipe.title, paper or recipe.source,
                      ours])
    return "\n".join([
        "### Not reproduced here, and how to",
        "",
        "The papers' own experiments need MNIST or CIFAR-10 (a download) and hours of GPU "
        "time (the TTQ ResNet recipes train 164 + 400 epochs); ImageNet (AlexNet, "
        "ResNet-18/50, VGG-16, GoogleNet) needs a 150 GB download and days of multi-GPU "
        "time and has no recipe here. This machine has neither a GPU nor internet, so the "
        "numbers above come from the offline datasets instead. With a GPU and internet, "
        "each recipe below runs a paper's experiment with its hyper-parameters "
        "(`ttqlab reproduce --list` prints every setting and where the paper is silent), "
        "checkpoints every epoch and continues after an interruption with `--resume`; "
        "`torchrun --nproc_per_node N -m ttqlab reproduce NAME --device cuda` spreads it "
        "over N GPUs with PyTorch's DistributedDataParallel.",
        "",
        _md(["command", "experiment", "paper (test accuracy %)", "ttqlab"], table),
    ])


# --------------------------------------------------------------------------- README


def render(docs: dict[str, dict], figures: Path, readme_dir: Path) -> str:
    """The markdown between the README markers; writes the figures as a side effect."""
    def rel(p: Path) -> str:
        return Path(os.path.relpath(p, readme_dir)).as_posix()

    parts = ["Every number below is measured by a script in `benchmarks/` "
             "(`python -m benchmarks`, then `python -m benchmarks.report` writes this "
             "section and the figures from `benchmarks/results/*.json`)."]
    if "accuracy" in docs:
        fig = figures / "accuracy.png"
        parts.append(accuracy_section(docs["accuracy"],
                                      rel(fig) if plot_accuracy(docs["accuracy"], fig)
                                      else None))
    if "step_time" in docs:
        parts.append(step_time_section(docs["step_time"]))
    if "kernels" in docs:
        parts.append(kernels_section(docs["kernels"]))
    if "file_size" in docs:
        fig = figures / "size_per_method.png"
        parts.append(file_size_section(docs["file_size"],
                                       rel(fig) if plot_file_size(docs["file_size"], fig)
                                       else None))
    if "notebooks" in docs:
        parts.append(generic_section("Notebook run times", docs["notebooks"],
                                     "Wall-clock time and the kernel's peak memory to execute "
                                     "each course notebook top to bottom (`nbclient`, a "
                                     "fresh kernel each)."))
    if "launch" in docs:
        intro = ("Install from `binder/`, start JupyterLab, run each notebook in headless "
                 "Chromium.")
        launched = {r.get("step", "").split(": ", 1)[-1] for r in docs["launch"]["rows"]}
        missing = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9]*.ipynb")
                         if p.name not in launched)
        if missing:  # say so rather than let an old table pass for the current course
            intro += (f" Stale: measured {docs['launch']['meta'].get('date', '?')[:10]}, "
                      f"before {', '.join(missing)} existed and before the build started "
                      f"from repo2docker's base environment; the browser tests still run "
                      f"every notebook in CI. `python -m benchmarks.launch` refreshes it.")
        parts.append(generic_section("Binder-style launch", docs["launch"], intro))
    parts.append(reproduce_section(docs))
    return "\n\n".join(p for p in parts if p)


def write_readme(readme: Path, section: str) -> None:
    """Replace the text between the results markers (and only that), atomically."""
    text = readme.read_text()
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"{readme} must contain {START} and then {END} exactly once")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    new = f"{head}{START}\n{section}\n{END}{tail}"
    tmp = readme.with_name(f".{readme.name}.tmp")
    tmp.write_text(new)
    os.replace(tmp, readme)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    args = ap.parse_args(argv)
    docs = load(args.results)
    if not docs:
        raise SystemExit(f"no result files in {args.results}; run python -m benchmarks first")
    section = render(docs, args.figures, args.readme.resolve().parent)
    write_readme(args.readme, section)
    print(f"wrote {args.readme} (results section) and figures in {args.figures}")
    return section


if __name__ == "__main__":
    main()
