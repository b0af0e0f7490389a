"""What both backends share: rows and statements, the `Connection` that runs them, conflicts
and the loop that runs a transaction again after one, and the drivers' refusals that stores
recognise.

PostgreSQL transactions run at the configured isolation level; serialization failures and
deadlocks (40001, 40P01) are retried a bounded number of times with jitter. SQLite write
transactions hold the write lock from their start, so they never conflict.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

import asyncpg

from server.errors import TemporarilyUnavailable

Row = Mapping[str, Any]
# A query and its `:name` parameters.
Statement = tuple[str, Mapping[str, Any]]
T = TypeVar("T")
Isolation = Literal["read_committed", "serializable"]
# What a driver's failure means: a conflict worth running again, or a database unavailable now.
Failure = Literal["conflict", "unavailable"]

MAX_TRANSACTION_ATTEMPTS = 8

# The operating system's failures under either driver (a connection lost, a timeout): a later
# try may not meet them.
OS_FAILURES: tuple[type[BaseException], ...] = (ConnectionError, OSError, asyncio.TimeoutError)


class TransactionConflict(TemporarilyUnavailable):
    """A serialization failure or deadlock: the transaction may simply be run again."""


class DatabaseObserver(Protocol):
    """Told of conflicts run again and of failures that may pass (server/metrics.py)."""

    def conflict_retried(self) -> None: ...

    def failed(self, kind: Failure) -> None: ...


class Unobserved:
    def conflict_retried(self) -> None:
        return None

    def failed(self, kind: Failure) -> None:
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


async def again_after_conflicts(
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
            await _after_conflict(tries)
    raise AssertionError("unreachable")  # pragma: no cover


async def _after_conflict(tries: int) -> None:
    # Full jitter, growing to about 0.6 s: contenders spread out instead of colliding.
    await asyncio.sleep(random.uniform(0, 0.005 * 2**tries))  # noqa: S311


class TransactionAttempt:
    """One transaction of `transaction_attempts`: `async with` gives its connection and commits
    when the block ends. A conflict, on a statement or at the commit, rolls it back and is
    swallowed, so that the iterator opens the next attempt; at the last attempt it is raised."""

    def __init__(
        self, begin: Callable[[], AbstractAsyncContextManager[Connection]], *, last: bool
    ) -> None:
        self._transaction = begin()
        self._last = last
        self.conflicted = False

    async def __aenter__(self) -> Connection:
        return await self._transaction.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        try:
            suppressed = bool(await self._transaction.__aexit__(exc_type, exc, traceback))
        except TransactionConflict:
            if self._last:
                raise
            self.conflicted = True
            return True
        if isinstance(exc, TransactionConflict) and not suppressed and not self._last:
            self.conflicted = True
            return True
        return suppressed


async def transaction_attempts(
    begin: Callable[[], AbstractAsyncContextManager[Connection]], observer: DatabaseObserver
) -> AsyncIterator[TransactionAttempt]:
    """What `again_after_conflicts` does, for work that a flow drives step by step rather than
    hands down as a function:

        async for attempt in db.attempts():
            async with attempt as conn:
                ...  # the steps; nothing after the block may depend on them

    The iterator stops after the first attempt that ends without a conflict."""
    for tries in range(1, MAX_TRANSACTION_ATTEMPTS + 1):
        attempt = TransactionAttempt(begin, last=tries == MAX_TRANSACTION_ATTEMPTS)
        yield attempt
        if not attempt.conflicted:
            return
        observer.conflict_retried()
        await _after_conflict(tries)


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
