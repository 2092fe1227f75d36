"""The package's import graph flows one way (docs/architecture.md): the library knows nothing
of the course, the course nothing of the applications, and no module imports itself back
through another. Imports inside functions (lazy ones) count too: they are the same
dependency, paid later."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "ttqlab"

#: the course: what teaches (exercises and their checks, figures, widgets, the copier)
COURSE = ("ttqlab.exercises", "ttqlab.checking", "ttqlab.viz", "ttqlab.widgets",
          "ttqlab.palette", "ttqlab.course")
#: the applications: what runs jobs on top of the library and the course
APPLICATIONS = ("ttqlab.cli", "ttqlab.experiments", "ttqlab.reproduce", "ttqlab.__main__")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _targets(module: str, node) -> set[str]:
    """The ttqlab modules an import statement in ``module`` loads."""
    package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    if node.level:
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    found = set()
    for alias in node.names:
        child = f"{target}.{alias.name}"
        found.add(child if child in MODULES else target)
    return {t for t in found if t in MODULES}


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps |= _targets(name, node)
        # a package's __init__ gathers its children, and a child may import its package's
        # other children through it: neither is a dependency between ideas
        graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")
                       and d != "ttqlab"}
    return graph


def layer(module: str) -> int:
    def within(group):
        return any(module == g or module.startswith(g + ".") for g in group)
    return 2 if within(APPLICATIONS) else 1 if within(COURSE) else 0


def test_the_graph_sees_every_module_and_its_imports():
    graph = import_graph()
    assert {"ttqlab.convert", "ttqlab.methods.ttq", "ttqlab.cli"} <= set(graph)
    assert "ttqlab.methods.base" in graph["ttqlab.methods.ttq"]


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), list(graph[start])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph[node])
    return seen


def test_no_import_cycle():
    graph = import_graph()
    reach = {m: _reachable(graph, m) for m in graph}
    cycles = sorted({" <-> ".join(sorted({m} | {d for d in reach[m] if m in reach[d]}))
                     for m in graph if m in reach[m]})
    assert not cycles, "modules that import each other (directly or through others):\n" + \
        "\n".join(cycles)


def test_no_upward_import():
    names = {0: "library", 1: "course", 2: "applications"}
    upward = [f"{m} ({names[layer(m)]}) imports {d} ({names[layer(d)]})"
              for m, deps in import_graph().items() if m != "ttqlab"
              for d in sorted(deps) if layer(d) > layer(m)]
    assert not upward, "\n".join(upward)
