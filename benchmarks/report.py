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
                "once and then re-trains for the same epochs, so only what stays in full "
                "precision (first and last layer, biases, BatchNorm) can still learn; INQ's "
                "steps leave free weights to re-train. Its verdict above is the paired "
                "difference between the two at an equal budget.")
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
            raw = json.loads(path.read_text())
            doc = {**(raw if isinstance(raw, dict) else {}), **read_results(path)}
            docs[doc["benchmark"]] = doc  # with extra keys (accuracy: claims, selection)
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


ACC_ORDER = ["fp32", "binary", "twn", "ttq", "inq", "inq-oneshot", "bitnet"]
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


def _ci(mean, low, high) -> str:
    if low is None or high is None:
        return _signed(mean)
    return f"{_signed(mean)} [{_signed(low)}, {_signed(high)}]"


VERDICT_RULE = ("A claim *shows* when the 95% interval of its paired per-seed difference "
                "excludes zero in the claimed direction (for \"matches\": lies above minus "
                "the margin); it *does not show* when the interval excludes the claim (a "
                "gain of one test image, or a loss larger than the margin); otherwise it "
                "is *not resolved* with that many seeds: more seeds would narrow the "
                "interval. Never \"no difference\".")


def _claims(claims: list[dict], key: tuple) -> list[str]:
    """Each paper's claim, its interval and its verdict, as ttqlab.experiments judged it."""
    lines = []
    for c in claims:
        if (c.get("dataset"), c.get("model")) != key[:2]:
            continue
        iv = c["interval"]
        margin = (f" (margin {c['margin']:.2f} points)" if c["kind"] == "matches" else "")
        lines.append(f"- {c['paper']}: *{c['claim']}* ({ACC_LABELS[c['better']]} − "
                     f"{ACC_LABELS[c['worse']]}): {_ci(iv['mean'], iv['low'], iv['high'])} "
                     f"points{margin}: **{c['verdict']}**.")
    return lines


def _protocol(r0: dict, selection: dict | None) -> str:
    """The protocol of one setup, in words, from its rows' recorded meta."""
    recipe, ft = r0.get("recipe"), r0.get("finetune") or {}
    starts = r0.get("starts") or []
    text = ""
    if recipe:
        final = [s["final"] for s in starts]
        gain = [s["gain_last_quarter"] for s in starts]
        sched = "cosine schedule" if recipe.get("lr_schedule") == "cosine" else \
            f"schedule {recipe.get('lr_schedule')}"
        text += (f"Per seed, a full-precision start trained {recipe['epochs']} epochs "
                 f"({recipe['optimizer']} lr {recipe['lr']:g}, {sched}, batch "
                 f"{recipe['batch_size']})")
        if final:
            text += (f", ending at {sum(final) / len(final):.2f}% validation accuracy with "
                     f"{_signed(sum(gain) / len(gain))} points over its last quarter of "
                     f"epochs (its plateau; see *Where full precision converges*)")
        text += "; then every row, the fp32 control included, fine-tunes that start "
    else:
        text += "Every row trains from the same random init "
    text += (f"for {_n(r0['epochs'], 'epoch')} ({ft.get('optimizer', 'adam')}, "
             f"{ft.get('lr_schedule') or 'constant'} decay); INQ's re-training over its "
             f"steps adds up to the same epochs. ")
    if selection:
        grid = ", ".join(f"{c['lr']:g}" for c in selection["candidates"])
        edge = selection.get("at_grid_edge") or []
        text += (f"Each row's fine-tuning lr (column *lr*) was chosen on the validation "
                 f"split from {grid}, the fp32 control's too"
                 + (f"; {', '.join(ACC_LABELS[m] for m in edge)} chose an end of that grid"
                    if edge else "") + ". ")
    text += (f"Validation: {r0.get('val', '?')} of the training samples, held out for every "
             f"choice; the test split ({r0['test']} images, one image = "
             f"{r0['point per test image']:.2f} points) was evaluated once per run, at the "
             f"end.")
    return text


