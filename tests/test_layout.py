"""The house's rules, read from the installed package's source: they break here, not in a review.

Every import counts: at module level, under ``TYPE_CHECKING`` and inside functions alike.

- No import circle, of any length.
- Imports run one way, down the rooms below (each room may import the rooms it lists). Where a type must cross
  upward, a Protocol is declared beside its consumer instead.
- No folder holds more than 15 modules; each subpackage says its job and what it may import in its docstring.
- The core imports no web framework and no server; uvicorn is imported by one module only, the seam.
- Small pieces: no function over 50 lines, the primary's loop under 250 lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

import clusterrun
from clusterrun import adapters

PACKAGE = Path(clusterrun.__file__).parent
ADAPTERS = Path(adapters.__file__).parent  # a folder of its own in a checkout, clusterrun/adapters when installed

# The rooms, from the top down. A module's room is its subpackage; the leaves and the doors are single modules.
LEAVES = {"errors", "identity", "logs", "accesslog", "_version"}
DOORS = {"__init__", "__main__", "cli", "api"}
MAY_IMPORT: Mapping[str, set[str]] = {
    "door": {"door", "pm", "ctl", "ops", "primary", "worker", "config", "host", "wire", "leaf", "adapters.entry"},
    "pm": {"pm", "ctl", "config", "host", "wire", "leaf"},  # the process manager: apps steered through ctl's client
    "ctl": {"ctl", "config", "host", "wire", "leaf"},  # a client: it talks to a primary over the control socket
    "ops": {"ops", "primary", "config", "host", "wire", "leaf"},
    "primary": {"primary", "config", "host", "wire", "leaf", "adapters.entry"},  # never worker/: it is handed in
    # never primary/; the stack's door only from worker/serving.py, which the runtime imports where it chose the stack
    "worker": {"worker", "config", "host", "wire", "leaf", "adapters.entry", "adapters.stack.door"},
    "config": {"config", "host", "wire", "leaf"},
    "host": {"host", "leaf"},
    "wire": {"wire", "leaf"},
    "leaf": {"leaf"},
    # adapters/: the core's one door is entry; below it, the engine and uvicorn's stack never meet.
    "adapters.entry": {"adapters", "adapters.engine", "adapters.stack", "adapters.stack.door", "adapters.edge",
                       "leaf"},
    "adapters.stack.door": {"adapters.stack", "adapters.edge", "adapters", "leaf"},
    "adapters": {"adapters", "leaf"},
    "adapters.engine": {"adapters.engine", "adapters.edge", "adapters", "leaf"},
    "adapters.stack": {"adapters.stack", "adapters.edge", "adapters", "leaf"},
    "adapters.edge": {"adapters.edge", "adapters", "leaf"},  # both engines' edge: PROXY headers, static files
}
FRAMEWORKS = {"uvicorn", "flask", "starlette", "django", "httptools", "h11", "websockets"}
MAX_MODULES_PER_FOLDER = 15


def source_files() -> dict[str, Path]:
    """Every module of the package by its dotted name; adapters/ is clusterrun.adapters wherever it lies."""
    found: dict[str, Path] = {}
    for root, dotted in ((PACKAGE, "clusterrun"), (ADAPTERS, "clusterrun.adapters")):
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if root == PACKAGE and parts[0] == "adapters":
                continue  # installed: the adapters' files are read under their own root
            name = ".".join((dotted, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


MODULES = source_files()


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """Every import in ``path``, also those inside functions: (relative level, module, names)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(0, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", [alias.name for alias in node.names]))
    return found


def project_imports(name: str, path: Path, modules: Iterable[str]) -> set[str]:
    """The project's modules that ``name`` imports: ``from pkg import mod`` names mod, anything else its module."""
    known = set(modules)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets: set[str] = set()
    for level, module, names in imports(path):
        base = ".".join(package[: len(package) - level + 1] + ([module] if module else [])) if level else module
        for candidate in [f"{base}.{item}" for item in names] or [base]:
            if candidate not in known:
                candidate = base
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


GRAPH = {name: project_imports(name, path, MODULES) for name, path in MODULES.items()}


def circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph.get(step, ())))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def room(name: str) -> str:
    parts = name.split(".")[1:]
    if parts[:1] == ["adapters"]:
        if name == "clusterrun.adapters.entry":
            return "adapters.entry"
        if name == "clusterrun.adapters.stack.serving":
            return "adapters.stack.door"
        return f"adapters.{parts[1]}" if len(parts) > 2 else "adapters"
    if not parts or parts[0] in DOORS:
        return "door"
    if parts[0] in LEAVES:
        return "leaf"
    return parts[0]


def test_the_layout_is_found() -> None:
    # The rules below would pass vacuously on an empty tree.
    assert {"clusterrun.primary.supervisor", "clusterrun.worker.runtime", "clusterrun.adapters.entry",
            "clusterrun.adapters.stack.seam", "clusterrun.adapters.engine.server"} <= set(MODULES)
    assert "clusterrun.config.options" in GRAPH["clusterrun.config.build"]


def test_the_circle_finder_finds_circles() -> None:
    # A finder that found nothing would pass the next test on any house.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert circles(graph) == [["a", "b", "c"]]


def test_no_import_circle() -> None:
    found = circles(GRAPH)
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(group) for group in found)


def test_imports_run_one_way() -> None:
    against = [f"{name} ({room(name)}) imports {target} ({room(target)})"
               for name, targets in sorted(GRAPH.items()) for target in sorted(targets)
               if room(target) not in MAY_IMPORT[room(name)]]
    assert not against, "imports against the direction:\n" + "\n".join(against)


def test_every_module_has_a_room() -> None:
    assert {room(name) for name in MODULES} <= set(MAY_IMPORT)


def test_no_folder_holds_more_than_15_modules() -> None:
    folders: dict[Path, int] = {}
    for path in MODULES.values():
        folders[path.parent] = folders.get(path.parent, 0) + 1
    crowded = {str(folder): count for folder, count in folders.items() if count > MAX_MODULES_PER_FOLDER}
    assert crowded == {}


@pytest.mark.parametrize("name", sorted(name for name, path in MODULES.items() if path.name == "__init__.py"
                                        and name not in ("clusterrun", "clusterrun.adapters")))
def test_each_subpackage_says_its_job_and_what_it_may_import(name: str) -> None:
    tree = ast.parse(MODULES[name].read_text())
    doc = ast.get_docstring(tree) or ""
    assert "May import:" in doc, f"{name}'s docstring does not say what it may import"
    assert len(tree.body) == 1, f"{name}'s __init__.py holds more than its docstring: import from the modules"


@pytest.mark.parametrize("name", sorted(name for name in MODULES if not room(name).startswith("adapters")))
def test_the_core_imports_no_framework_or_server(name: str) -> None:
    for level, module, _names in imports(MODULES[name]):
        assert level or module.split(".")[0] not in FRAMEWORKS, f"{name} imports {module}"


def test_only_the_seam_imports_uvicorn() -> None:
    importers = {name for name, path in MODULES.items()
                 for level, module, _names in imports(path) if not level and module.split(".")[0] == "uvicorn"}
    assert importers == {"clusterrun.adapters.stack.seam"}


def test_no_function_is_longer_than_50_lines() -> None:
    long = [
        f"{name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None and node.end_lineno - node.lineno + 1 > 50
    ]
    assert not long


def test_the_primary_is_the_loop_and_the_wiring() -> None:
    assert len(MODULES["clusterrun.primary.supervisor"].read_text().splitlines()) < 250
