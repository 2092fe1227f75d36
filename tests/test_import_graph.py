"""The import graph of ``ttqlab/`` is a DAG and flows one way (docs/architecture.md).

Every module is parsed with :mod:`ast` (nothing is imported): module-level and in-function
(lazy) imports, relative and absolute, and ``from ttqlab import fit``-style names that the
lazy loader (``ttqlab/__init__.py``'s ``_FROM``) maps to the module defining them. A lazy
import is the same dependency, paid later, so it counts.

Layers, lowest first: the **library** (quantization, training, export, data), the
**course** (exercises and their checks, figures, widgets) and the **applications** (the
CLI and the experiment drivers). An edge may point down or sideways, never up. Every
top-level module must be placed in exactly one layer below, so a new module is a choice,
not a default. ``ttqlab/__init__.py`` (the lazy loader, which names everything) is exempt.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "ttqlab"
PACKAGE = "ttqlab"

#: top-level modules / subpackages of ttqlab, by layer (lowest first)
LAYERS: dict[str, tuple[str, ...]] = {
    "library": ("activations", "checkpoint", "convert", "coverage", "data", "deploy",
                "distributed", "evidence", "export", "fit_config", "inq", "layers",
                "methods", "models", "packing", "quantizers", "sequence_tasks", "starts",
                "stats", "ternary_matmul", "train", "validation"),
    "course": ("checking", "course", "exercises", "figure_data", "palette", "viz",
               "widgets"),
    "applications": ("__main__", "cli", "experiments", "reproduce"),
}
RANK = {layer: i for i, layer in enumerate(LAYERS)}

#: (importer, imported) -> why this upward edge is allowed for now (none today)
EXCEPTIONS: dict[tuple[str, str], str] = {}


def _name_of(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_name_of(p): p for p in sorted(ROOT.rglob("*.py"))}


def _lazy_names() -> dict[str, str]:
    """``ttqlab/__init__.py``'s ``_FROM``: public name -> the submodule defining it."""
    tree = ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        target = getattr(node, "target", None) or (node.targets[0] if isinstance(
            node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == "_FROM":
            return ast.literal_eval(node.value)
    raise AssertionError("ttqlab/__init__.py has no _FROM dict: update _lazy_names()")


LAZY = _lazy_names()


def _resolve(target: str) -> str:
    """``target`` or, for a root-level public name, the module the lazy loader maps it to."""
    if target.startswith(PACKAGE + ".") and target.count(".") == 1:
        name = target.split(".", 1)[1]
        if name in LAZY:
            return f"{PACKAGE}.{LAZY[name]}"
    return target


def imports_of(module: str, source: str, is_package: bool = False,
               modules=None) -> list[tuple[str, int]]:
    """``(imported ttqlab module, line)`` for every import statement in ``source``
    (the text of ``module``), at any depth: module level, in functions, in ``if`` blocks;
    after ``import ttqlab``, a use of ``ttqlab.<submodule or public name>`` too."""
    modules = MODULES if modules is None else modules
    package = module if is_package else module.rpartition(".")[0]
    found = []
    tree = ast.parse(source)
    roots = set()  # the local names bound to the ttqlab package itself
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
            roots |= {a.asname or PACKAGE for a in node.names
                      if a.name == PACKAGE or (a.name.startswith(PACKAGE + ".")
                                               and not a.asname)}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    raise AssertionError(f"{module}:{node.lineno}: relative import above "
                                         f"the package")
                base = ".".join(parts[:len(parts) - (node.level - 1)])
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module or ""
            for alias in node.names:
                child = _resolve(f"{origin}.{alias.name}")
                found.append((child if child in modules else origin, node.lineno))
    for node in ast.walk(tree):
        if (roots and isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in roots):
            found.append((_resolve(f"{PACKAGE}.{node.attr}"), node.lineno))
    return sorted(((t, line) for t, line in found
                   if t in modules and t not in (module, PACKAGE)), key=lambda e: (e[1], e[0]))


def import_graph(modules=None) -> dict[str, dict[str, int]]:
    """module -> {imported module: first line}, for every module but ``ttqlab`` itself.
    Importing ``a.b`` runs ``a/__init__.py`` first, but that is the package's own
    business: the edge is to what was named."""
    modules = MODULES if modules is None else modules
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        if name == PACKAGE:
            continue
        edges: dict[str, int] = {}
        for target, line in imports_of(name, path.read_text(encoding="utf-8"),
                                       path.name == "__init__.py", modules):
            edges.setdefault(target, line)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None when the graph is a DAG."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def _describe(cycle: list[str], graph) -> str:
    return "\n".join(f"  {MODULES[a].relative_to(ROOT.parent) if a in MODULES else a}:"
                     f"{graph[a][b]}: {a} imports {b}" for a, b in itertools.pairwise(cycle))


def layer_of(module: str) -> str | None:
    if module == PACKAGE:
        return None
    top = module.split(".")[1]
    return next((layer for layer, names in LAYERS.items() if top in names), None)


def upward_edges(graph) -> list[tuple[str, str, int]]:
    out = []
    for m, deps in graph.items():
        for d, line in sorted(deps.items()):
            lm, ld = layer_of(m), layer_of(d)
            if lm and ld and RANK[ld] > RANK[lm]:
                out.append((m, d, line))
    return out


# --- the parser and the checks themselves can fail ---------------------------------------

def test_imports_are_found_at_every_depth_relative_and_absolute():
    mods = {n: None for n in ("ttqlab", "ttqlab.convert", "ttqlab.methods",
                              "ttqlab.methods.base", "ttqlab.methods.kernels",
                              "ttqlab.methods.ttq", "ttqlab.viz",
                              "ttqlab.train", "ttqlab.stats")}
    src = ("import torch\n"
           "from . import kernels, register\n"          # its package (register)
           "from .base import WeightQuantizer\n"
           "def f():\n"
           "    from .. import viz\n"                    # lazy, from the parent package
           "    import ttqlab.convert\n"
           "    if True:\n"
           "        from ttqlab import fit\n"            # a lazy-loader name -> train
           "class C:\n"
           "    def g(self):\n"
           "        from ..stats import layer_report\n")
    got = imports_of("ttqlab.methods.ttq", src, modules=mods)
    assert got == [("ttqlab.methods", 2), ("ttqlab.methods.kernels", 2),
                   ("ttqlab.methods.base", 3), ("ttqlab.viz", 5), ("ttqlab.convert", 6),
                   ("ttqlab.train", 8), ("ttqlab.stats", 11)]
    src = "import ttqlab as tq\ndef f(m):\n    tq.quantize(m, 'ttq')\n    tq.viz.x(m)\n"
    assert imports_of("ttqlab.stats", src, modules=mods) == [("ttqlab.convert", 3),
                                                              ("ttqlab.viz", 4)]
    assert imports_of("ttqlab.methods", "from . import base\nfrom .base import X\n",
                      is_package=True, modules=mods) == [("ttqlab.methods.base", 1),
                                                          ("ttqlab.methods.base", 2)]


def test_the_real_graph_holds_known_edges():
    graph = import_graph()
    assert {"ttqlab.convert", "ttqlab.methods.ttq", "ttqlab.cli", "ttqlab.exercises.ttq"} \
        <= set(graph)
    assert "ttqlab.methods.base" in graph["ttqlab.methods.ttq"]
    assert "ttqlab.coverage" in graph["ttqlab.convert"]
    assert "ttqlab.activations" in graph["ttqlab.coverage"]  # a lazy import, counted
    assert "ttqlab.quantizers" in graph["ttqlab.exercises.ttq"]  # from .. import quantizers


def test_cycle_finder_names_the_cycle():
    g = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert find_cycle(g) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 2}}) is None
    assert find_cycle({"a": {"a": 1}}) == ["a", "a"]


