"""The shape of the package, checked from its source (no server): no import cycle, no reaching into another
class's private members, one place that asks the circuit breaker, every key built by the KeySpace."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cachewise"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(name: str, path: Path) -> Iterator[str]:
    """Every cachewise module ``name`` imports, at any depth of its code (type-checking imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _package_of(name, path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("cachewise"):
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            elif node.module and node.module.startswith("cachewise"):
                target = node.module
            else:
                continue
            # ``from . import ops`` imports the module ``ops`` of the package
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield sub if sub in MODULES else target


def _graph() -> dict[str, set[str]]:
    return {name: {t for t in _imports(name, path) if t in MODULES and t != name} for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_package_is_read_as_a_whole() -> None:
    assert {"cachewise.cache", "cachewise.engine.flows", "cachewise.executor", "cachewise.entries.commands"} <= set(
        MODULES
    )
    assert "cachewise.executor" in _graph()["cachewise.cache"]


def test_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_cycle_detection_finds_a_loop() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _private_members() -> dict[str, set[str]]:
    """``_name`` → the modules whose classes define it (methods, or attributes assigned on ``self``)."""
    defined: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for node in ast.walk(cls):
                member = None
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    member = node.name
                elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
                    member = node.attr
                elif isinstance(node, ast.Constant) and isinstance(node.value, str) and isinstance(cls, ast.ClassDef):
                    member = node.value  # __slots__ entries
                if member and member.startswith("_") and not member.startswith("__"):
                    defined.setdefault(member, set()).add(name)
    return defined


def test_no_module_reaches_into_another_class_s_private_members() -> None:
    defined = _private_members()
    offences = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            owners = defined.get(node.attr, set())
            if owners and name not in owners:
                offences.append(f"{name}:{node.lineno}: .{node.attr} (defined in {', '.join(sorted(owners))})")
    assert offences == []


def test_only_the_executor_asks_the_circuit_breaker() -> None:
    askers = sorted(name for name, path in MODULES.items() if ".allow()" in path.read_text(encoding="utf-8"))
    assert askers == ["cachewise.executor"]


#: Keys are made of the KeySpace's prefixes; using them outside the KeySpace builds a key there.
_KEY_PARTS = re.compile(r"(keyspace|space)\.(internal|prefix|tag_prefix)\b|\.(namespace_version|tag_prefix)\s*\+")


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != "cachewise.keyspace"))
def test_keys_are_built_by_the_keyspace_only(name: str) -> None:
    text = MODULES[name].read_text(encoding="utf-8")
    assert not _KEY_PARTS.search(text), f"{name} builds a server key itself: add a KeySpace method"
