"""Adding a method is one file (issue 25): a toy method registered from this file alone
quantizes, fits, is a row of ``compare``, trains from ``ttqlab train``, exports, reloads,
reports and gets a colour; and outside ``ttqlab/methods/`` no module names a method except
in its default lists."""

import ast
import json
from pathlib import Path

import pytest
import torch

import ttqlab
from ttqlab import cli, experiments, export, methods, palette
from ttqlab.methods.base import Option, Variant, WeightQuantizer, ste
from ttqlab.starts import Recipe

ROOT = Path(__file__).resolve().parents[1] / "ttqlab"


def _check_frac(frac) -> None:
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
        raise ValueError(f"frac must lie strictly between 0 and 1, got {frac!r}")


class Toy(WeightQuantizer):
    """``alpha * T``, ``T = sign(w) [|w| > frac * max|w|]``, ``alpha = (1 - frac) max|w|``,
    with the straight-through gradient: a ternary method defined outside ttqlab."""

    method = "toy"
    OPTIONS_SPEC = (Option("frac", 0.25, "toy threshold, a fraction of max|w|", _check_frac),)
    scale_names = ("alpha",)
    bits = 2
    tag, color, finetune_lr = "Toy", "#000080", 2e-2
    VARIANTS = (Variant("toy-half", "Toy 1/2", "#000040", driver={"frac": 0.5}),)

    def __init__(self, frac: float = 0.25):
        super().__init__()
        self.check_options(frac=frac)
        self.frac = float(frac)

    def options(self) -> dict:
        return {"frac": self.frac}

    def _max(self, w):
        return w.detach().abs().max() if w.numel() else w.new_zeros(())

    def codes(self, w):
        w = w.detach()
        delta = self.frac * self._max(w)
        return (w > delta).to(torch.int8) - (w < -delta).to(torch.int8)

    def scales(self, w):
        return {"alpha": (1 - self.frac) * self._max(w)}

    @staticmethod
    def dequantize(codes, scales):
        return codes.to(scales["alpha"].dtype) * scales["alpha"]

    def forward(self, w):
        return ste(w, self.dequantize(self.codes(w), self.scales(w)))

    @classmethod
    def scheme(cls, bits, packing):
        return packing, None  # ternary codes: the file's packing


@pytest.fixture
def toy():
    methods.register(Toy)
    yield Toy
    methods.unregister("toy")
    assert "toy" not in methods.names() and "toy" not in experiments.method_names()


@pytest.fixture(scope="module")
def tiny():
    return ttqlab.data.load("synthetic", n_train=128, n_test=64, seed=0)


def _mlp(data, seed=0):
    return ttqlab.models.mlp(input_shape=data.input_shape, num_classes=data.num_classes,
                             hidden=(16, 16), seed=seed)


def test_the_toy_quantizes_fits_reports_and_gets_its_colour(toy, tiny):
    model = ttqlab.quantize(_mlp(tiny), "toy", frac=0.5)
    layers = list(ttqlab.quantized_layers(model))
    assert layers and all(q.method == "toy" and q.frac == 0.5 for _, _, q in layers)
    for name, qw in ttqlab.extract(model).items():
        w = dict(model.named_modules())[name].weight
        assert torch.equal(qw.dequantize(), w.detach())
        assert set(torch.unique(qw.codes).tolist()) <= {-1, 0, 1}
    report = ttqlab.layer_report(model)
    rows = [r for r in report.rows if r.get("method") == "toy"]
    assert len(rows) == len(layers) and all(r["bits/weight"] == 2.0 for r in rows)
    assert "ternary codes packed 2bit" in report.title
    history = ttqlab.fit(model, tiny, epochs=1, progress=False)
    assert history.layer(layers[0][0], "alpha")[-1] > 0  # its stats row is in the history
    assert palette.method_color("toy") == "#000080" == palette.METHOD_COLORS["toy"]
    assert palette.method_color("Toy frac=0.5") == "#000080"
    with pytest.raises(ValueError, match="frac must lie strictly between 0 and 1"):
        ttqlab.quantize(_mlp(tiny), "toy", frac=2)


