"""Connections and transactions over `databases`, for SQLite (embedded) and PostgreSQL.

SQLite write transactions start with BEGIN IMMEDIATE: the write lock is taken up front, so two
transactions never both read and then fail to upgrade (SQLITE_BUSY without waiting). The busy
timeout makes the second writer wait instead. Database failures that a retry can cure are raised
as TemporarilyUnavailable (503 with Retry-After), never as a 500.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import databases

from server.errors import TemporarilyUnavailable

Row = Mapping[str, Any]

try:  # asyncpg is optional at import time for SQLite-only installs.
    import asyncpg

    _PG_TRANSIENT: tuple[type[BaseException], ...] = (
        asyncpg.PostgresConnectionError,
        asyncpg.CannotConnectNowError,
        asyncpg.TooManyConnectionsError,
        asyncpg.SerializationError,
        asyncpg.DeadlockDetectedError,
        asyncpg.InterfaceError,
        ConnectionError,
        OSError,
    )
except ImportError:  # pragma: no cover
    _PG_TRANSIENT = (ConnectionError, OSError)


class Connection:
    """One connection inside a transaction (or autocommit): the only way queries run."""

    def __init__(self, raw: databases.core.Connection) -> None:
        self._raw = raw

    async def fetch_one(self, query: str, values: Mapping[str, Any] | None = None) -> Row | None:
        row = await self._raw.fetch_one(query=query, values=dict(values or {}))
        return None if row is None else row._mapping

    async def fetch_all(self, query: str, values: Mapping[str, Any] | None = None) -> list[Row]:
        rows = await self._raw.fetch_all(query=query, values=dict(values or {}))
        return [row._mapping for row in rows]

    async def execute(self, query: str, values: Mapping[str, Any] | None = None) -> None:
        await self._raw.execute(query=query, values=dict(values or {}))


class Database:
    def __init__(self, url: str, *, sqlite_busy_timeout: float = 5.0) -> None:
        self.url = url
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        if self.dialect == "sqlite":
            path = databases.DatabaseURL(url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = databases.Database(url, timeout=sqlite_busy_timeout)
        else:
            self._db = databases.Database(url, min_size=1, max_size=10)

    async def connect(self) -> None:
        async with self._translate_errors():
            await self._db.connect()

    async def disconnect(self) -> None:
        await self._db.disconnect()

    @asynccontextmanager
    async def _translate_errors(self) -> AsyncIterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            # "database is locked", "disk I/O error", "database or disk is full"
            raise TemporarilyUnavailable() from exc
        except _PG_TRANSIENT as exc:
            raise TemporarilyUnavailable() from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A read-write transaction; commits when the block ends normally."""
        async with self._translate_errors(), self._db.connection() as raw:
            if self.dialect == "sqlite":
                await raw.execute("BEGIN IMMEDIATE")
                try:
                    yield Connection(raw)
                except BaseException:
                    await raw.execute("ROLLBACK")
                    raise
                await raw.execute("COMMIT")
            else:
                async with raw.transaction():
                    yield Connection(raw)

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Connection]:
        """Single statements that are atomic by themselves (reads, upserts, conditional updates)."""
        async with self._translate_errors(), self._db.connection() as raw:
            yield Connection(raw)
