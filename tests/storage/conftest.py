"""The conformance suite of the storage layer: every store interface, on both backends.

`database` is a migrated, connected `Database` on the backend of the root `backend` fixture;
`database_url` is its URL, for reading rows back with `support.backends.query`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support.backends import database_url_for

from server.storage.database import Database
from server.storage.migrate import migrate


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    with database_url_for(backend, tmp_path) as url:
        if backend == "sqlite":
            # PostgreSQL's database is cloned from a migrated template; the file is new.
            migrate(url)
        yield url


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    await db.connect()
    try:
        yield db
    finally:
        await db.disconnect()
