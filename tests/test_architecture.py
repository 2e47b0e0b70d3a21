"""The rooms of docs/architecture.md hold: no import cycle among popcon's modules, and each room
imports only what the page says it may.

Every ``import`` in ``src/popcon`` counts, those inside functions too: a cycle hidden in a
function is still a cycle for whoever reads the code.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from repo import SRC

#: room (a module-name prefix) -> the popcon rooms it may import (besides itself)
MAY_IMPORT = {
    "popcon.recorder": (),
    "popcon.protocol": (),
    "popcon.output": (),
    "popcon.arguments": (),
    "popcon.admin": ("popcon", "popcon.recorder", "popcon.protocol", "popcon.output"),
    "popcon.cli": (
        "popcon",
        "popcon.admin",
        "popcon.arguments",
        "popcon.output",
        "popcon.server.cli",
    ),
    "popcon.server.storage": ("popcon.protocol",),
    "popcon.server.receive": ("popcon.protocol", "popcon.server.storage"),
    "popcon.server.query": (
        "popcon.protocol",
        "popcon.server.storage.schema",
        "popcon.server.storage.sketch",
    ),
    "popcon.server.web": (
        "popcon",
        "popcon.protocol",
        "popcon.server.query",
        "popcon.server.storage.schema",
    ),
    "popcon.server.tables": (),
    "popcon.server.upkeep_commands": (
        "popcon.output",
        "popcon.protocol",
        "popcon.server.settings",
        "popcon.server.storage.lock",
        "popcon.server.storage.upkeep",
    ),
    "popcon.server.cli": (
        "popcon.arguments",
        "popcon.server.upkeep_commands",
        "popcon.output",
        "popcon.protocol",
        "popcon.server.query",
        "popcon.server.tables",
        "popcon.server.settings",
        "popcon.server.app",
    ),
}
#: web modules that know no other face
FACE_ALONE = ("popcon.server.web.api",)
FACES = ("popcon.server.web.dashboard", "popcon.server.web.metrics", "popcon.server.web.hub")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The popcon modules a file imports, resolved to module names (``from a import b`` names
    ``a.b`` when that is a module, else ``a``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}")
            found.add(target)
    return {module for module in found if module == "popcon" or module.startswith("popcon.")}


def graph() -> dict[str, set[str]]:
    files = {module_name(path): path for path in SRC.joinpath("popcon").rglob("*.py")}
    edges = {}
    for name, path in files.items():
        targets = set()
        for imported in imports_of(path):
            while imported not in files and "." in imported:
                imported = imported.rpartition(".")[0]
            if imported in files and imported != name:
                targets.add(imported)
        edges[name] = targets
    return edges


def room_of(module: str) -> str | None:
    rooms = sorted(MAY_IMPORT, key=len, reverse=True)
    return next((room for room in rooms if module == room or module.startswith(room + ".")), None)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read() -> None:
    edges = graph()
    assert "popcon.server.app" in edges
    assert "popcon.server.query.answers" in edges["popcon.server.web.api"] or any(
        target.startswith("popcon.server.query") for target in edges["popcon.server.web.api"]
    )


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_a_cycle_is_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("room", sorted(MAY_IMPORT))
def test_each_room_imports_only_what_it_may(room: str) -> None:
    allowed = (room, *MAY_IMPORT[room])
    wrong = {
        (module, target)
        for module, targets in graph().items()
        if room_of(module) == room
        for target in targets
        if not any(target == ok or target.startswith(ok + ".") for ok in allowed)
        and not (target == "popcon" and "popcon" in allowed)
    }
    assert not wrong, sorted(wrong)


def test_the_api_knows_no_other_face() -> None:
    edges = graph()
    for module in FACE_ALONE:
        assert not edges[module] & set(FACES), sorted(edges[module] & set(FACES))


def test_the_recorder_imports_only_the_standard_library() -> None:
    stdlib = set(sys.stdlib_module_names)
    for path in SRC.joinpath("popcon", "recorder").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for name in names:
                top = name.partition(".")[0]
                assert top in stdlib or top.startswith("_popcon_"), f"{path.name}: {name}"
