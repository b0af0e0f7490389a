"""protocol/ stays pure (SPEC.md §3-§6): no I/O, clock, randomness or web stack in its imports.

Time and random bytes are arguments; the server and the clients build on protocol, never the
other way round. This walks every protocol/*.py with `ast`, so an import hidden inside a function
or behind `if TYPE_CHECKING` counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROTOCOL = Path(__file__).resolve().parents[2] / "protocol"
FORBIDDEN = frozenset(
    {
        "server",
        "splitlink_client",
        "starlette",
        "databases",
        "asyncio",
        "socket",
        "time",
        "datetime",
        "random",
        "os",
        "secrets",
        "uuid",
        # Dynamic imports would get round this check.
        "importlib",
    }
)
FORBIDDEN_CALLS = frozenset({"__import__", "open", "eval", "exec"})


def imported_modules(source: str) -> set[str]:
    """Absolute names of every module an import statement in `source` names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            # `from os import path` imports os.path; `from os import *` imports os.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def forbidden_imports(source: str) -> set[str]:
    return {name for name in imported_modules(source) if name.split(".")[0] in FORBIDDEN}


def forbidden_calls(source: str) -> set[str]:
    return {
        node.func.id
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in FORBIDDEN_CALLS
    }


def protocol_sources() -> list[Path]:
    return sorted(PROTOCOL.glob("*.py"))


def test_protocol_sources_are_found() -> None:
    names = {path.name for path in protocol_sources()}
    assert {"__init__.py", "dpop.py", "keys.py", "encoding.py"} <= names


@pytest.mark.parametrize("path", protocol_sources(), ids=lambda path: path.name)
def test_protocol_imports_no_io_clock_randomness_or_web_stack(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert not forbidden_imports(source), f"{path.name} imports {sorted(forbidden_imports(source))}"
    assert not forbidden_calls(source), f"{path.name} calls {sorted(forbidden_calls(source))}"


@pytest.mark.parametrize(
    "source",
    [
        "import time",
        "import os.path",
        "from datetime import datetime",
        "from server.app import app",
        "import splitlink_client",
        "def f():\n    import secrets\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import starlette\n",
        "import uuid as u",
        "from asyncio import sleep",
        "import importlib\nimportlib.import_module('random')",
    ],
)
def test_boundary_check_catches_forbidden_imports(source: str) -> None:
    assert forbidden_imports(source)


@pytest.mark.parametrize(
    "source",
    ["import hashlib", "from protocol.encoding import b64url_encode", "from . import keys"],
)
def test_boundary_check_allows_pure_imports(source: str) -> None:
    assert not forbidden_imports(source)


def test_boundary_check_catches_dynamic_import_and_file_access() -> None:
    assert forbidden_calls("m = __import__('time')") == {"__import__"}
    assert forbidden_calls("open('/etc/passwd')") == {"open"}
