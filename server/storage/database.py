"""Connections and transactions for SQLite (embedded) and PostgreSQL (through `databases`).

SQLite does not go through `databases`: it opens a new connection (and thread) for every connection
context, which would cost milliseconds per request. Each worker keeps two sqlite3 connections driven
from the event loop (single statements; write transactions), a small pool of aiosqlite connections
for the rest (listings, housekeeping), and checkpoints the write-ahead log from a thread.

SQLite write transactions start with BEGIN IMMEDIATE: the write lock is taken up front, so two
transactions never both read and then fail to upgrade; while another process holds it, the
transaction waits without blocking the event loop, up to the busy timeout. PostgreSQL
transactions run at the configured isolation level; serialization failures and deadlocks (40001,
40P01) are retried a bounded number of times with jitter. Failures that a later retry can cure
are raised as TemporarilyUnavailable (503 with Retry-After), never as a 500 (SPEC.md §8).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, NoReturn, Protocol, TypeVar

import aiosqlite
import asyncpg
import databases

from server.errors import TemporarilyUnavailable
from server.settings import Settings

Row = Mapping[str, Any]
# A query and its `:name` parameters.
Statement = tuple[str, Mapping[str, Any]]
T = TypeVar("T")
Isolation = Literal["read_committed", "serializable"]

MAX_TRANSACTION_ATTEMPTS = 8
SQLITE_CHECKPOINT_INTERVAL = 0.5
# The write-ahead log is started over once it holds this much (see `_Checkpointer`).
SQLITE_WAL_LIMIT_BYTES = 32 * 1024 * 1024
# A log file larger than this is cut back to it when the log starts over. Not to the limit above:
# under steady writes the file grows past that limit before a round starts it over, and cutting
# it back every time would make every writer pay for growing it again.
SQLITE_WAL_FILE_BYTES = 4 * SQLITE_WAL_LIMIT_BYTES
# How long a restart of the log may wait for the writer and the readers before it gives up until
# the next round; writers wait for it meanwhile.
SQLITE_WAL_RESTART_WAIT_MS = 50
# The longest wait between two tries for a lock another process holds (`_until_not_busy`).
SQLITE_BUSY_POLL_MAX = 0.001
POOL_PAGE_CACHE_KIB = 256

logger = logging.getLogger("splitlink.storage")

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
# Every exception `Database._raise_translated` may turn into one of the server's.
_TRANSLATED: tuple[type[BaseException], ...] = (
    sqlite3.OperationalError,
    *_PG_CONFLICTS,
    *_PG_UNAVAILABLE,
    AssertionError,
)


class TransactionConflict(TemporarilyUnavailable):
    """A serialization failure or deadlock: the transaction may simply be run again."""


class DatabaseObserver(Protocol):
    """Told of conflicts run again and of failures that may pass (server/metrics.py)."""

    def conflict_retried(self) -> None: ...

    def failed(self, kind: Literal["conflict", "unavailable"]) -> None: ...


class _Unobserved:
    def conflict_retried(self) -> None:
        return None

    def failed(self, kind: Literal["conflict", "unavailable"]) -> None:
        return None


class Connection:
    """One connection inside a transaction (or autocommit): the only way queries run.
    Queries use `:name` parameters on both backends."""

    async def fetch_one(self, query: str, values: Mapping[str, Any] | None = None) -> Row | None:
        raise NotImplementedError

    async def fetch_all(self, query: str, values: Mapping[str, Any] | None = None) -> list[Row]:
        raise NotImplementedError

    async def execute(self, query: str, values: Mapping[str, Any] | None = None) -> None:
        raise NotImplementedError

    async def run_together(
        self, writes: Sequence[Statement], read: Statement | None = None
    ) -> list[Row]:
        """`writes` in their order, then `read` (its rows are returned), in as few round trips
        as the backend allows: on PostgreSQL one statement, the writes as data-modifying WITH
        clauses. Every part of that statement sees the database as it was before it, so no
        part may depend on the effects of another (a foreign key to a row inserted by another
        part is checked at the end, and holds). If one part fails, none has an effect."""
        for query, values in writes:
            await self.execute(query, values)
        return [] if read is None else await self.fetch_all(*read)

    async def run_guarded(self, guard: Statement, writes: Sequence[Statement]) -> list[Row]:
        """`guard`, a statement that returns at most one row (a conditional `UPDATE … RETURNING`),
        then `writes` only if it returned one; the guard's rows are returned. On PostgreSQL one
        statement: each write, an `INSERT INTO t (…) VALUES (…)`, becomes an insert of its
        values for each row of the guard. As with `run_together`, no write may depend on the
        effects of another, and if one part fails, none has an effect."""
        rows = await self.fetch_all(*guard)
        if rows:
            for query, values in writes:
                await self.execute(query, values)
        return rows


def is_unique_violation(exc: BaseException, *, table: str) -> bool:
    """Whether `exc` is a driver's refusal of a row that duplicates a unique key of `table`."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return getattr(exc, "table_name", None) == table
    return isinstance(exc, sqlite3.IntegrityError) and str(exc).startswith(
        f"UNIQUE constraint failed: {table}."
    )


