"""The floors of the house: which package may import which, and no import cycles.

The core (``streambot/`` except the composition root, the CLI and the demo) imports nothing from
``utils/``, ``routes/``, ``streambot/bot/`` or the simulator; ``utils/``, ``streambot/bot/`` and
the simulator sit on the core; ``routes/`` sits on the core and ``utils/``. Only the root may import
everything. Type-only imports (under ``if TYPE_CHECKING:``) still count for the floors, since
they are a dependency a reader has to follow; they are exempt from the cycle rule, because they
never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("streambot", "routes", "utils")
TOP = {"streambot.app", "streambot.__main__", "streambot.demo"}

#: Which floors each floor may import (its own always included).
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "simulator": frozenset({"core", "simulator"}),
    "bot": frozenset({"core", "bot"}),
    "utils": frozenset({"core", "utils"}),
    "routes": frozenset({"core", "utils", "routes"}),
    "root": frozenset({"core", "simulator", "bot", "utils", "routes", "root"}),
}


def floor_of(module: str) -> str:
    """Given a dotted module name of the project, return the floor it lives on."""
    if module in TOP:
        return "root"
    if module == "streambot.bot" or module.startswith("streambot.bot."):
        return "bot"
    if module == "streambot.simulator" or module.startswith("streambot.simulator."):
        return "simulator"
    head = module.split(".")[0]
    return "core" if head == "streambot" else head


def project_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = project_modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, source: str | None = None) -> Iterator[tuple[str, bool, int]]:
    """Given a project module, yield (imported project module, type-only?, line) for each import."""
    path = MODULES[module]
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def walk(node: ast.AST, type_only: bool) -> Iterator[tuple[str, bool, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk_stmt(stmt, True)
                for stmt in child.orelse:
                    yield from walk_stmt(stmt, type_only)
            else:
                yield from walk_stmt(child, type_only)

    def walk_stmt(node: ast.AST, type_only: bool) -> Iterator[tuple[str, bool, int]]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from resolve(alias.name, type_only, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                name = candidate if candidate in MODULES else base
                yield from resolve(name, type_only, node.lineno)
        else:
            yield from walk(node, type_only)

    def resolve(name: str, type_only: bool, line: int) -> Iterator[tuple[str, bool, int]]:
        if name.split(".")[0] in PACKAGES and name in MODULES:
            yield name, type_only, line

    yield from walk(tree, False)


def test_every_project_module_is_on_a_known_floor() -> None:
    """The scan sees the whole tree, so a new package cannot slip past the floor rules."""
    assert {floor_of(m) for m in MODULES} == set(ALLOWED)
    assert "streambot.units" in MODULES
    assert floor_of("streambot.units") == "core"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_stay_on_or_below_their_floor(module: str) -> None:
    """Each module imports only from floors its own floor stands on."""
    floor = floor_of(module)
    wrong = [
        f"{MODULES[module].relative_to(ROOT)}:{line} imports {target} ({floor_of(target)})"
        for target, _, line in imports_of(module)
        if floor_of(target) not in ALLOWED[floor]
    ]
    assert not wrong, f"{floor} module reaches up: {wrong}"


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Given module -> imported modules, return the import loops a depth-first walk meets."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + "."):
                continue  # a package __init__ importing its own submodules
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def runtime_graph() -> dict[str, set[str]]:
    return {m: {t for t, type_only, _ in imports_of(m) if not type_only} for m in MODULES}


def test_no_import_cycles_at_run_time() -> None:
    """Following only imports that run, no module reaches itself again (type-only are exempt)."""
    cycles = find_cycles(runtime_graph())
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_a_reach_up_and_a_cycle() -> None:
    """The rules can fail: a core module importing utils, and a two-module loop, are caught."""
    source = "from utils.stream_cleanup import StreamRegistry\nfrom routes import keys\n"
    found = [(t, type_only) for t, type_only, _ in imports_of("streambot.guard", source)]
    assert found == [("utils.stream_cleanup", False), ("routes.keys", False)]
    assert all(floor_of(t) not in ALLOWED["core"] for t, _ in found)
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from streambot.app import Services\n"
    assert [(t, o) for t, o, _ in imports_of("routes.keys", typed)] == [("streambot.app", True)]
    graph = runtime_graph()
    graph["streambot.units"] = graph["streambot.units"] | {"streambot.blocks"}
    # Where the walk enters the loop depends on what else imports its modules: compare the loop.
    (cycle,) = find_cycles(graph)
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == ["streambot.blocks", "streambot.units"]


def test_test_modules_share_code_through_helpers_not_each_other() -> None:
    """No test file imports a test module or conftest: shared test code lives in tests/helpers.py."""
    wrong = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            shared = isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
            if shared and (node.module.startswith("test_") or node.module == "conftest"):
                wrong.append(f"{path.name}:{node.lineno} imports .{node.module}")
    assert wrong == []