def accuracy_section(doc: dict, figure: str | None) -> str:
    groups = _groups(doc["rows"])
    if not groups:
        return ""
    text = ["### Accuracy, in the papers' regime", ""]
    selections = {(s["dataset"], s["model"]): s for s in doc.get("selection", [])}
    for key, g in groups.items():
        r0 = next(iter(g.values()))
        seeds = len(r0["seeds"])
        header = ["method", "lr", "validation (%)", f"test accuracy (%), {_group_name(key)}",
                  "Δ vs fp32, 95% CI (points)", "zeros (%)"] + [
            f"{name} ({src} paper)" for name, src, _ in PAPERS]
        table = []
        for m, r in g.items():
            d = r.get("delta_vs_fp32_mean")
            v = r.get("val_acc_mean")
            cells = [ACC_LABELS[m], f"{r['lr']:g}" if "lr" in r else "–",
                     "–" if v is None else f"{v:.2f}",
                     f"{r['test_acc_mean']:.2f} ± {r['test_acc_std']:.2f}",
                     "reference" if m == "fp32" else "–" if d is None else
                     _ci(d, r.get("delta_vs_fp32_low"), r.get("delta_vs_fp32_high")),
                     f"{100 * r['sparsity']:.1f}"]
            for _, _, ref in PAPERS:
                v = ref.get(m)
                cells.append("–" if v is None else f"{v:.2f}" + (
                    "" if m == "fp32" else f" ({_signed(v - ref['fp32'])})"))
            table.append(cells)
        seconds = r0.get("compare seconds")
        text += [
            f"Test accuracy in %, mean ± standard deviation over {_n(seeds, 'seed')}; Δ is "
            "the mean of the per-seed differences to full precision with its 95% "
            f"confidence interval (Student's t, {seeds - 1} degrees of freedom). "
            f"{_protocol(r0, selections.get(key[:2]))} The papers' published numbers "
            "beside them, with their gap to their own full precision (other datasets and "
            f"networks: see *Not reproduced here*).{_quick_note(doc['meta'])}",
            "",
            _md(header, table),
            "",
            f"Papers: {PAPER_SOURCES}",
            "",
            f"Conditions: {_conditions(key, g)}. Machine: {_machine(doc['meta'])}. "
            f"`{doc['meta'].get('command', 'python -m benchmarks accuracy')}`."
            + (f" The {len(g)}-row comparison over {_n(seeds, 'seed')} took "
               f"{seconds:.0f} s at the chosen lr on this (shared) machine, the starts "
               f"{_start_source(r0)}." if seconds else ""),
            "",
            f"Which papers' claims show here. {VERDICT_RULE}",
            "",
            *_claims(doc.get("claims", []), key),
            "",
            *([ONESHOT_NOTE, ""] if "inq-oneshot" in g else []),
        ]
    if figure:
        text += [f"![Test accuracy, Δ to full precision and size per method]({figure})"]
    return "\n".join(text).rstrip()


def _start_source(r0: dict) -> str:
    starts = r0.get("starts") or []
    return "read from the cache" if starts and all(s.get("cached") for s in starts) else \
        "trained in it"


def _conditions(key: tuple, g: dict) -> str:
    """One setup's data, model and layers, from its rows."""
    r = next(iter(g.values()))
    size = (f" ({r['train']} train / {r.get('val', 0)} validation / {r['test']} test)"
            if "train" in r else "")
    layers = "all layers quantized" if key[2] == "all" else "first and last layer fp32"
    return f"{key[0]}{size}, {key[1]}, {layers}, seeds {', '.join(map(str, r['seeds']))}"


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


# --------------------------------------------------------------------------- capacity


CAP_METHODS = ["binary", "twn", "ttq", "inq"]


