"""The architecture's rules, read from the installed package's source: they break here, not in a review.

- Imports run one way: adapters use only the core's small public pieces (errors, identity, the version);
  the core reaches adapters only through ``clusterrun.adapters.entry``.
- The core imports no web framework and no server: uvicorn, Flask, Starlette and Django stay in adapters.
- uvicorn is imported by one module only, the seam (adapters/stack/seam.py).
- Small pieces: no function over 50 lines, the primary under 250 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import clusterrun
from clusterrun import adapters

PACKAGE = Path(clusterrun.__file__).parent
ADAPTERS = Path(adapters.__file__).parent  # a folder of its own in a checkout
CORE_FILES = sorted(PACKAGE.rglob("*.py"))
ADAPTER_FILES = sorted(ADAPTERS.rglob("*.py"))

# What adapters may take from the core: "" is the package itself (``from .. import __version__``).
CORE_PIECES_FOR_ADAPTERS = {"_version", "errors", "identity"}
FRAMEWORKS = {"uvicorn", "flask", "starlette", "django", "httptools", "h11", "websockets"}


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """Every import in ``path``, also those inside functions: (relative level, module, names)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(0, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", [alias.name for alias in node.names]))
    return found


def test_the_layout_is_found() -> None:
    # The rules below would pass vacuously on an empty glob.
    assert {"supervisor.py", "runtime.py", "serving.py"} <= {path.name for path in CORE_FILES}
    assert {"entry.py", "seam.py", "bridge.py"} <= {path.name for path in ADAPTER_FILES}


@pytest.mark.parametrize("path", ADAPTER_FILES, ids=lambda path: path.name)
def test_adapters_use_only_the_cores_public_pieces(path: Path) -> None:
    for level, module, _names in imports(path):
        if level == 2 or module.startswith("clusterrun"):
            core_module = module.removeprefix("clusterrun").lstrip(".") if level == 0 else module
            if core_module.startswith("adapters"):
                continue  # an absolute import of a sibling adapter
            assert core_module in CORE_PIECES_FOR_ADAPTERS, f"{path.name} imports the core's {core_module!r}"


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda path: path.name)
def test_the_core_reaches_adapters_through_the_entry_only(path: Path) -> None:
    for level, module, names in imports(path):
        if level == 1 and module == "adapters":
            assert names == ["entry"], f"{path.name} imports {names} from adapters"
        elif level == 1 and module.startswith("adapters."):
            assert module == "adapters.entry", f"{path.name} imports {module}"
        assert module.split(".")[0] not in FRAMEWORKS or level, f"{path.name} imports {module}"


def test_only_the_seam_imports_uvicorn() -> None:
    importers = {
        path.name for path in ADAPTER_FILES + CORE_FILES
        for level, module, _names in imports(path) if level == 0 and module.split(".")[0] == "uvicorn"
    }
    assert importers == {"seam.py"}


def test_no_function_is_longer_than_50_lines() -> None:
    long = [
        f"{path.parent.name}/{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in CORE_FILES + ADAPTER_FILES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None and node.end_lineno - node.lineno + 1 > 50
    ]
    assert not long


def test_the_primary_is_the_loop_and_the_wiring() -> None:
    assert len((PACKAGE / "primary" / "supervisor.py").read_text().splitlines()) < 250
