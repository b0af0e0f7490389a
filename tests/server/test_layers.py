"""The server's layering, checked from its source: SQL and backend branches live in
server/storage/ only, flows see typed records rather than rows, and no module grows past the
size a reader can hold in mind."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server"
STORAGE = SERVER / "storage"
MAX_MODULE_LINES = 400
_SQL = re.compile(r"\b(SELECT\s|INSERT\s+INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s)", re.I)
# Names of the driver layer that only the storage layer may use: a flow that holds one of them
# is writing queries.
_DRIVER_NAMES = {"Connection", "Row", "Statement", "run_together", "run_guarded", "fetch_one"}


def _modules(*, outside_storage: bool) -> list[Path]:
    return [
        path
        for path in sorted(SERVER.rglob("*.py"))
        if not (outside_storage and STORAGE in path.parents)
    ]


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_sql_text_lives_only_in_the_storage_layer() -> None:
    found = [
        f"{path.relative_to(SERVER.parent)}:{line}"
        for path in _modules(outside_storage=True)
        for line, text in _strings(ast.parse(path.read_text()))
        if _SQL.search(text)
    ]
    assert found == []


def test_no_backend_branch_outside_the_storage_layer() -> None:
    found = [
        f"{path.relative_to(SERVER.parent)}:{node.lineno}"
        for path in _modules(outside_storage=True)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in {"dialect", "sqlite_path"}
    ]
    assert found == []


def test_flows_use_no_driver_names() -> None:
    found = []
    for path in _modules(outside_storage=True):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "server.storage"
            ):
                used = {alias.name for alias in node.names} & _DRIVER_NAMES
                if used:
                    found.append(f"{path.relative_to(SERVER.parent)}: {sorted(used)}")
            if isinstance(node, ast.Attribute) and node.attr in _DRIVER_NAMES - {"Row"}:
                found.append(f"{path.relative_to(SERVER.parent)}:{node.lineno} .{node.attr}")
    assert found == []


def test_no_server_module_is_longer_than_a_reader_can_hold() -> None:
    long = {
        str(path.relative_to(SERVER.parent)): lines
        for path in _modules(outside_storage=False)
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


# What the storage layer may import of the server: the errors it raises and the settings it is
# built from. A flow, a route or the edge would be a call back up the layers.
_BELOW_STORAGE = ("server.storage", "server.errors", "server.settings")


def test_the_storage_layer_imports_no_flow() -> None:
    found = [
        f"{path.relative_to(SERVER.parent)}: {node.module}"
        for path in sorted(STORAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith("server")
        and not (node.module or "").startswith(_BELOW_STORAGE)
    ]
    assert found == []