def capacity_section(doc: dict, figure: str | None) -> str:
    rows = doc["rows"]
    if not rows:
        return ""
    widths = sorted({r["channels"] for r in rows})
    by = {(r["channels"], r["method"]): r for r in rows}
    methods = [m for m in CAP_METHODS if any((w, m) in by for w in widths)]
    header = ["channels", "parameters", "full precision (%)"] + [
        f"{ACC_LABELS[m]} Δ, 95% CI" for m in methods]
    table = []
    for w in widths:
        fp = by.get((w, "fp32"))
        cells = [str(w), f"{fp['params']:,}" if fp else "–",
                 f"{fp['test_acc_mean']:.2f} ± {fp['test_acc_std']:.2f}" if fp else "–"]
        for m in methods:
            r = by.get((w, m))
            cells.append("–" if r is None else _ci(r["delta_vs_fp32_mean"],
                                                   r["delta_vs_fp32_low"],
                                                   r["delta_vs_fp32_high"]))
        table.append(cells)
    r0 = rows[0]
    ft = r0["finetune"]
    text = ["### Quantization's cost against the network's width", "",
            f"`cnn1d` on MNIST-1D at several widths, each as `ttqlab compare` runs it: a "
            f"converged start per seed, then {_n(r0['epochs'], 'fine-tuning epoch')} for "
            f"every row ({ft['optimizer']}, {ft['lr_schedule']} decay, each method's "
            f"lr as chosen at the default width in *Accuracy*). Test accuracy of full "
            f"precision (mean ± std over {_n(len(r0['seeds']), 'seed')}) and each method's "
            f"paired difference to it, in points, with its 95% interval."
            f"{_quick_note(doc['meta'])}", "", _md(header, table), "",
            f"Machine: {_machine(doc['meta'])}. "
            f"`{doc['meta'].get('command', 'python -m benchmarks.capacity')}`."]
    if figure:
        text += ["", f"![Gap to full precision against the number of parameters]({figure})"]
    return "\n".join(text)


def plot_capacity(doc: dict, path: Path) -> bool:
    rows = doc["rows"]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ttqlab.viz import COLORS as METHOD_COLORS  # the same colour per method as viz

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, m in enumerate(CAP_METHODS):
        rs = sorted((r for r in rows if r["method"] == m), key=lambda r: r["params"])
        if not rs:
            continue
        x = [r["params"] * (1 + 0.04 * (i - 1.5)) for r in rs]  # side by side
        y = [r["delta_vs_fp32_mean"] for r in rs]
        lo = [r["delta_vs_fp32_mean"] - (r["delta_vs_fp32_low"] if r["delta_vs_fp32_low"]
                                         is not None else r["delta_vs_fp32_mean"])
              for r in rs]
        hi = [(r["delta_vs_fp32_high"] if r["delta_vs_fp32_high"] is not None else
               r["delta_vs_fp32_mean"]) - r["delta_vs_fp32_mean"] for r in rs]
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=ACC_LABELS[m],
                    color=METHOD_COLORS.get(m))
    ax.axhline(0, color=METHOD_COLORS["fp32"], lw=1, ls="--", label="full precision")
    ax.set_xscale("log")
    for r in rows:
        if r["method"] == "fp32":
            ax.annotate(f"{r['channels']} ch", (r["params"], 0), textcoords="offset points",
                        xytext=(0, 8), ha="center", fontsize=8,
                        color=METHOD_COLORS["fp32"])
    ax.set_xlabel("parameters of cnn1d (count, log scale)")
    ax.set_ylabel("Δ test accuracy vs fp32 (points)")
    ax.set_title(f"MNIST-1D: quantization's cost shrinks with width "
                 f"({len(rows[0]['seeds'])} seeds, 95% CI)")
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, path)
    return True


# --------------------------------------------------------------------------- plateau


def _plateau_gaps(by: dict, widths: list[int], family: str, epochs: list[int]) -> list[str]:
    """One sentence: how far the start's epochs end from the longest run, per width."""
    from ttqlab.starts import Recipe

    chosen, longest = Recipe().epochs, max(epochs)
    parts = []
    for w in widths:
        a, b = by.get((w, family, chosen)), by.get((w, family, longest))
        if a and b and chosen != longest:
            parts.append(f"{_signed(b['val_acc_mean'] - a['val_acc_mean'])} points at {w} "
                         "channels")
    if not parts:
        return []
    return [f"Training {longest} instead of the start's {chosen} epochs ({family}) changes "
            f"validation accuracy by {', '.join(parts)}.", ""]


