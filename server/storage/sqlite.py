"""SQLite, the embedded backend of `Database`.

SQLite does not go through `databases`: it opens a new connection (and thread) for every connection
context, which would cost milliseconds per request. Each worker keeps two sqlite3 connections driven
from the event loop (single statements; write transactions), a small pool of aiosqlite connections
for the rest (listings, housekeeping), and checkpoints the write-ahead log from a thread
(server/storage/sqlite_wal.py).

Write transactions start with BEGIN IMMEDIATE: the write lock is taken up front, so two
transactions never both read and then fail to upgrade; while another process holds it, the
transaction waits without blocking the event loop, up to the busy timeout.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import databases

from server.errors import TemporarilyUnavailable
from server.storage import sqlite_wal
from server.storage.sqlite_wal import Checkpointer, WalSync, open_with_wait
from server.storage.transactions import OS_FAILURES, Connection, Failure, Row, Statement, T

# The longest wait between two tries for a lock another process holds (`_until_not_busy`).
SQLITE_BUSY_POLL_MAX = 0.001
POOL_PAGE_CACHE_KIB = 256


class _SqliteConnection(Connection):
    def __init__(self, raw: aiosqlite.Connection) -> None:
        self._raw = raw

    async def fetch_one(self, query: str, values: Mapping[str, Any] | None = None) -> Row | None:
        async with self._raw.execute(query, dict(values or {})) as cursor:
            row = await cursor.fetchone()
        return None if row is None else _row(row)

    async def fetch_all(self, query: str, values: Mapping[str, Any] | None = None) -> list[Row]:
        async with self._raw.execute(query, dict(values or {})) as cursor:
            rows = await cursor.fetchall()
        return [_row(row) for row in rows]

    async def execute(self, query: str, values: Mapping[str, Any] | None = None) -> None:
        async with self._raw.execute(query, dict(values or {})):
            pass


def _row(row: sqlite3.Row) -> Row:
    return dict(zip(row.keys(), tuple(row), strict=True))


class _SqlitePool:
    """Open connections to one SQLite file, each configured once."""

    def __init__(self, path: str, *, size: int, busy_timeout: float) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._idle: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._slots = asyncio.Semaphore(size)
        self._all: list[aiosqlite.Connection] = []

    async def _open(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
        conn.row_factory = sqlite3.Row
        for pragma in (
            "PRAGMA foreign_keys = ON",
            "PRAGMA synchronous = FULL",
            # Off the per-request path (housekeeping, listings): a small page cache each, so
            # that the pool's connections do not grow every worker by 2 MB apiece (SQLite's
            # default) as housekeeping walks the tables.
            f"PRAGMA cache_size = -{POOL_PAGE_CACHE_KIB}",
            f"PRAGMA journal_size_limit = {sqlite_wal.SQLITE_WAL_FILE_BYTES}",
        ):
            await conn.execute(pragma)
        self._all.append(conn)
        return conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._slots:
            conn = self._idle.get_nowait() if not self._idle.empty() else await self._open()
            healthy = False
            try:
                yield conn
                healthy = True
            finally:
                if healthy or conn.in_transaction is False:
                    self._idle.put_nowait(conn)
                else:
                    self._all.remove(conn)
                    await conn.close()

    async def close(self) -> None:
        for conn in self._all:
            await conn.close()
        self._all.clear()


def _open_in_loop(path: str, *, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
    conn = open_with_wait(path, busy_timeout=busy_timeout)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 0")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    # Checkpoints copy the log into the database file and fsync it: milliseconds that must not
    # stall the event loop. `Checkpointer` runs them in a thread instead.
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    # The writer that starts the log over cuts the file back to this size.
    conn.execute(f"PRAGMA journal_size_limit = {sqlite_wal.SQLITE_WAL_FILE_BYTES}")
    return conn


async def _until_not_busy(
    attempt: Callable[[], T], *, deadline: float, loop: asyncio.AbstractEventLoop
) -> T:
    """Run `attempt` (one non-blocking SQLite call) until no other process holds the lock it
    needs. SQLite's own busy handler would sleep inside the call and block the event loop; here
    the loop runs other requests between tries. Short waits: a write transaction holds the lock
    for well under a millisecond. The bound stops doubling at 1 ms: a longer sleep often outlasts
    the lock, and every writer of its worker would queue behind the sleeper."""
    delay = 0.0001
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            busy = "locked" in str(exc) or "busy" in str(exc)
            if not busy or loop.time() >= deadline:
                raise
        await asyncio.sleep(random.uniform(0, delay))  # noqa: S311 - jitter, not a secret
        delay = min(delay * 2, SQLITE_BUSY_POLL_MAX)


def _writes(query: str) -> bool:
    """Whether a single statement needs SQLite's write lock: every statement but a SELECT."""
    return not query.lstrip()[:6].upper().startswith("SELECT")