UNIQUE_VIOLATIONS: tuple[type[BaseException], ...] = (
    sqlite3.IntegrityError,
    asyncpg.UniqueViolationError,
)

# PostgreSQL's alone: a row inserted by a statement's own part can be missing there only when a
# concurrent transaction made that part do nothing (`ON CONFLICT DO NOTHING`). On SQLite a write
# transaction holds the write lock from its start, so what it has read stays true until it ends.
MISSING_REFERENCES: tuple[type[BaseException], ...] = (asyncpg.ForeignKeyViolationError,)


def is_missing_reference(exc: BaseException, *, constraint: str) -> bool:
    """Whether `exc` is PostgreSQL's refusal of a row whose foreign key `constraint` names no
    row."""
    return (
        isinstance(exc, asyncpg.ForeignKeyViolationError)
        and getattr(exc, "constraint_name", None) == constraint
    )


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
            f"PRAGMA journal_size_limit = {SQLITE_WAL_FILE_BYTES}",
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


def _open_with_wait(path: str, *, busy_timeout: float) -> sqlite3.Connection:
    """A connection that has read the schema, waiting for the database up to `busy_timeout`.
    After a crash, the first process to open the database rebuilds the log's index, holding it
    meanwhile; a worker starting alongside (the supervisor starts both at once) must wait for
    that instead of failing its startup, which makes uvicorn stop every worker."""
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA schema_version").fetchone()
    return conn


