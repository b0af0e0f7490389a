from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.backends import BACKENDS
from support.harness import Harness, running_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every server test runs on the embedded SQLite file and on PostgreSQL."""
    name: str = request.param
    return name


@pytest.fixture
async def server(tmp_path: Path, backend: str) -> AsyncIterator[Harness]:
    async with running_server(tmp_path, backend=backend) as harness:
        yield harness
