"""The house import rules (DESIGN.md), read from the source with ``ast``: every ``import`` counts, including those
inside functions and ``TYPE_CHECKING`` blocks, since each is a dependency someone will follow.

- the library never imports its command line (``firm.commands``, ``firm.cli``);
- ``firm.training`` imports no task, ``firm.data`` neither tasks nor worlds;
- production code never imports ``firm.testing``;
- no import cycle between modules (a package's ``__init__`` re-exporting its own children is not a cycle).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import submodule`
    return {name for name in found if name in known and name != module}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for path in (SRC / "firm").rglob("*.py")}
    known = set(files)
    return {module: _imports(path, module, known) for module, path in files.items()}


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def rule_breaks(graph: dict[str, set[str]]) -> list[str]:
    breaks = []
    for module, deps in sorted(graph.items()):
        for dep in sorted(deps):
            outside_cli = not (_under(module, "firm.commands") or module == "firm.cli")
            if (_under(dep, "firm.commands") or dep == "firm.cli") and outside_cli:
                breaks.append(f"{module} imports the command line ({dep})")
            if _under(module, "firm.training") and _under(dep, "firm.tasks"):
                breaks.append(f"{module} (training) imports a task ({dep})")
            if _under(module, "firm.data") and (_under(dep, "firm.tasks") or _under(dep, "firm.worlds")):
                breaks.append(f"{module} (data) reaches up into {dep}")
            if _under(dep, "firm.testing") and not _under(module, "firm.testing"):
                breaks.append(f"{module} (production code) imports {dep}")
    return breaks


def _edges(graph: dict[str, set[str]], module: str) -> Iterator[str]:
    for dep in graph[module]:
        # A package's __init__ and its own children import each other by design (re-exports, relative imports).
        if not (dep.startswith(module + ".") or module.startswith(dep + ".")):
            yield dep


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(_edges(graph, root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(_edges(graph, child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_library_keeps_the_house_import_rules() -> None:
    graph = import_graph()
    assert len(graph) > 50 and "firm.critics.factory" in graph
    assert rule_breaks(graph) == []


def test_no_import_cycle_between_modules() -> None:
    assert cycles(import_graph()) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"firm.bench.x": {"firm.commands.score"}, "firm.commands.score": set()}, "imports the command line"),
        ({"firm.training.y": {"firm.tasks.t"}, "firm.tasks.t": set()}, "(training) imports a task"),
        ({"firm.data.z": {"firm.worlds.shapes"}, "firm.worlds.shapes": set()}, "(data) reaches up into"),
        ({"firm.tasks.t": {"firm.testing.models"}, "firm.testing.models": set()}, "(production code) imports"),
    ],
)
def test_each_rule_catches_its_break(graph: dict[str, set[str]], expected: str) -> None:
    [found] = rule_breaks(graph)
    assert expected in found


def test_cycles_are_found_and_package_reexports_are_not_cycles() -> None:
    graph = {
        "firm.a": {"firm.b"},
        "firm.b": {"firm.c"},
        "firm.c": {"firm.a"},
        "firm.d": {"firm.d.e"},
        "firm.d.e": {"firm.d"},
    }
    assert cycles(graph) == [["firm.a", "firm.b", "firm.c"]]