def plateau_section(doc: dict) -> str:
    rows = doc["rows"]
    if not rows:
        return ""
    widths = sorted({r["channels"] for r in rows})
    families = list(dict.fromkeys(r["family"] for r in rows))
    epochs = sorted({r["epochs"] for r in rows})
    by = {(r["channels"], r["family"], r["epochs"]): r for r in rows}
    header = ["channels", "schedule"] + [f"{e} epochs" for e in epochs]
    table = []
    for w in widths:
        for f in families:
            cells = [str(w), f]
            for e in epochs:
                r = by.get((w, f, e))
                cells.append("–" if r is None else
                             f"{r['val_acc_mean']:.2f} ± {r['val_acc_std']:.2f}")
            table.append(cells)
    seconds = {(r["channels"], r["epochs"]): r["seconds_mean"] for r in rows
               if r["family"] == families[0]}
    times = "; ".join(f"{w} channels, {e} epochs: {seconds[(w, e)]:.1f} s" for w in widths
                      for e in epochs if (w, e) in seconds)
    return "\n".join([
        "### Where full precision converges", "",
        "Validation accuracy (%, mean ± std over "
        f"{_n(len(rows[0]['seeds']), 'seed')}) of full-precision `cnn1d` on MNIST-1D "
        "against training epochs, Adam at batch 64: lr 1e-2 with a cosine schedule (the "
        "start's recipe, `ttqlab.starts.Recipe`) and the former default, lr 1e-3 constant. "
        "Quantized methods are compared from the recipe's start, not from a model still "
        "climbing; what full precision still gains after it, the fp32 control gains in "
        "its fine-tuning epochs, which every row gets."
        f"{_quick_note(doc['meta'])}", "", _md(header, table), "",
        *_plateau_gaps(by, widths, families[0], epochs),
        f"Time per start ({families[0]}, one thread): {times}. Machine: "
        f"{_machine(doc['meta'])}. "
        f"`{doc['meta'].get('command', 'python -m benchmarks.plateau')}`."])


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


# --------------------------------------------------------------------------- inference

INFERENCE_GOAL = 4.0  # goal: 2-bit ONNX Runtime >= 4x faster than fp32 PyTorch (ffn, b1, t1)
INFERENCE_ARMS = ("fp32 torch", "fp32 onnx", "2-bit onnx")