def test_the_toy_and_its_variant_are_rows_of_compare(toy, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("TTQLAB_DATA", str(tmp_path))
    assert experiments.method_names()[-2:] == ("toy", "toy-half")  # after the papers'
    table, results = experiments.compare(lambda s: _mlp(tiny, s), tiny, epochs=2, seeds=[0],
                                         methods=["fp32", "toy", "toy-half"],
                                         recipe=Recipe(epochs=1, batch_size=32))
    by = {r["method"]: r for r in table.rows}
    assert list(by) == ["fp32", "toy", "toy-half"]
    assert by["toy"]["lr"] == 2e-2 and by["toy-half"]["lr"] == Recipe().lr  # its own / none
    assert by["toy"]["bits_per_weight"] == 2 and 0 <= by["toy"]["sparsity"] < 1
    assert by["toy-half"]["sparsity"] > by["toy"]["sparsity"]  # frac 0.5 zeroes more
    q = {q.frac for _, _, q in ttqlab.quantized_layers(results["toy-half"].model)}
    assert q == {0.5}  # the variant's options reached quantize


def test_the_toy_trains_from_the_command_line_exports_and_reloads(toy, tmp_path, capsys):
    out, saved = tmp_path / "toy.json", tmp_path / "toy.ttq.safetensors"
    argv = ["--model", "mlp", "--dataset", "synthetic", "--epochs", "1", "--frac", "0.5"]
    assert cli.main(["train", "--method", "toy", *argv, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "method: toy" in text and "layer report" in text
    assert json.loads(out.read_text())["summary"]["method"] == "toy"
    assert "--frac" in cli._assemble()[1]["train"].format_help()  # from its OPTIONS_SPEC
    assert cli.main(["export", "--method", "toy", *argv, "--out", str(saved)]) == 0
    _, manifest = export.read(saved)
    assert [(g["method"], g["options"]) for g in manifest["quantized"]] == [
        ("toy", {"frac": 0.5})]
    loaded = export.load(saved)  # the recorded architecture
    weights = [m.weight for m in loaded.modules() if isinstance(m, torch.nn.Linear)][1:-1]
    assert weights and all(len(torch.unique(w.abs())) <= 2 for w in weights)  # 0 and alpha
    with pytest.raises(SystemExit) as e:  # the method's own check, before any work
        cli.main(["train", "--method", "toy", "--frac", "2"])
    assert e.value.code == 2
    assert "--frac: frac must lie strictly between 0 and 1" in capsys.readouterr().err


def test_a_file_with_a_bad_toy_option_is_refused(toy, tmp_path):
    model = ttqlab.quantize(_mlp(ttqlab.data.load("synthetic", n_train=8, n_test=8)), "toy")
    tensors, manifest = export.pack(model)
    manifest["quantized"][0]["options"]["frac"] = 1.5
    path = tmp_path / "bad.ttq.safetensors"
    export.write(path, tensors, manifest)
    with pytest.raises(export.FormatError, match=r"option 'frac' has an invalid value 1\.5"):
        export.load(path, _mlp(ttqlab.data.load("synthetic", n_train=8, n_test=8)))


def test_a_method_with_its_own_training_driver_is_trained_by_it(toy, tiny):
    calls = []

    def driver(model, data, *, epochs, options, keep_first_last, progress, fit_kwargs,
               schedule, rounds=1):
        calls.append((epochs, options, rounds, tuple(schedule)))
        ttqlab.quantize(model, "toy", keep_first_last=keep_first_last, **options)
        return ttqlab.fit(model, data, epochs=epochs, progress=progress, **fit_kwargs)

    class Stepped(Toy):
        method, color, trainer = "stepped", None, driver
        VARIANTS = (Variant("stepped-twice", "Stepped x2", driver={"rounds": 2}),)

    methods.register(Stepped)
    try:
        r = experiments.train_method(_mlp(tiny), "stepped-twice", tiny, epochs=1,
                                     options={"frac": 0.5}, inq_schedule=(0.5, 1.0))
        assert calls == [(1, {"frac": 0.5}, 2, (0.5, 1.0))] and r.method == "stepped-twice"
        assert r.summary["sparsity"] > 0 and len(r.history.epochs) == 2
        spare = palette.method_color("stepped")  # no colour of its own: a spare one
        assert spare not in dict(palette.METHOD_COLORS).values()
    finally:
        methods.unregister("stepped")


def test_a_variant_may_not_take_a_methods_name(toy):
    class Clash(Toy):
        method = "toy2"
        VARIANTS = (Variant("twn", "TWN again"),)

    with pytest.raises(ValueError, match="already name a method"):
        methods.register(Clash)
    assert "toy2" not in methods.names()


# --------------------------------------------------------------------------- no names


#: (module, top-level name) that may name methods: default lists, the papers' claims, and
#: the CLI's snapshot of the registry (tests/test_cli.py checks it)
ALLOWED = {("cli.py", "METHOD_TABLE"), ("cli.py", "DEFAULT_METHODS"),
           ("experiments.py", "DEFAULT_METHODS"), ("experiments.py", "CLAIMS"),
           ("__init__.py", "_FROM")}  # the lazy loader's module names (ttqlab.inq)
#: whole modules: each paper's recipe names its paper's method; "binary" is also a packing
#: scheme; the figures draw one method's rule (TWN's threshold) by default
ALLOWED_MODULES = {"reproduce.py", "packing.py", "viz.py", "widgets.py", "figure_data.py"}


def _docstrings(tree) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _label(stmt) -> str | None:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return stmt.name
    target = stmt.targets[0] if isinstance(stmt, ast.Assign) else getattr(stmt, "target", None)
    return target.id if isinstance(target, ast.Name) else None


def method_literals(names) -> list[str]:
    """``file:line name`` of each string literal equal to a method name outside
    ``ttqlab/methods/`` and ``ttqlab/exercises/``, docstrings and `ALLOWED` left out."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("methods/", "exercises/")) or rel in ALLOWED_MODULES:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _docstrings(tree)
        for stmt in tree.body:
            if (rel, _label(stmt)) in ALLOWED:
                continue
            found += [f"ttqlab/{rel}:{node.lineno} {node.value!r}" for node in ast.walk(stmt)
                      if isinstance(node, ast.Constant) and isinstance(node.value, str)
                      and node.value in names and id(node) not in skip]
    return found


def test_outside_the_method_files_no_module_names_a_method():
    names = {r.name for r in methods.rows()}
    assert {"binary", "twn", "ttq", "inq", "inq-oneshot", "bitnet"} <= names
    found = method_literals(names)
    assert not found, ("method names outside ttqlab/methods/ (ask the registry, "
                       "ttqlab.methods.rows(), instead):\n" + "\n".join(found))


def test_the_scan_finds_a_method_name(tmp_path, monkeypatch):
    """The scan above can fail: a module that names a method is reported."""
    (tmp_path / "ttqlab").mkdir()
    (tmp_path / "ttqlab" / "bad.py").write_text('"""twn in a docstring is fine."""\n'
                                                'METHOD = "twn"\n')
    monkeypatch.setitem(globals(), "ROOT", tmp_path / "ttqlab")
    assert method_literals({"twn"}) == ["ttqlab/bad.py:2 'twn'"]