class _SqliteStatements:
    """One sqlite3 connection used from the event loop itself, for single autocommit statements
    on the per-request path (replay entries, session lookups, rate counters), without the thread
    hop that would cost more than the statement itself. It never waits inside SQLite
    (`_until_not_busy`). Commits here use synchronous=NORMAL: in WAL mode they survive a process
    crash, and only the last ones may be lost on power failure, which is acceptable for these
    short-lived rows."""

    def __init__(self, path: str, *, busy_timeout: float, writer: asyncio.Lock) -> None:
        self._conn = _open_in_loop(path, synchronous="NORMAL", busy_timeout=busy_timeout)
        self._busy_timeout = busy_timeout
        self._writer = writer

    async def run(self, query: str, values: Mapping[str, Any]) -> list[Row]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._busy_timeout

        def attempt() -> list[Row]:
            return [_row(row) for row in self._conn.execute(query, values).fetchall()]

        if not _writes(query):
            return await _until_not_busy(attempt, deadline=deadline, loop=loop)
        # Behind this process's own write transaction, wait for its end rather than poll.
        async with self._writer:
            return await _until_not_busy(attempt, deadline=deadline, loop=loop)

    async def close(self) -> None:
        self._conn.close()


class _SqliteLoopConnection(Connection):
    """Statements of an in-loop transaction: plain sqlite3 calls, no thread hop, no await that
    yields, so the transaction holds SQLite's write lock only for the CPU time of its work."""

    def __init__(self, raw: sqlite3.Connection) -> None:
        self._raw = raw

    async def fetch_one(self, query: str, values: Mapping[str, Any] | None = None) -> Row | None:
        row = self._raw.execute(query, values or {}).fetchone()
        return None if row is None else _row(row)

    async def fetch_all(self, query: str, values: Mapping[str, Any] | None = None) -> list[Row]:
        return [_row(row) for row in self._raw.execute(query, values or {}).fetchall()]

    async def execute(self, query: str, values: Mapping[str, Any] | None = None) -> None:
        self._raw.execute(query, values or {})


class _SqliteTransactions:
    """Write transactions on one sqlite3 connection driven from the event loop. Through a thread
    (aiosqlite) every statement of a transaction would cost two thread hops; here the statements and
    the COMMIT are one stretch of CPU on the loop, with no await while the write lock is held
    (unless another process holds it at BEGIN). BEGIN IMMEDIATE takes the write lock up front and is
    retried without blocking while another process holds it. Within the process, `writer` (shared
    with the other in-loop connections) admits one writer at a time.

    The COMMIT itself never waits for the disk (synchronous=NORMAL). A durable transaction (a login,
    a rotation, a revocation) then waits for `wal_sync`, after releasing the lock, so the fsync does
    not hold up every other writer of every worker. Records whose loss only repeats work (outbox
    delivery records) do not wait (docs/design.md §5). Durable or not, transactions take turns at
    `writer`, so one connection serves both."""

    def __init__(self, path: str, *, busy_timeout: float, writer: asyncio.Lock) -> None:
        self._conn = _open_in_loop(path, synchronous="NORMAL", busy_timeout=busy_timeout)
        self._busy_timeout = busy_timeout
        self._writer = writer
        self._wal_sync: WalSync | None = WalSync(path + "-wal")
        (journal_mode,) = self._conn.execute("PRAGMA journal_mode").fetchone()
        if journal_mode != "wal":
            # Not a migrated database (migrations switch it to WAL): no log to sync, so every
            # COMMIT waits for the disk itself.
            self._conn.execute("PRAGMA synchronous = FULL")
            self._wal_sync = None

    @asynccontextmanager
    async def transaction(self, *, durable: bool) -> AsyncIterator[Connection]:
        wal_sync = self._wal_sync if durable else None
        if wal_sync is not None and wal_sync.failed is not None:
            raise TemporarilyUnavailable("the database cannot write")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._busy_timeout
        async with self._writer:
            await _until_not_busy(
                lambda: self._conn.execute("BEGIN IMMEDIATE"), deadline=deadline, loop=loop
            )
            try:
                yield _SqliteLoopConnection(self._conn)
                self._conn.execute("COMMIT")
            finally:
                # After an exception in the work, or a COMMIT that failed (disk full, I/O error).
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
        if wal_sync is not None:
            await wal_sync.after_commit()

    async def close(self) -> None:
        self._conn.close()
        if self._wal_sync is not None:
            await self._wal_sync.close()