def _us(r: dict) -> str:
    v = r["median_us"]
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def inference_section(doc: dict, figure: str | None) -> str:
    """Latency of fp32 PyTorch, fp32 and 2-bit ONNX Runtime (``benchmarks/inference.py``)."""
    rows = [r for r in doc["rows"] if r.get("arm") in INFERENCE_ARMS]
    if not rows:
        return ""
    by = defaultdict(dict)
    for r in rows:
        by[(r["network"], r["batch"], r["threads"])][r["arm"]] = r
    table = []
    for (net, b, t), v in by.items():
        if v["2-bit onnx"]["kind"] == "layer" and (b, t) != (1, 1):
            continue
        cells = [net, f"{v['fp32 torch']['weights']:,}", str(b), str(t)]
        cells += [f"{_us(v[a])} ({v[a]['min_us']:,.0f}–{v[a]['max_us']:,.0f})"
                  for a in INFERENCE_ARMS]
        q = v["2-bit onnx"]
        cells += [f"{q['speedup_vs_fp32_torch']:.1f}x",
                  f"{v['fp32 onnx']['median_us'] / q['median_us']:.1f}x",
                  f"{v['fp32 torch']['weight_bytes'] / 2**20:.2f} → "
                  f"{q['weight_bytes'] / 2**20:.2f}"]
        table.append(cells)
    header = ["network", "weights", "batch", "threads",
              *[f"{a}: µs median (min–max)" for a in INFERENCE_ARMS],
              "2-bit vs fp32 torch", "2-bit vs fp32 onnx", "weight MiB: fp32 → 2-bit file"]
    goal = [v for (net, b, t), v in by.items()
            if v["2-bit onnx"]["kind"] == "ffn" and (b, t) == (1, 1)]
    text = ["### Inference latency (ONNX Runtime, 2-bit weights)", "",
            "`ttqlab.export.to_onnx` writes every quantized `nn.Linear` as ONNX Runtime's "
            "2-bit `MatMulNBits` (2.25 bits per weight with its scales). Median over "
            f"{rows[0]['repeats']} interleaved rounds (min–max in brackets) of fp32 PyTorch, "
            "the same fp32 graph in ONNX Runtime and the 2-bit graph; random ternary "
            "weights (timing does not depend on them). The course's models keep their "
            "first and last layers in float and their convolutions stay float. \"2-bit vs "
            "fp32 onnx\" isolates the weights' bytes (the same runtime); against PyTorch the "
            "small models gain mostly from ONNX Runtime's lower cost per operation, and "
            "PyTorch at 2 threads on a loaded machine loses most to waiting threads."
            + _quick_note(doc["meta"]), "", _md(header, table), ""]
    for v in goal:
        got = v["2-bit onnx"]["speedup_vs_fp32_torch"]
        text.append(f"Goal ({INFERENCE_GOAL:g}x faster than fp32 PyTorch at batch 1, one "
                    f"thread, {v['2-bit onnx']['network']}): {got:.1f}x, "
                    f"{'met' if got >= INFERENCE_GOAL else 'NOT met'}.")
    conv = [r for r in doc["rows"] if r.get("kind") == "conv"]
    if len(conv) == 2:
        f, q = conv
        verdict = ("no gain, so convolutions stay float" if q["median_us"] >= f["median_us"]
                   else "faster, before the im2col copy")
        text.append(f"Convolution at batch 1 ({f['network']}): float `Conv` {_us(f)} µs, "
                    f"the 2-bit product of its im2col shape alone {_us(q)} µs (im2col copy "
                    f"not counted): {verdict}.")
    text += ["", f"Machine: {_machine(doc['meta'])}. "
                 f"`{doc['meta'].get('command', 'python -m benchmarks.inference')}`."]
    if figure:
        text += ["", f"![Inference latency against layer size]({figure})"]
    return "\n".join(text)


