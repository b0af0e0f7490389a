"""Fixtures shared by every test directory: the async backend, the two storage backends and an
in-process server on each. A directory's own conftest.py keeps only what is its own (the `ops`
of tests/lifecycle, the fake server of tests/client, the SMTP sink of tests/mail)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from support.backends import BACKENDS

if TYPE_CHECKING:
    from support.harness import Harness


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every in-process test runs on the embedded SQLite file and on PostgreSQL."""
    name: str = request.param
    return name


@pytest.fixture
def server_settings() -> dict[str, Any]:
    """Settings every `server` of a directory gets: a directory's conftest overrides this."""
    return {}


@pytest.fixture
def server_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings for the `server` fixture: override this fixture in a module, or parametrize it
    with indirect=True."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    return overrides


@pytest.fixture
async def server(
    tmp_path: Path,
    backend: str,
    server_settings: dict[str, Any],
    server_overrides: dict[str, Any],
) -> AsyncIterator[Harness]:
    # Imported here: loading the server is for the tests that start one.
    from support.harness import running_server

    async with running_server(
        tmp_path, backend=backend, **{**server_settings, **server_overrides}
    ) as harness:
        yield harness