def _open_in_loop(path: str, *, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
    conn = _open_with_wait(path, busy_timeout=busy_timeout)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 0")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    # Checkpoints copy the log into the database file and fsync it: milliseconds that must not
    # stall the event loop. `_Checkpointer` runs them in a thread instead.
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    # The writer that starts the log over cuts the file back to this size.
    conn.execute(f"PRAGMA journal_size_limit = {SQLITE_WAL_FILE_BYTES}")
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


async def _in_thread_to_the_end(call: Callable[[], T]) -> T:
    """Run `call` in a thread and wait for it to finish even if the waiting task is cancelled
    meanwhile (the cancellation is passed on afterwards): a connection must never be used by
    the loop while a thread still uses it."""
    future = asyncio.get_running_loop().run_in_executor(None, call)
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            # Also when the thread finished just before: its outcome is dropped, and the
            # cancellation passed on. Dropping it instead would leave a task that was told to
            # stop running on (a checkpointer that never stopped hung the server's shutdown).
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return future.result()


class _WalSync:
    """Makes committed transactions durable after SQLite's write lock is released: one fsync of
    the write-ahead log, in a thread, covers every commit made before it started (group
    commit). The log is append-only, so a transaction that read another's writes commits after
    it in the log, and the fsync that makes it durable makes the other durable too: what a
    caller is told has committed survives a power failure, as with synchronous=FULL, while the
    next writer already runs (docs/design.md §5). The log's inode stays the same while this
    process keeps its connections open (SQLite deletes the file only when the last connection
    to the database closes), so one descriptor serves the process's lifetime.

    After a failed fsync the kernel may have dropped the pages it could not write, and a later
    fsync can succeed without them: the failure is permanent for this process, which refuses
    durable writes from then on (PostgreSQL stops for the same reason)."""

    def __init__(self, wal_path: str) -> None:
        self._wal_path = wal_path
        self._fd: int | None = None
        self._waiting: asyncio.Future[None] | None = None
        self._syncing: asyncio.Task[None] | None = None
        self.failed: OSError | None = None

    async def after_commit(self) -> None:
        """Return once an fsync that started after this call has finished."""
        loop = asyncio.get_running_loop()
        if self._waiting is None:
            self._waiting = loop.create_future()
            if self._syncing is None:
                self._syncing = loop.create_task(self._sync_while_waited_for())
        # A cancelled caller leaves the fsync running for the others.
        await asyncio.shield(self._waiting)

    async def _sync_while_waited_for(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting is not None:
                # Every caller in this group committed before the fsync below starts.
                group, self._waiting = self._waiting, None
                try:
                    if self.failed is not None:
                        raise self.failed
                    if self._fd is None:
                        self._fd = os.open(self._wal_path, os.O_RDONLY | os.O_CLOEXEC)
                    await loop.run_in_executor(None, os.fsync, self._fd)
                except OSError as exc:
                    if self.failed is None:
                        logger.critical("sqlite: fsync of the log failed, writes refused: %s", exc)
                    self.failed = exc
                    group.set_exception(TemporarilyUnavailable("the database cannot write"))
                    group.exception()  # retrieved here too: no warning if nobody waits
                else:
                    group.set_result(None)
        finally:
            self._syncing = None

    async def close(self) -> None:
        if self._syncing is not None:
            await asyncio.shield(self._syncing)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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
        self._wal_sync: _WalSync | None = _WalSync(path + "-wal")
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


class _Checkpointer:
    """Copies the write-ahead log into the database file from a thread, every `interval`
    seconds. The in-loop connections never checkpoint (an fsync of the database file would
    stall the loop), and without checkpoints the log grows without bound and every read slows
    down with it.

    A PASSIVE checkpoint never waits for readers or writers; several processes may run it. But
    it alone does not keep the log small: SQLite writes from the start of the log again only
    when a writer finds every page of it copied, and under steady writes new pages always
    arrive while the copy runs, so the log would grow for as long as the load lasts. So once the
    log holds SQLITE_WAL_LIMIT_BYTES, the round ends with a RESTART checkpoint: it copies the
    few pages that came in meanwhile while writers wait, so the next writer starts the log over
    and, if the file has grown past SQLITE_WAL_FILE_BYTES, cuts it back. It runs holding
    `writer`, so that this process's writers queue for it on the loop instead of polling for
    SQLite's lock, and it never waits for one of them."""

    def __init__(
        self, path: str, *, interval: float, writer: asyncio.Lock, busy_timeout: float
    ) -> None:
        self._path = path
        self._interval = interval
        self._writer = writer
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._restart_pages = 0

    def start(self) -> None:
        self._conn = _open_with_wait(self._path, busy_timeout=self._busy_timeout)
        # Only RESTART waits (a PASSIVE checkpoint never calls the busy handler).
        self._conn.execute(f"PRAGMA busy_timeout = {SQLITE_WAL_RESTART_WAIT_MS}")
        self._conn.execute("PRAGMA synchronous = FULL")
        (page_size,) = self._conn.execute("PRAGMA page_size").fetchone()
        self._restart_pages = SQLITE_WAL_LIMIT_BYTES // page_size
        self._task = asyncio.get_running_loop().create_task(self._run())

    def checkpoint(self, mode: Literal["PASSIVE", "RESTART"] = "PASSIVE") -> int:
        """The number of pages in the log. A RESTART that finds another process's writer or a
        reader still busy after SQLITE_WAL_RESTART_WAIT_MS gives up until the next round."""
        if self._conn is None:
            return 0
        (_, log_pages, _) = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return int(log_pages)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                # Waits for a checkpoint in progress even when stopped, so that `stop` never
                # closes the connection under the thread that is using it.
                if await _in_thread_to_the_end(self.checkpoint) >= self._restart_pages:
                    async with self._writer:
                        await _in_thread_to_the_end(lambda: self.checkpoint("RESTART"))
            except sqlite3.Error as exc:  # busy, or the disk: the next round tries again
                logger.debug("sqlite checkpoint skipped: %s", exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_NAMED_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


async def _keep_connection_state(connection: asyncpg.Connection) -> None:
    return None


class _PostgresStatements:
    """Single statements straight through an asyncpg pool, with asyncpg's prepared-statement
    cache: the per-request path skips the query compilation that `databases` does each time."""

    def __init__(self, url: str, *, pool_size: int) -> None:
        self._url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._translated: dict[str, tuple[str, tuple[str, ...]]] = {}

    async def connect(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._url,
            min_size=1,
            max_size=self._pool_size,
            command_timeout=10,
            server_settings={
                # Single statements are atomic at READ COMMITTED, whatever the server's default.
                "default_transaction_isolation": "read committed",
                # The rows these statements write are short-lived (replay entries, rate
                # counters, last use, failure counts, outbox leases): their commits do not wait
                # for the WAL flush, as on SQLite they commit with synchronous=NORMAL. A crash of
                # the database server can lose the last fraction of a second of them, never
                # leave them half-written (docs/design.md §7).
                "synchronous_commit": "off",
            },
            # These connections only ever run one autocommit statement at a time and never
            # change session state, so the reset asyncpg runs on every release (a round trip,
            # 15 % of a request's time under load) has nothing to undo.
            reset=_keep_connection_state,
        )

    def translate(self, query: str) -> tuple[str, tuple[str, ...]]:
        found = self._translated.get(query)
        if found is None:
            names: list[str] = []

            def number(match: re.Match[str]) -> str:
                if match.group(1) not in names:
                    names.append(match.group(1))
                return f"${names.index(match.group(1)) + 1}"

            found = (_NAMED_PARAMETER.sub(number, query), tuple(names))
            self._translated[query] = found
        return found

    async def run(self, query: str, values: Mapping[str, Any]) -> list[Row]:
        if self._pool is None:
            raise TemporarilyUnavailable("the database is not connected")
        sql, names = self.translate(query)
        records = await self._pool.fetch(sql, *(values[name] for name in names))
        return [dict(record) for record in records]

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


class _AsyncpgConnection(Connection):
    """Queries on the asyncpg connection under a `databases` connection or transaction: the
    query text is translated to positional parameters once and prepared by asyncpg, where
    `databases` would compile it through SQLAlchemy on every call."""

    def __init__(self, raw: asyncpg.Connection, statements: _PostgresStatements) -> None:
        self._raw = raw
        self._statements = statements

    def _args(self, query: str, values: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
        sql, names = self._statements.translate(query)
        given = values or {}
        return sql, [given[name] for name in names]

    async def fetch_one(self, query: str, values: Mapping[str, Any] | None = None) -> Row | None:
        sql, args = self._args(query, values)
        record = await self._raw.fetchrow(sql, *args)
        return None if record is None else dict(record)

    async def fetch_all(self, query: str, values: Mapping[str, Any] | None = None) -> list[Row]:
        sql, args = self._args(query, values)
        return [dict(record) for record in await self._raw.fetch(sql, *args)]

    async def execute(self, query: str, values: Mapping[str, Any] | None = None) -> None:
        sql, args = self._args(query, values)
        await self._raw.execute(sql, *args)

    async def run_together(
        self, writes: Sequence[Statement], read: Statement | None = None
    ) -> list[Row]:
        combined = _combined(writes, read)
        if combined is None:
            return await super().run_together(writes, read)
        sql, args = self._args(*combined)
        if read is None:
            await self._raw.execute(sql, *args)
            return []
        return [dict(record) for record in await self._raw.fetch(sql, *args)]

    async def run_guarded(self, guard: Statement, writes: Sequence[Statement]) -> list[Row]:
        sql, args = self._args(*_guarded(guard, writes))
        return [dict(record) for record in await self._raw.fetch(sql, *args)]


def _combined(writes: Sequence[Statement], read: Statement | None) -> Statement | None:
    """`writes` and `read` as one PostgreSQL statement; None when there is only one part."""
    parts = [*writes] if read is None else [*writes, read]
    if len(parts) < 2:
        return None
    return _together(tuple(text for text, _ in parts)), _numbered_values(parts)


def _numbered_values(parts: Sequence[Statement]) -> dict[str, Any]:
    """The values of parts put into one statement: each part's parameters get the prefix of its
    position (`_numbered_texts`), so that equal names in two parts never mix their values."""
    return {f"p{i}_{name}": v for i, (_, given) in enumerate(parts) for name, v in given.items()}


def prefixed_parameters(text: str, prefix: str) -> str:
    """`text` with each named parameter `:name` renamed `:<prefix>name`, for a statement put
    into another whose parameters could otherwise share its names."""
    return _NAMED_PARAMETER.sub(f":{prefix}\\1", text)


def _numbered_texts(parts: tuple[str, ...]) -> list[str]:
    """The texts of parts to be put into one statement, parameters renamed as
    `_numbered_values` names their values."""
    if any(text.lstrip()[:4].upper() == "WITH" for text in parts):
        # Data-modifying statements may stand only in the top-level WITH, and a part's own WITH
        # would need merging into it: neither is done here.
        raise ValueError("a statement with a WITH clause of its own cannot run together")
    return [prefixed_parameters(text, f"p{i}_") for i, text in enumerate(parts)]


@functools.lru_cache(maxsize=64)  # the statements are the server's constants
def _together(parts: tuple[str, ...]) -> str:
    """One PostgreSQL statement of several: all but the last part as WITH clauses."""
    prefixed = _numbered_texts(parts)
    clauses = ", ".join(f"part{i} AS ({text})" for i, text in enumerate(prefixed[:-1]))
    return f"WITH {clauses} {prefixed[-1]}"


def _guarded(guard: Statement, writes: Sequence[Statement]) -> Statement:
    """`Connection.run_guarded` as one PostgreSQL statement."""
    parts = [guard, *writes]
    return _guarded_text(tuple(text for text, _ in parts)), _numbered_values(parts)


_INSERT_VALUES = re.compile(r"\s*(INSERT INTO \w+ \([\w, ]+\)) VALUES \(", re.IGNORECASE)
_PARENTHESES_AND_LITERALS = re.compile(r"'(?:[^']|'')*'|[()]")


@functools.lru_cache(maxsize=64)  # the statements are the server's constants
def _guarded_text(parts: tuple[str, ...]) -> str:
    prefixed = _numbered_texts(parts)
    clauses = [f"guard AS ({prefixed[0]})"]
    for i, text in enumerate(prefixed[1:], start=1):
        head = _INSERT_VALUES.match(text)
        if head is None:
            raise ValueError("a guarded write must be INSERT INTO t (...) VALUES (...)")
        # The values end at the parenthesis that closes the one VALUES opened; parentheses
        # inside string literals do not count.
        depth = 1
        for token in _PARENTHESES_AND_LITERALS.finditer(text, head.end()):
            depth += {"(": 1, ")": -1}.get(token.group(), 0)
            if depth == 0:
                break
        else:
            raise ValueError("a guarded write's VALUES list is not closed")
        values, rest = text[head.end() : token.start()], text[token.end() :]
        # Only the server's own statement texts are put together; every value stays a parameter.
        select = f"SELECT {values} FROM guard"  # noqa: S608
        clauses.append(f"part{i} AS ({head.group(1)} {select}{rest})")
    return f"WITH {', '.join(clauses)} SELECT * FROM guard"  # noqa: S608


class Database:
    def __init__(
        self,
        url: str,
        *,
        sqlite_busy_timeout: float = 5.0,
        isolation: Isolation = "read_committed",
        pool_size: int = 10,
        observer: DatabaseObserver | None = None,
    ) -> None:
        self.url = url
        self._observer: DatabaseObserver = observer or _Unobserved()
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        self.isolation = isolation
        self._sqlite: _SqlitePool | None = None
        self._statements: _SqliteStatements | _PostgresStatements | None = None
        self._sqlite_transactions: _SqliteTransactions | None = None
        self._checkpointer: _Checkpointer | None = None
        self._busy_timeout = sqlite_busy_timeout
        if self.dialect == "sqlite":
            self.sqlite_path = databases.DatabaseURL(url).database
            if self.sqlite_path and self.sqlite_path != ":memory:":
                Path(self.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
            self._sqlite = _SqlitePool(
                self.sqlite_path, size=pool_size, busy_timeout=sqlite_busy_timeout
            )
        else:
            self._db = databases.Database(
                url,
                min_size=1,
                max_size=pool_size,
                command_timeout=10,
                # On release asyncpg still rolls back a transaction left open; what it skips is
                # its reset query (advisory locks, cursors, LISTEN, session settings), none of
                # which this server uses, and it would be one more round trip a transaction.
                reset=_keep_connection_state,
            )
            self._pg_statements = _PostgresStatements(url, pool_size=pool_size)

    async def connect(self) -> None:
        if self._sqlite is not None:
            async with self._translate_errors():
                # SQLite has one writer at a time. Within this process the in-loop connections
                # queue for it here, so a writer waits exactly until the one before it is done
                # instead of polling with growing sleeps; only writers of other processes are
                # polled for (`_until_not_busy`).
                writer = asyncio.Lock()
                self._statements = _SqliteStatements(
                    self.sqlite_path, busy_timeout=self._busy_timeout, writer=writer
                )
                self._sqlite_transactions = _SqliteTransactions(
                    self.sqlite_path, busy_timeout=self._busy_timeout, writer=writer
                )
                self._checkpointer = _Checkpointer(
                    self.sqlite_path,
                    interval=SQLITE_CHECKPOINT_INTERVAL,
                    writer=writer,
                    busy_timeout=self._busy_timeout,
                )
                self._checkpointer.start()
            return
        async with self._translate_errors():
            await self._db.connect()
            await self._pg_statements.connect()
            self._statements = self._pg_statements

    async def disconnect(self) -> None:
        if self._sqlite is not None:
            if self._checkpointer is not None:
                await self._checkpointer.stop()
            await self._sqlite.close()
            if self._statements is not None:
                await self._statements.close()
            if self._sqlite_transactions is not None:
                await self._sqlite_transactions.close()
        else:
            await self._db.disconnect()
            await self._pg_statements.close()

    @asynccontextmanager
    async def _translate_errors(self) -> AsyncIterator[None]:
        try:
            yield
        except _TRANSLATED as exc:
            self._raise_translated(exc)

    def _raise_translated(self, exc: BaseException) -> NoReturn:
        """Raise the server's error for a driver's exception, or `exc` itself if it has none."""
        if isinstance(exc, AssertionError) and "already acquired" not in str(exc):
            raise exc
        if isinstance(exc, _PG_CONFLICTS):
            self._observer.failed("conflict")
            raise TransactionConflict() from exc
        self._observer.failed("unavailable")
        if isinstance(exc, sqlite3.OperationalError):
            # "database is locked", "disk I/O error", "database or disk is full"
            raise TemporarilyUnavailable() from exc
        # `databases` keeps one connection object per task and, when a release fails on a
        # connection the server terminated, leaves it marked acquired: every later use in that
        # task asserts ("already acquired"). Forget it, so the next use opens a fresh one.
        self._forget_task_connection()
        raise TemporarilyUnavailable() from exc

    def _forget_task_connection(self) -> None:
        if self._sqlite is None:
            self._db._connection = None

    @asynccontextmanager
    async def transaction(self, *, durable: bool = True) -> AsyncIterator[Connection]:
        """A read-write transaction that commits when the block ends normally. Prefer `run`,
        which also retries conflicts. `durable=False` is for records whose loss in a power
        failure only means work is done again (outbox delivery records): on SQLite they commit
        without an fsync of their own, on PostgreSQL without waiting for the WAL flush."""
        if self._sqlite is not None:
            transactions = self._sqlite_transactions
            if transactions is None:
                raise TemporarilyUnavailable("the database is not connected")
            async with self._translate_errors(), transactions.transaction(durable=durable) as conn:
                yield conn
            return
        async with self._translate_errors(), self._db.connection() as raw:
            isolation = "serializable" if self.isolation == "serializable" else None
            async with raw.transaction(isolation=isolation):
                if not durable:
                    # For this transaction only: its loss only repeats work (docs/design.md §7).
                    await raw.raw_connection.execute("SET LOCAL synchronous_commit = off")
                yield _AsyncpgConnection(raw.raw_connection, self._pg_statements)

    async def run(self, work: Callable[[Connection], Awaitable[T]], *, durable: bool = True) -> T:
        """Run `work` in a transaction; run it again on a serialization conflict, up to
        MAX_TRANSACTION_ATTEMPTS times. `work` must have no effect outside the database."""

        async def in_transaction() -> T:
            async with self.transaction(durable=durable) as conn:
                return await work(conn)

        return await _again_after_conflicts(in_transaction, self._observer)

    async def run_together(
        self,
        writes: Sequence[Statement],
        read: Statement | None = None,
        *,
        durable: bool = True,
    ) -> list[Row]:
        """`Connection.run_together` as one atomic unit of its own, without a transaction around
        it where the backend allows: on PostgreSQL one statement, with no BEGIN and no COMMIT to
        send (on the single-statement pool when not `durable`); on SQLite a write transaction."""
        if self._sqlite is not None:
            return await self.run(lambda conn: conn.run_together(writes, read), durable=durable)
        one = _combined(writes, read) or (read if read is not None else writes[-1])
        if not durable:
            return await self.statement(*one)
        async with self.autocommit() as conn:
            return await conn.fetch_all(*one)

    async def run_guarded(self, guard: Statement, writes: Sequence[Statement]) -> list[Row]:
        """`Connection.run_guarded` as one atomic unit of its own, durably: on PostgreSQL one
        statement, with no BEGIN and no COMMIT to send; on SQLite a write transaction."""
        if self._sqlite is not None:
            return await self.run(lambda conn: conn.run_guarded(guard, writes))

        async def in_one_statement() -> list[Row]:
            async with self.autocommit() as conn:
                return await conn.run_guarded(guard, writes)

        # A statement that failed on a conflict had no effect: it runs again, as `run` does.
        return await _again_after_conflicts(in_one_statement, self._observer)

    async def statement(self, query: str, values: Mapping[str, Any] | None = None) -> list[Row]:
        """One statement, atomic by itself, on the fastest path the backend has."""
        # A plain try instead of `_translate_errors`: the per-request path runs two or three
        # statements, and a context manager around each is a cost on every request.
        try:
            if self._statements is not None:
                return await self._statements.run(query, values or {})
            async with self.autocommit() as conn:
                return await conn.fetch_all(query, values)
        except _TRANSLATED as exc:
            self._raise_translated(exc)

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Connection]:
        """Single statements that are atomic by themselves (reads, upserts, conditional updates)."""
        if self._sqlite is not None:
            async with self._translate_errors(), self._sqlite.connection() as raw:
                yield _SqliteConnection(raw)
            return
        async with self._translate_errors(), self._db.connection() as raw:
            yield _AsyncpgConnection(raw.raw_connection, self._pg_statements)


async def _again_after_conflicts(
    attempt: Callable[[], Awaitable[T]], observer: DatabaseObserver
) -> T:
    """`attempt`, again after a serialization conflict, up to MAX_TRANSACTION_ATTEMPTS times."""
    for tries in range(1, MAX_TRANSACTION_ATTEMPTS + 1):
        try:
            return await attempt()
        except TransactionConflict:
            if tries == MAX_TRANSACTION_ATTEMPTS:
                raise
            observer.conflict_retried()
            # Full jitter, growing to about 0.6 s: contenders spread out instead of colliding.
            await asyncio.sleep(random.uniform(0, 0.005 * 2**tries))  # noqa: S311
    raise AssertionError("unreachable")  # pragma: no cover


def database_for(settings: Settings, *, observer: DatabaseObserver | None = None) -> Database:
    """The database the settings name, with their pool, isolation and busy timeout."""
    return Database(
        settings.database_url,
        sqlite_busy_timeout=settings.sqlite_busy_timeout,
        isolation=settings.database_isolation,
        pool_size=settings.database_pool_size,
        observer=observer,
    )
