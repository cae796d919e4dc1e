"""The package's import contract: layers import only downward, and no module imports itself back.

The layers, lowest first (docs/internals.md draws them): the core helpers at the top of the
package, config, db, runtime, data, remote, tasks. The stack builder stands apart: a bare
python3 runs it before any package is installed, so it may import only the standard-library
core helpers, and only tasks may import it. Imports inside functions count as much as those
at the top of a module: both are edges of the graph checked here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from support import CHECKOUT

PACKAGE = CHECKOUT / "crdsops"
LAYERS = ["core", "config", "db", "runtime", "data", "remote", "tasks"]
# the standard-library-only core modules
STACK_MAY_IMPORT = {"crdsops", "crdsops.errors", "crdsops.files", "crdsops.interrupts", "crdsops.output",
                    "crdsops.commands", "crdsops.steps", "crdsops.records"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(CHECKOUT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS + ["stack"]:
        return parts[1]
    return "core"  # crdsops itself and its top-level helpers (errors, files, interrupts, ...)


def imports_of(module: str) -> set[str]:
    """Every crdsops module that ``module`` imports, anywhere in its body."""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    return imports_in(MODULES[module].read_text(), module, package)


def imports_in(source: str, module: str, package: str) -> set[str]:
    tree = ast.parse(source)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name.startswith("crdsops") and name != module:
                found.add(name)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_the_layers_are_packages_that_exist():
    assert {layer_of(m) for m in MODULES} == set(LAYERS) | {"stack"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_only_downward(module):
    mine = layer_of(module)
    for imported in sorted(GRAPH[module]):
        theirs = layer_of(imported)
        if mine == "stack":
            assert layer_of(imported) == "stack" or imported in STACK_MAY_IMPORT, \
                f"{module} (the standalone stack builder) imports {imported}"
        elif theirs == "stack":
            assert mine == "tasks", f"{module} imports the stack builder {imported}; only tasks may"
        else:
            assert LAYERS.index(theirs) <= LAYERS.index(mine), \
                f"{module} ({mine}) imports {imported} ({theirs}), a higher layer"


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert cycles == [], f"import cycles: {cycles}"


@pytest.mark.parametrize("source", [
    "from crdsops.data import backup\n",
    "def later():\n    from crdsops.data.backup import create\n",
    "import crdsops.data.backup\n",
    "from ..data import backup\n",
])
def test_the_checker_sees_an_upward_import(source):
    """The contract test itself: a config module importing the data layer, however spelled, is caught."""
    edges = imports_in(source, "crdsops.config.probe", "crdsops.config")
    assert edges == {"crdsops.data.backup"}
    assert LAYERS.index(layer_of("crdsops.data.backup")) > LAYERS.index(layer_of("crdsops.config.probe"))
