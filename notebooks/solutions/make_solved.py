"""Solved copies of the course notebooks, for instructors (see docs/instructors.md).

Each notebook's fill-in exercises are cells tagged in their metadata
``{"ttqlab": {"exercise": NAME, "role": "stub"}}`` (the function to write) and
``... "role": "check"}`` (the call of ``ttqlab.exercises.check_NAME``). This script
fills in every ``raise NotImplementedError`` of a stub with the body of the same function
(or method) in ``solutions.py``. A reasoning exercise's answer cell (``"role": "answer"``,
``NAME = None``) gets the worked answer (``"solution"``: the call of a solutions.py function)
and its ``"answer-check"`` cell then passes:

    python notebooks/solutions/make_solved.py OUT_DIR [NOTEBOOK ...]

writes ``OUT_DIR/<notebook>_solved.ipynb`` (all course notebooks by default). With
``--nbgrader`` it writes nbgrader *source* notebooks instead: each solution body sits
between ``### BEGIN SOLUTION`` / ``### END SOLUTION`` in an "autograded answer" cell, and each
check becomes a locked "autograder tests" cell, ``assert ttqlab.exercises.check_NAME(NAME)``
(1 point); ``nbgrader generate_assignment`` then produces the student version.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import re
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE.parent


def _role(cell: dict) -> tuple[str | None, str | None]:
    meta = cell.get("metadata", {}).get("ttqlab", {})
    return meta.get("exercise"), meta.get("role")


def exercises(nb: dict) -> list[str]:
    """The exercise names of a notebook, in order (from its stub cells)."""
    return [name for name, role in map(_role, nb["cells"]) if role == "stub"]


def solution_bodies() -> dict[str, str]:
    """Qualified name (``twn_scale``, ``StraightThrough.forward``) -> the body of that
    function in solutions.py, dedented, without its docstring."""
    source = (HERE / "solutions.py").read_text(encoding="utf-8")
    lines = source.splitlines()
    bodies = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in node.body:
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef):
                body = child.body[1:] if ast.get_docstring(child) else child.body
                text = "\n".join(lines[body[0].lineno - 1 : child.end_lineno])
                bodies[prefix + child.name] = textwrap.dedent(text)

    visit(ast.parse(source), "")
    return bodies


def fill_in(stub: str, bodies: dict[str, str], nbgrader: bool = False) -> str:
    """The stub with each ``raise NotImplementedError`` replaced by the solution's body
    (between nbgrader's solution markers with ``nbgrader``)."""
    lines = stub.splitlines()
    holes = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in node.body:
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef):
                for statement in child.body:
                    if isinstance(statement, ast.Raise) and "NotImplementedError" in \
                            ast.unparse(statement):
                        holes.append((statement.lineno - 1, statement.col_offset,
                                      prefix + child.name))

    visit(ast.parse(stub), "")
    for line, indent, name in reversed(holes):
        if name not in bodies:
            raise KeyError(f"solutions.py has no {name}() for this stub")
        body = bodies[name].splitlines()
        if nbgrader:
            body = ["### BEGIN SOLUTION", *body, "### END SOLUTION"]
        lines[line:line + 1] = [" " * indent + b if b else b for b in body]
    text = "\n".join(lines)
    needs_math = "math." in text and "import math" not in text
    return ("import math\n\n\n" if needs_math else "") + text


def answer(cell: dict) -> str:
    """A reasoning exercise's answer cell (``NAME = None  # ...``, metadata ``"role":
    "answer"`` and ``"solution": "f(args)"``) with the worked answer: solutions.py's ``f``,
    then ``NAME = f(args)``."""
    expr = cell["metadata"]["ttqlab"]["solution"]
    target = ast.parse("".join(cell["source"])).body[0].targets[0].id
    source = (HERE / "solutions.py").read_text(encoding="utf-8")
    name = ast.parse(expr, mode="eval").body.func.id
    fn = next(node for node in ast.parse(source).body
              if isinstance(node, ast.FunctionDef) and node.name == name)
    text = f"{ast.get_source_segment(source, fn)}\n\n\n{target} = {expr}"
    return ("import math\n\n\n" if "math." in text else "") + text


def solve(nb: dict, nbgrader: bool = False) -> dict:
    """A copy of ``nb`` with every stub filled in with its solution, and every reasoning
    answer with the worked answer (outputs stay empty)."""
    nb, bodies = copy.deepcopy(nb), solution_bodies()
    for cell in nb["cells"]:
        name, role = _role(cell)
        if role == "answer" and not nbgrader:  # nbgrader: the students' version
            cell["source"] = answer(cell)
        elif role == "stub":
            cell["source"] = fill_in("".join(cell["source"]), bodies, nbgrader)
            if nbgrader:
                cell["metadata"]["nbgrader"] = _nbgrader(f"{name}-answer", solution=True)
        elif role == "check" and nbgrader:
            call = f"ttqlab.exercises.check_{name}({name})"
            target = "".join(cell["source"]).split("=")[0].strip() if re.match(
                r"\s*\w+\s*=[^=]", "".join(cell["source"])) else None
            # a check whose result later cells read (``passed_x = check(...)``) keeps its name
            cell["source"] = f"{target} = {call}\nassert {target}" if target else f"assert {call}"
            cell["metadata"]["nbgrader"] = _nbgrader(f"{name}-check", grade=True, points=1)
    return nb


def _nbgrader(grade_id: str, solution: bool = False, grade: bool = False,
              points: int | None = None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": not solution,
            "schema_version": 3, "solution": solution, "task": False}
    if points is not None:
        meta["points"] = points
    return meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the solved notebooks")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to solve (default: the whole course)")
    parser.add_argument("--nbgrader", action="store_true",
                        help="write nbgrader source notebooks (solution markers, graded checks)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.notebooks or sorted(NOTEBOOKS.glob("[0-9]*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        target = args.out / (path.name if args.nbgrader else f"{path.stem}_solved.ipynb")
        target.write_text(json.dumps(solve(nb, args.nbgrader), indent=1, ensure_ascii=False)
                          + "\n", encoding="utf-8")
        print(f"{target}: {', '.join(exercises(nb)) or 'no exercises'}")


if __name__ == "__main__":
    main()