def plot_inference(doc: dict, path: Path) -> bool:
    """Latency against layer size (one Linear, batch 1, one thread) per arm, with the
    memory-traffic limit of 2-bit weights: fp32 PyTorch's time times 2.25 / 32."""
    rows = [r for r in doc["rows"] if r.get("kind") == "layer" and r["batch"] == 1
            and r["threads"] == 1]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    styles = {"fp32 torch": ("C0", "o"), "fp32 onnx": ("C2", "s"), "2-bit onnx": ("C3", "D")}
    for arm, (color, marker) in styles.items():
        rs = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["weights"])
        n = [r["weights"] for r in rs]
        med = [r["median_us"] for r in rs]
        err = [[m - r["min_us"] for m, r in zip(med, rs)],
               [r["max_us"] - m for m, r in zip(med, rs)]]
        ax.errorbar(n, med, yerr=err, color=color, marker=marker, capsize=3,
                    label=f"{arm} (median, min–max)")
    rs = sorted((r for r in rows if r["arm"] == "fp32 torch"), key=lambda r: r["weights"])
    two = {r["weights"]: r["weight_bytes"] for r in rows if r["arm"] == "2-bit onnx"}
    ax.plot([r["weights"] for r in rs],
            [r["median_us"] * two[r["weights"]] / r["weight_bytes"] for r in rs],
            "k--", label="memory-traffic limit of 2-bit weights: fp32 PyTorch's time\n"
                         "x 2.25 / 32 bits (below it: the packed layer fits in\n"
                         "cache while fp32's does not)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("weights in the layer (N x N, log scale)")
    ax.set_ylabel("latency per call (µs, log scale)")
    ax.set_title(f"One nn.Linear at batch 1, one thread: fp32 vs 2-bit MatMulNBits "
                 f"(load {doc['meta'].get('load average', '?')})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
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


def deploy_accuracy_section(doc: dict) -> str:
    """Flipped test predictions of the 2-bit fast path (``benchmarks/deploy_accuracy.py``)."""
    rows = doc["rows"]
    if not rows:
        return ""
    blocks = sorted({r["block_size"] for r in rows})
    table = []
    for key in dict.fromkeys((r["model"], r["method"]) for r in rows):
        sel = [r for r in rows if (r["model"], r["method"]) == key]
        acc = sorted(100 * r["test_acc"] for r in sel if r["block_size"] == blocks[0])
        cells = [key[0], LABELS.get(key[1], key[1]), f"{acc[0]:.1f}–{acc[-1]:.1f}"]
        for b in blocks:
            at = [r for r in sel if r["block_size"] == b]
            cells.append(f"{max(r['flips'] for r in at)} / "
                         f"{max(abs(r['acc_diff_images']) for r in at)}")
        table.append(cells)
    seeds = sorted({r["seed"] for r in rows})
    header = ["model", "method", "test accuracy, float model (%)",
              *[f"block {b}: flips / images" for b in blocks]]
    worst = max(rows, key=lambda r: r["flips"])
    return "\n".join([
        "### Do the 2-bit ONNX models give the same answers?", "",
        "Converged MNIST-1D starts (cached, `ttqlab.starts`), quantized and fine-tuned as "
        f"`compare` does ({doc.get('finetune', {}).get('epochs', '?')} epochs, cosine), "
        f"{_n(len(seeds), 'seed')}; then exported with `to_onnx(block_size=...)` (default "
        "`accuracy_level=4`: int8 activations per block). Each cell: the most test "
        "predictions (of 1000) that differ from ttqlab's own float model, over the seeds / "
        "the largest change in test accuracy, in images. The weights are exact; only the "
        "activations' int8 rounding moves an answer, and only near ties move."
        + _quick_note(doc["meta"]), "", _md(header, table), "",
        f"The fast path changed at most {worst['flips']} of 1000 predictions "
        f"({worst['model']}, {LABELS.get(worst['method'], worst['method'])}, block "
        f"{worst['block_size']}), so it does not promise the same accuracy to the image. "
        "`accuracy_level=1` (float compute) does (the tests assert the same test accuracy "
        "to the image with it, `tests/test_deploy.py`) but runs far slower than fp32: use it "
        "to check answers, not to deploy. At block 16 this ONNX Runtime computes in float "
        "even at level 4 (0 flips above), as slowly as level 1.", "",
        f"Machine: {_machine(doc['meta'])}. "
        f"`{doc['meta'].get('command', 'python -m benchmarks.deploy_accuracy')}`."])


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
    if "plateau" in docs:
        parts.append(plateau_section(docs["plateau"]))
    if "capacity" in docs:
        fig = figures / "capacity.png"
        parts.append(capacity_section(docs["capacity"],
                                      rel(fig) if plot_capacity(docs["capacity"], fig)
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
    if "inference" in docs:
        fig = figures / "inference.png"
        parts.append(inference_section(docs["inference"],
                                       rel(fig) if plot_inference(docs["inference"], fig)
                                       else None))
    if "deploy_accuracy" in docs:
        parts.append(deploy_accuracy_section(docs["deploy_accuracy"]))
    if "notebooks" in docs:
        parts.append(generic_section("Notebook run times", docs["notebooks"],
                                     "Wall-clock time and the kernel's peak memory to execute "
                                     "each course notebook top to bottom (`nbclient`, a "
                                     "fresh kernel each)."))
    if "threads" in docs:
        parts.append(generic_section(
            "One torch thread or two", docs["threads"],
            "One training epoch of each model the course trains, with 1 and 2 torch threads, "
            "on an idle machine and beside one process that keeps a core busy (interleaved "
            "rounds, median; `vs 1 thread` > 1 means two threads are slower, < 1 faster). "
            "Every notebook calls `torch.set_num_threads(1)`: the choice that is never much "
            "slower."))
    if "tiers" in docs:
        parts.append(generic_section(
            "Test tiers", docs["tiers"],
            "Collecting every test, and the fast tier (every rule, gradient, format and error "
            "message), each in a fresh process from the repository root. CI's whole run "
            "(`.ci/run`: install, then every test on two xdist workers, the course executed "
            "once in JupyterLab) is timed in CI's log."))
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