def test_upward_edges_are_caught():
    g = {"ttqlab.convert": {"ttqlab.viz": 7}, "ttqlab.viz": {"ttqlab.cli": 9},
         "ttqlab.cli": {"ttqlab.convert": 3}}
    assert upward_edges(g) == [("ttqlab.convert", "ttqlab.viz", 7),
                               ("ttqlab.viz", "ttqlab.cli", 9)]


# --- the package ---------------------------------------------------------------------------

def test_every_module_has_one_layer():
    tops = {n.split(".")[1] for n in MODULES if n != PACKAGE}
    listed = [n for names in LAYERS.values() for n in names]
    twice = sorted({n for n in listed if listed.count(n) > 1})
    assert not twice, f"modules in more than one layer: {twice}"
    missing = sorted(tops - set(listed))
    assert not missing, (f"ttqlab modules in no layer: {missing}; add each to LAYERS in "
                         f"tests/test_import_graph.py (library, course or applications)")
    stale = sorted(set(listed) - tops)
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


def test_no_import_cycle():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, ("import cycle " + " -> ".join(cycle) + " (lazy imports count; "
                           "move the shared piece into the lower module):\n"
                           + _describe(cycle, graph))


def test_no_upward_import():
    edges = upward_edges(import_graph())
    bad = [f"  {MODULES[m].relative_to(ROOT.parent)}:{line}: {m} ({layer_of(m)}) imports "
           f"{d} ({layer_of(d)})" for m, d, line in edges if (m, d) not in EXCEPTIONS]
    assert not bad, ("upward imports (library < course < applications; an edge may only "
                     "point down or sideways):\n" + "\n".join(bad))
    stale = sorted(set(EXCEPTIONS) - {(m, d) for m, d, _ in edges})
    assert not stale, f"EXCEPTIONS no longer needed, remove them: {stale}"
