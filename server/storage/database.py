"""The database: one facade over SQLite (embedded, server/storage/sqlite.py) or PostgreSQL
(server/storage/postgres.py), chosen once from the URL.

Failures that a later retry can cure are raised as TemporarilyUnavailable (503 with Retry-After),
never as a 500 (SPEC.md §8); serialization failures and deadlocks as TransactionConflict, which
`run` runs again (server/storage/transactions.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, NoReturn, Protocol

from server.errors import TemporarilyUnavailable
from server.settings import Settings
from server.storage.postgres import PostgresBackend, prefixed_parameters
from server.storage.sqlite import SqliteBackend
from server.storage.transactions import (
    MAX_TRANSACTION_ATTEMPTS,
    MISSING_REFERENCES,
    UNIQUE_VIOLATIONS,
    Connection,
    DatabaseObserver,
    Failure,
    Isolation,
    Row,
    Statement,
    T,
    TransactionAttempt,
    TransactionConflict,
    Unobserved,
    again_after_conflicts,
    is_missing_reference,
    is_unique_violation,
    transaction_attempts,
)

__all__ = [
    "MAX_TRANSACTION_ATTEMPTS",
    "MISSING_REFERENCES",
    "UNIQUE_VIOLATIONS",
    "Backend",
    "Connection",
    "Database",
    "DatabaseObserver",
    "Isolation",
    "Row",
    "Statement",
    "TransactionAttempt",
    "TransactionConflict",
    "database_for",
    "is_missing_reference",
    "is_unique_violation",
    "prefixed_parameters",
]


class Backend(Protocol):
    """What `Database` asks of a backend. Its operations raise the drivers' own exceptions;
    `Database` translates those of `failures`, as `failure` classifies them."""

    failures: tuple[type[BaseException], ...]

    def failure(self, exc: BaseException) -> Failure | None:
        """What `exc`, one of `failures`, means; None if it is not the database's failure."""
        ...

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    def transaction(self, *, durable: bool) -> AbstractAsyncContextManager[Connection]: ...

    def autocommit(self) -> AbstractAsyncContextManager[Connection]: ...

    def statement(self, query: str, values: Mapping[str, Any]) -> Awaitable[list[Row]]: ...

    async def run_together(
        self, writes: Sequence[Statement], read: Statement | None, *, durable: bool
    ) -> list[Row]: ...

    async def run_guarded(self, guard: Statement, writes: Sequence[Statement]) -> list[Row]: ...


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
        self._observer: DatabaseObserver = observer or Unobserved()
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        self.isolation = isolation
        self._backend: Backend
        if self.dialect == "sqlite":
            sqlite = SqliteBackend(url, pool_size=pool_size, busy_timeout=sqlite_busy_timeout)
            self.sqlite_path = sqlite.path
            self._backend = sqlite
        else:
            self._backend = PostgresBackend(url, isolation=isolation, pool_size=pool_size)

    async def connect(self) -> None:
        try:
            await self._backend.connect()
        except self._backend.failures as exc:
            self._raise_translated(exc)

    async def disconnect(self) -> None:
        await self._backend.disconnect()

    def _raise_translated(self, exc: BaseException) -> NoReturn:
        """Raise the server's error for a driver's exception, or `exc` itself if it has none."""
        failure = self._backend.failure(exc)
        if failure is None:
            raise exc
        self._observer.failed(failure)
        if failure == "conflict":
            raise TransactionConflict() from exc
        raise TemporarilyUnavailable() from exc

    @asynccontextmanager
    async def transaction(self, *, durable: bool = True) -> AsyncIterator[Connection]:
        """A read-write transaction that commits when the block ends normally. Prefer `run`,
        which also retries conflicts. `durable=False` is for records whose loss in a power
        failure only means work is done again (outbox delivery records): on SQLite they commit
        without an fsync of their own, on PostgreSQL without waiting for the WAL flush."""
        try:
            async with self._backend.transaction(durable=durable) as conn:
                yield conn
        except self._backend.failures as exc:
            self._raise_translated(exc)

    async def run(self, work: Callable[[Connection], Awaitable[T]], *, durable: bool = True) -> T:
        """Run `work` in a transaction; run it again on a serialization conflict, up to
        MAX_TRANSACTION_ATTEMPTS times. `work` must have no effect outside the database."""

        async def in_transaction() -> T:
            async with self.transaction(durable=durable) as conn:
                return await work(conn)

        return await again_after_conflicts(in_transaction, self._observer)

    def attempts(self, *, durable: bool = True) -> AsyncIterator[TransactionAttempt]:
        """Transactions for work a caller drives step by step: after a serialization conflict
        the next attempt, as `run` does (`transaction_attempts`)."""
        return transaction_attempts(lambda: self.transaction(durable=durable), self._observer)

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
        try:
            return await self._backend.run_together(writes, read, durable=durable)
        except self._backend.failures as exc:
            self._raise_translated(exc)

    async def run_guarded(self, guard: Statement, writes: Sequence[Statement]) -> list[Row]:
        """`Connection.run_guarded` as one atomic unit of its own, durably: on PostgreSQL one
        statement, with no BEGIN and no COMMIT to send; on SQLite a write transaction."""

        async def attempt() -> list[Row]:
            try:
                return await self._backend.run_guarded(guard, writes)
            except self._backend.failures as exc:
                self._raise_translated(exc)

        # A statement that failed on a conflict had no effect: it runs again, as `run` does.
        return await again_after_conflicts(attempt, self._observer)

    async def statement(self, query: str, values: Mapping[str, Any] | None = None) -> list[Row]:
        """One statement, atomic by itself, on the fastest path the backend has."""
        # A plain try instead of a context manager: the per-request path runs two or three
        # statements, and a context manager around each is a cost on every request.
        try:
            return await self._backend.statement(query, values or {})
        except self._backend.failures as exc:
            self._raise_translated(exc)

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Connection]:
        """Single statements that are atomic by themselves (reads, upserts, conditional updates)."""
        try:
            async with self._backend.autocommit() as conn:
                yield conn
        except self._backend.failures as exc:
            self._raise_translated(exc)


def database_for(settings: Settings, *, observer: DatabaseObserver | None = None) -> Database:
    """The database the settings name, with their pool, isolation and busy timeout."""
    return Database(
        settings.database_url,
        sqlite_busy_timeout=settings.sqlite_busy_timeout,
        isolation=settings.database_isolation,
        pool_size=settings.database_pool_size,
        observer=observer,
    )
