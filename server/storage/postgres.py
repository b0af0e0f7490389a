"""PostgreSQL, the backend of `Database` for any other URL.

`databases` (asyncpg underneath) holds the connections and transactions of
`Database.transaction` and `Database.autocommit`. Two paths bypass parts of it. The single
statements of the per-request path run on an asyncpg pool of their own: through `databases`
each would take a new connection context, and its commit could skip the WAL flush only in a
transaction with `SET LOCAL`, a round trip or more per request. And the queries under a
`databases` connection run on its asyncpg connection itself, translated once to positional
parameters and prepared by asyncpg, where `databases` would compile them through SQLAlchemy on
every call. Writes run together, or behind a guard, are built into one statement here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import databases

from server.errors import TemporarilyUnavailable
from server.storage.transactions import (
    OS_FAILURES,
    Connection,
    Failure,
    Isolation,
    Row,
    Statement,
)

_CONFLICTS: tuple[type[BaseException], ...] = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.InterfaceError,
    # Raised when a pooled connection that the server terminated is reset on release.
    asyncpg.InternalClientError,
    *OS_FAILURES,
)

_NAMED_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


async def _keep_connection_state(connection: asyncpg.Connection) -> None:
    return None


class _PostgresStatements:
    """Single statements straight through an asyncpg pool of their own, with asyncpg's
    prepared-statement cache."""

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
    """Queries on the asyncpg connection under a `databases` connection or transaction, their
    text translated to positional parameters once and prepared by asyncpg."""

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


class PostgresBackend:
    """A worker's two pools: `databases` for transactions and autocommit connections, and the
    asyncpg pool of single statements."""

    failures: tuple[type[BaseException], ...] = (*_CONFLICTS, *_UNAVAILABLE, AssertionError)

    def __init__(self, url: str, *, isolation: Isolation, pool_size: int) -> None:
        self._isolation = "serializable" if isolation == "serializable" else None
        self._db = databases.Database(
            url,
            min_size=1,
            max_size=pool_size,
            command_timeout=10,
            # On release asyncpg still rolls back a transaction left open; what it skips is its
            # reset query (advisory locks, cursors, LISTEN, session settings), none of which
            # this server uses, and it would be one more round trip a transaction.
            reset=_keep_connection_state,
        )
        self._statement_pool = _PostgresStatements(url, pool_size=pool_size)
        # The single-statement pool, once both pools are open.
        self._statements: _PostgresStatements | None = None

    def failure(self, exc: BaseException) -> Failure | None:
        if isinstance(exc, AssertionError) and "already acquired" not in str(exc):
            return None
        if isinstance(exc, _CONFLICTS):
            return "conflict"
        # `databases` keeps one connection object per task and, when a release fails on a
        # connection the server terminated, leaves it marked acquired: every later use in that
        # task asserts ("already acquired"). Forget it, so the next use opens a fresh one.
        self._db._connection = None
        return "unavailable"

    async def connect(self) -> None:
        await self._db.connect()
        await self._statement_pool.connect()
        self._statements = self._statement_pool

    async def disconnect(self) -> None:
        await self._db.disconnect()
        await self._statement_pool.close()

    @asynccontextmanager
    async def transaction(self, *, durable: bool) -> AsyncIterator[Connection]:
        async with self._db.connection() as raw, raw.transaction(isolation=self._isolation):
            if not durable:
                # For this transaction only: its loss only repeats work (docs/design.md §7).
                await raw.raw_connection.execute("SET LOCAL synchronous_commit = off")
            yield _AsyncpgConnection(raw.raw_connection, self._statement_pool)

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Connection]:
        async with self._db.connection() as raw:
            yield _AsyncpgConnection(raw.raw_connection, self._statement_pool)

    def statement(self, query: str, values: Mapping[str, Any]) -> Awaitable[list[Row]]:
        # The statement itself, not awaited here: no coroutine of its own on the per-request path.
        if self._statements is None:
            return self._through_databases(query, values)
        return self._statements.run(query, values)

    async def _through_databases(self, query: str, values: Mapping[str, Any]) -> list[Row]:
        async with self.autocommit() as conn:
            return await conn.fetch_all(query, values)

    async def run_together(
        self, writes: Sequence[Statement], read: Statement | None, *, durable: bool
    ) -> list[Row]:
        # One statement, with no BEGIN and no COMMIT to send; on the single-statement pool when
        # not durable.
        one = _combined(writes, read) or (read if read is not None else writes[-1])
        if not durable:
            return await self.statement(*one)
        async with self.autocommit() as conn:
            return await conn.fetch_all(*one)

    async def run_guarded(self, guard: Statement, writes: Sequence[Statement]) -> list[Row]:
        async with self.autocommit() as conn:
            return await conn.run_guarded(guard, writes)