class SqliteBackend:
    """The connections of one worker to one SQLite file, for `Database`: the in-loop ones for
    single statements and write transactions, the pool for the rest, and the checkpointer."""

    # Every failure is one that may pass: "database is locked", "disk I/O error", "database or
    # disk is full".
    failures: tuple[type[BaseException], ...] = (sqlite3.OperationalError, *OS_FAILURES)

    def __init__(self, url: str, *, pool_size: int, busy_timeout: float) -> None:
        self.path: str = databases.DatabaseURL(url).database
        if self.path and self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout = busy_timeout
        self._pool = _SqlitePool(self.path, size=pool_size, busy_timeout=busy_timeout)
        self._statements: _SqliteStatements | None = None
        self._transactions: _SqliteTransactions | None = None
        self._checkpointer: Checkpointer | None = None

    def failure(self, exc: BaseException) -> Failure | None:
        return "unavailable"

    async def connect(self) -> None:
        # SQLite has one writer at a time. Within this process the in-loop connections queue for
        # it here, so a writer waits exactly until the one before it is done instead of polling
        # with growing sleeps; only writers of other processes are polled for (`_until_not_busy`).
        writer = asyncio.Lock()
        self._statements = _SqliteStatements(
            self.path, busy_timeout=self._busy_timeout, writer=writer
        )
        self._transactions = _SqliteTransactions(
            self.path, busy_timeout=self._busy_timeout, writer=writer
        )
        self._checkpointer = Checkpointer(
            self.path,
            interval=sqlite_wal.SQLITE_CHECKPOINT_INTERVAL,
            writer=writer,
            busy_timeout=self._busy_timeout,
        )
        self._checkpointer.start()

    async def disconnect(self) -> None:
        if self._checkpointer is not None:
            await self._checkpointer.stop()
        await self._pool.close()
        if self._statements is not None:
            await self._statements.close()
        if self._transactions is not None:
            await self._transactions.close()

    def transaction(self, *, durable: bool) -> AbstractAsyncContextManager[Connection]:
        if self._transactions is None:
            raise TemporarilyUnavailable("the database is not connected")
        return self._transactions.transaction(durable=durable)

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Connection]:
        async with self._pool.connection() as raw:
            yield _SqliteConnection(raw)

    def statement(self, query: str, values: Mapping[str, Any]) -> Awaitable[list[Row]]:
        # The statement itself, not awaited here: no coroutine of its own on the per-request path.
        if self._statements is None:
            return self._pooled(query, values)
        return self._statements.run(query, values)

    async def _pooled(self, query: str, values: Mapping[str, Any]) -> list[Row]:
        async with self.autocommit() as conn:
            return await conn.fetch_all(query, values)

    async def run_together(
        self, writes: Sequence[Statement], read: Statement | None, *, durable: bool
    ) -> list[Row]:
        async with self.transaction(durable=durable) as conn:
            return await conn.run_together(writes, read)

    async def run_guarded(self, guard: Statement, writes: Sequence[Statement]) -> list[Row]:
        async with self.transaction(durable=True) as conn:
            return await conn.run_guarded(guard, writes)
