"""Connections and transactions over `databases`, for SQLite (embedded) and PostgreSQL.

SQLite write transactions start with BEGIN IMMEDIATE: the write lock is taken up front, so two
transactions never both read and then fail to upgrade (SQLITE_BUSY without waiting); the busy
timeout makes the second writer wait instead. PostgreSQL transactions run at the configured
isolation level; serialization failures and deadlocks (40001, 40P01) are retried a bounded number
of times with jitter. Failures that a later retry can cure are raised as TemporarilyUnavailable
(503 with Retry-After), never as a 500 (SPEC.md §8).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import asyncpg
import databases

from server.errors import TemporarilyUnavailable

Row = Mapping[str, Any]
T = TypeVar("T")
Isolation = Literal["read_committed", "serializable"]

MAX_TRANSACTION_ATTEMPTS = 5

_PG_CONFLICTS: tuple[type[BaseException], ...] = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)
_PG_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.InterfaceError,
    # Raised when a pooled connection that the server terminated is reset on release.
    asyncpg.InternalClientError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


class TransactionConflict(TemporarilyUnavailable):
    """A serialization failure or deadlock: the transaction may simply be run again."""


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
    def __init__(
        self,
        url: str,
        *,
        sqlite_busy_timeout: float = 5.0,
        isolation: Isolation = "read_committed",
        pool_size: int = 10,
    ) -> None:
        self.url = url
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        self.isolation = isolation
        if self.dialect == "sqlite":
            path = databases.DatabaseURL(url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = databases.Database(url, timeout=sqlite_busy_timeout)
        else:
            self._db = databases.Database(url, min_size=1, max_size=pool_size, command_timeout=10)

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
        except _PG_CONFLICTS as exc:
            raise TransactionConflict() from exc
        except _PG_UNAVAILABLE as exc:
            raise TemporarilyUnavailable() from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A read-write transaction that commits when the block ends normally. Prefer `run`,
        which also retries conflicts."""
        async with self._translate_errors(), self._db.connection() as raw:
            if self.dialect == "sqlite":
                # Per connection, and only outside a transaction: SQLite ignores it inside one.
                await raw.execute("PRAGMA foreign_keys = ON")
                await raw.execute("BEGIN IMMEDIATE")
                try:
                    yield Connection(raw)
                except BaseException:
                    await raw.execute("ROLLBACK")
                    raise
                await raw.execute("COMMIT")
            else:
                isolation = "serializable" if self.isolation == "serializable" else None
                async with raw.transaction(isolation=isolation):
                    yield Connection(raw)

    async def run(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `work` in a transaction; run it again on a serialization conflict, up to
        MAX_TRANSACTION_ATTEMPTS times. `work` must have no effect outside the database."""
        for attempt in range(1, MAX_TRANSACTION_ATTEMPTS + 1):
            try:
                async with self.transaction() as conn:
                    return await work(conn)
            except TransactionConflict:
                if attempt == MAX_TRANSACTION_ATTEMPTS:
                    raise
                await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))  # noqa: S311
        raise AssertionError("unreachable")  # pragma: no cover

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Connection]:
        """Single statements that are atomic by themselves (reads, upserts, conditional updates)."""
        async with self._translate_errors(), self._db.connection() as raw:
            yield Connection(raw)
