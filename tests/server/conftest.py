from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.harness import Harness, running_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_server(tmp_path) as harness:
        yield harness
