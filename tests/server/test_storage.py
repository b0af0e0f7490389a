"""Storage guarantees on both backends: schema versions, housekeeping, indexes behind every hot
query (docs/design.md §4, §6)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support.backends import database_url_for, empty_database_url_for, execute, query
from support.harness import Harness

from server.errors import TemporarilyUnavailable
from server.storage.database import (
    UNIQUE_VIOLATIONS,
    Database,
    TransactionConflict,
    is_unique_violation,
)
from server.storage.housekeeping import (
    PURGE_ATTEMPTS,
    PURGE_MAIL,
    PURGE_RATE_LIMITS,
    PURGE_REPLAY,
    PURGE_TRIES,
    purge_expired,
)
from server.storage.migrate import SchemaBehind, head_revision, migrate, require_current_schema

pytestmark = pytest.mark.anyio

# Every statement the request path runs often, with representative parameters.
HOT_QUERIES = {
    "user by address": (
        "SELECT email_address FROM users WHERE email_canonical = 'a@x.io'",
        "users",
    ),
    "attempt by id": ("SELECT dpop_jkt FROM login_attempts WHERE id = 'x'", "login_attempts"),
    "session by id": ("SELECT user_id FROM sessions WHERE id = 'x'", "sessions"),
    "sessions of a user": ("SELECT id FROM sessions WHERE user_id = 'x'", "sessions"),
    "refresh token": ("SELECT session_id FROM refresh_tokens WHERE token_hash = 'x'", None),
    "refresh family": ("SELECT token_hash FROM refresh_tokens WHERE session_id = 'x'", None),
    "replay entry": ("SELECT 1 FROM dpop_replay WHERE replay_key = 'x'", "dpop_replay"),
    "rate bucket": ("SELECT hits FROM rate_limits WHERE bucket = 'x' AND window_start = 1", None),
    "outbox due": ("SELECT id FROM outbox WHERE status = 'queued' AND not_before <= 5", "outbox"),
    "outbox by attempt": ("SELECT id FROM outbox WHERE attempt_id = 'x'", "outbox"),
    "expired replay": ("SELECT replay_key FROM dpop_replay WHERE expires_at < 5", "dpop_replay"),
}


def _plan(
    server: Harness, sql: str, values: dict[str, int], *, priced_out: tuple[str, ...] = ()
) -> str:
    """The plan of `sql` with `values` written in. On PostgreSQL with sequential scans, and the
    `priced_out` methods, made too dear to choose: a plan without an index then means that none
    is usable."""
    for name, value in values.items():
        sql = sql.replace(f":{name}", str(value))
    if server.backend == "sqlite":
        rows = query(server.database_url, "EXPLAIN QUERY PLAN " + sql)
        return " | ".join(str(row[-1]) for row in rows)
    with psycopg.connect(server.database_url) as conn:
        for method in ("seqscan", *priced_out):
            conn.execute(f"SET enable_{method} = off")
        return " ".join(row[0] for row in conn.execute("EXPLAIN " + sql).fetchall())


@pytest.mark.parametrize("name", sorted(HOT_QUERIES))
async def test_every_hot_query_is_backed_by_an_index(server: Harness, name: str) -> None:
    sql, _ = HOT_QUERIES[name]
    plan = _plan(server, sql, {})
    if server.backend == "sqlite":
        assert ("USING" in plan and "INDEX" in plan) or "PRIMARY KEY" in plan, plan
        assert "SCAN" not in plan, plan
    else:
        assert "Seq Scan" not in plan, plan


# Each purge, the table it deletes from, and the index that must lead it to its rows: one that
# holds only rows the purge may delete, or expire (docs/design.md §6, revision 0005).
PURGES = {
    "replay entries": (PURGE_REPLAY, "dpop_replay", "dpop_replay_expires_at"),
    "rate-limit windows": (PURGE_RATE_LIMITS, "rate_limits", "rate_limits_expires_at"),
    "tries of finished mail": (PURGE_TRIES, "outbox_tries", "outbox_finished_created_at"),
    "finished mail": (PURGE_MAIL, "outbox", "outbox_finished_created_at"),
    "abandoned attempts": (PURGE_ATTEMPTS, "login_attempts", "login_attempts_unconsumed_expiry"),
}


@pytest.mark.parametrize("name", sorted(PURGES))
async def test_each_purge_reaches_its_rows_without_walking_the_rows_it_keeps(
    server: Harness, name: str
) -> None:
    # Consumed attempts are kept for good: a purge that walked them cost a pause of every
    # SQLite writer growing with every login ever made (README, "Growth").
    sql, table, index = PURGES[name]
    # Priced out as well: reading a whole index to join it.
    plan = _plan(server, sql, {"now": 5, "cutoff": 5}, priced_out=("hashjoin", "mergejoin"))
    if server.backend == "sqlite":
        assert f"INDEX {index}" in plan, plan
        assert f"SCAN {table} " not in f"{plan} ", plan
    else:
        assert index in plan, plan
        assert f"Seq Scan on {table} " not in f"{plan} ", plan
        assert "Index Cond" in plan.split(f" on {table} ", 1)[-1], plan


async def test_the_outbox_claim_walks_an_index_in_its_order_without_sorting(
    server: Harness,
) -> None:
    # docs/design.md §12.2 and revision 0004: during a burst hundreds of rows are due in one
    # second; a claim that sorted them all on every call cost more than the rest of a delivery.
    from server.storage.outbox import _CLAIM

    plan = _plan(
        server, _CLAIM[server.backend], {"now": 5, "lease": 65, "max_failed": 5, "limit": 4}
    )
    if server.backend == "sqlite":
        assert "USING INDEX outbox_claim_order" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    else:
        assert "outbox_claim_order" in plan, plan
        assert "Sort" not in plan, plan


async def test_server_refuses_a_schema_that_is_behind(tmp_path: Path, backend: str) -> None:
    with database_url_for(backend, tmp_path) as url:
        if backend == "postgresql":
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("DELETE FROM alembic_version")
        db = Database(url if backend == "postgresql" else f"sqlite:///{tmp_path / 'empty.db'}")
        await db.connect()
        try:
            with pytest.raises(SchemaBehind, match="run `splitlink migrate`"):
                await require_current_schema(db)
        finally:
            await db.disconnect()
    assert head_revision()


async def test_housekeeping_purges_only_what_can_no_longer_matter(server: Harness) -> None:
    device = server.device()
    await server.login(device, "kept@example.com")
    await server.start(device, "abandoned@example.com")
    await server.deliver()
    server.clock.advance(2 * 24 * 3600)
    db = server.app.state.services.db
    await purge_expired(db, now=server.clock.now())
    await purge_expired(db, now=server.clock.now())  # idempotent: a second worker may run it
    assert server.query("SELECT COUNT(*) FROM dpop_replay") == [(0,)]
    assert server.query("SELECT COUNT(*) FROM rate_limits") == [(0,)]
    assert server.query("SELECT COUNT(*) FROM outbox") == [(0,)]
    # The consumed attempt stays with its session; the abandoned one is gone.
    assert server.query("SELECT COUNT(*) FROM login_attempts") == [(1,)]
    assert server.query("SELECT COUNT(*) FROM sessions") == [(1,)]


async def test_upgrading_the_replay_table_keeps_every_live_entry(
    tmp_path: Path, backend: str
) -> None:
    # A proof used just before the upgrade must stay used after it (docs/design.md §4, revision
    # 0003).
    used = hashlib.sha256(b"jkt\njti").hexdigest()
    with empty_database_url_for(backend, tmp_path) as url:
        migrate(url, revision="0002")
        execute(url, "INSERT INTO dpop_replay (replay_key, expires_at) VALUES (?, ?)", used, 99)
        migrate(url)
        rows = query(url, "SELECT replay_key, expires_at FROM dpop_replay")
        assert [(bytes(key), expires_at) for key, expires_at in rows] == [
            (bytes.fromhex(used)[:16], 99)
        ]
        db = Database(url)
        await db.connect()
        try:
            await require_current_schema(db)
        finally:
            await db.disconnect()


async def test_upgrading_to_0005_deletes_the_tries_whose_mail_is_gone_and_keeps_the_rest(
    tmp_path: Path, backend: str
) -> None:
    # Revision 0005: tries now go with their outbox row (docs/design.md §6); those left behind by
    # the rows housekeeping deleted before it go once, at the upgrade.
    with empty_database_url_for(backend, tmp_path) as url:
        migrate(url, revision="0004")
        execute(
            url,
            "INSERT INTO outbox (id, kind, recipient, message_id, status, not_before, "
            "created_at) VALUES ('kept', 'login_link', 'a@example.com', '<m@x>', 'sent', 1, 1)",
        )
        for outbox_id in ("kept", "gone"):
            execute(
                url,
                "INSERT INTO outbox_tries (outbox_id, try_number, tried_at, outcome) "
                "VALUES (?, 1, 1, 'sent')",
                outbox_id,
            )
        migrate(url)
        assert query(url, "SELECT outbox_id FROM outbox_tries") == [("kept",)]


async def test_postgres_single_statements_do_not_wait_for_the_wal_flush_but_transactions_do(
    tmp_path: Path,
) -> None:
    # SPEC.md §2.3 and docs/design.md §7: short-lived rows commit asynchronously, transactions
    # durably, and a non-durable transaction (`durable=False`) asynchronously for itself only.
    setting = "SELECT current_setting('synchronous_commit') AS value"
    with database_url_for("postgresql", tmp_path) as url:
        db = Database(url, pool_size=1)  # one connection: the same one every time below
        await db.connect()
        try:
            rows = await db.statement(setting)
            assert rows[0]["value"] == "off"
            seen = []
            for durable in (True, False, True):
                async with db.transaction(durable=durable) as conn:
                    row = await conn.fetch_one(setting)
                assert row is not None
                seen.append(row["value"])
            assert seen == ["on", "off", "on"]
        finally:
            await db.disconnect()


async def test_postgres_a_transaction_left_open_is_rolled_back_before_its_connection_is_reused(
    tmp_path: Path,
) -> None:
    # The pool skips asyncpg's reset query (docs/design.md §7), but never the rollback of a
    # transaction that a cancelled request left open.
    import asyncio

    with database_url_for("postgresql", tmp_path) as url:
        db = Database(url, pool_size=1)
        await db.connect()
        inside = asyncio.Event()
        try:

            async def abandoned() -> None:
                async with db.transaction() as conn:
                    await conn.execute(
                        "INSERT INTO rate_limits (bucket, window_start, hits, expires_at) "
                        "VALUES ('left open', 0, 1, 0)"
                    )
                    inside.set()
                    await asyncio.sleep(30)

            task = asyncio.create_task(abandoned())
            await inside.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with db.transaction() as conn:
                row = await conn.fetch_one("SELECT count(*) AS n FROM rate_limits")
            assert row is not None and row["n"] == 0
        finally:
            await db.disconnect()
        assert query(url, "SELECT count(*) FROM rate_limits") == [(0,)]


async def test_a_cancelled_wait_for_a_checkpoint_returns_only_once_its_thread_is_done() -> None:
    # The checkpointer's connection is never closed while the checkpoint's thread uses it.
    from server.storage.database import _in_thread_to_the_end

    finished = threading.Event()

    def slow_checkpoint() -> str:
        time.sleep(0.2)
        finished.set()
        return "checkpointed"

    task = asyncio.create_task(_in_thread_to_the_end(slow_checkpoint))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()


async def test_a_wait_cancelled_as_its_thread_finishes_is_still_cancelled() -> None:
    # A checkpointer told to stop just as a checkpoint's thread returned went on checkpointing,
    # and the server's shutdown waited for it forever (seen once in a full test run).
    from server.storage.database import _in_thread_to_the_end

    release = threading.Event()
    returned = threading.Event()

    def checkpoint() -> str:
        release.wait(5)
        returned.set()
        return "checkpointed"

    task = asyncio.create_task(_in_thread_to_the_end(checkpoint))
    await asyncio.sleep(0.05)  # the task now waits for the thread
    release.set()
    # Without yielding to the loop: the thread's result is queued for the loop before the
    # cancellation reaches the task.
    returned.wait(5)
    time.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


_INSERT_BUCKET = (
    "INSERT INTO rate_limits (bucket, window_start, hits, expires_at) VALUES (:bucket, 0, 1, 0)"
)


async def test_a_durable_and_a_non_durable_transaction_both_commit(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.storage import database

    monkeypatch.setattr(database, "SQLITE_CHECKPOINT_INTERVAL", 3600)  # no checkpoint meanwhile
    with database_url_for(backend, tmp_path) as url:
        migrate(url)
        db = Database(url)
        await db.connect()
        try:
            for durable in (False, True):
                async with db.transaction(durable=durable) as conn:
                    await conn.execute(_INSERT_BUCKET, {"bucket": f"durable={durable}"})
        finally:
            await db.disconnect()
        rows = query(url, "SELECT bucket FROM rate_limits ORDER BY bucket")
    assert rows == [("durable=False",), ("durable=True",)]


@contextlib.asynccontextmanager
async def _connected(
    backend: str, tmp_path: Path, *rows: str
) -> AsyncIterator[tuple[Database, str]]:
    """A connected Database, and its URL, on a fresh migrated database holding `rows` (inserts)."""
    with database_url_for(backend, tmp_path) as url:
        migrate(url)
        for row in rows:
            execute(url, row)
        db = Database(url)
        await db.connect()
        try:
            yield db, url
        finally:
            await db.disconnect()


async def test_writes_run_together_commit_together_each_with_its_own_parameters(
    tmp_path: Path, backend: str
) -> None:
    # docs/design.md §7: on PostgreSQL the parts are one statement; equal parameter names in two
    # parts keep their own values on both backends.
    seeded = "INSERT INTO rate_limits VALUES ('before', 0, 7, 0)"
    async with _connected(backend, tmp_path, seeded) as (db, url):
        async with db.transaction() as conn:
            rows = await conn.run_together(
                [(_INSERT_BUCKET, {"bucket": "first"}), (_INSERT_BUCKET, {"bucket": "second"})],
                ("SELECT hits FROM rate_limits WHERE bucket = :bucket", {"bucket": "before"}),
            )
        assert rows == [{"hits": 7}]
        assert query(url, "SELECT bucket FROM rate_limits ORDER BY bucket") == [
            ("before",),
            ("first",),
            ("second",),
        ]


async def test_when_one_write_run_together_fails_none_has_an_effect(
    tmp_path: Path, backend: str
) -> None:
    seeded = "INSERT INTO rate_limits VALUES ('taken', 0, 1, 0)"
    async with _connected(backend, tmp_path, seeded) as (db, url):
        with pytest.raises(UNIQUE_VIOLATIONS) as refused:
            async with db.transaction() as conn:
                await conn.run_together(
                    [(_INSERT_BUCKET, {"bucket": "new"}), (_INSERT_BUCKET, {"bucket": "taken"})]
                )
        assert is_unique_violation(refused.value, table="rate_limits")
        assert not is_unique_violation(refused.value, table="dpop_replay")
        assert query(url, "SELECT bucket FROM rate_limits") == [("taken",)]


async def test_writes_run_together_on_their_own_are_one_atomic_unit(
    tmp_path: Path, backend: str
) -> None:
    # Without a transaction around them (docs/design.md §7): on PostgreSQL one statement, durable or
    # on the single-statement pool; on SQLite a write transaction.
    seeded = "INSERT INTO rate_limits VALUES ('taken', 0, 3, 0)"
    async with _connected(backend, tmp_path, seeded) as (db, url):
        for durable in (True, False):
            with pytest.raises(UNIQUE_VIOLATIONS):
                await db.run_together(
                    [
                        (_INSERT_BUCKET, {"bucket": f"lost, durable={durable}"}),
                        (_INSERT_BUCKET, {"bucket": "taken"}),
                    ],
                    durable=durable,
                )
            rows = await db.run_together(
                [(_INSERT_BUCKET, {"bucket": f"kept, durable={durable}"})],
                ("SELECT hits FROM rate_limits WHERE bucket = :bucket", {"bucket": "taken"}),
                durable=durable,
            )
            assert rows == [{"hits": 3}]
        assert query(url, "SELECT bucket FROM rate_limits ORDER BY bucket") == [
            ("kept, durable=False",),
            ("kept, durable=True",),
            ("taken",),
        ]


def test_a_statement_with_its_own_with_clause_is_refused_rather_than_run_together() -> None:
    from server.storage.database import _together

    nested = "WITH fresh AS (SELECT 1 AS n) INSERT INTO t SELECT n FROM fresh"
    for parts in ((nested, "SELECT 1"), ("INSERT INTO t VALUES (:n)", nested)):
        with pytest.raises(ValueError, match="cannot run together"):
            _together(parts)


_TAKE_BUCKET = (
    "UPDATE rate_limits SET hits = hits + 1 WHERE bucket = :bucket AND hits < 2 RETURNING bucket"
)


async def test_guarded_writes_take_effect_only_with_the_guard_and_only_together(
    tmp_path: Path, backend: str
) -> None:
    # docs/design.md §7: the guard (a conditional update) and the inserts it admits are one atomic
    # unit: on PostgreSQL one statement, on SQLite a write transaction.
    seeded = "INSERT INTO rate_limits VALUES ('guard', 0, 0, 0), ('taken', 0, 1, 0)"
    async with _connected(backend, tmp_path, seeded) as (db, url):
        guard = (_TAKE_BUCKET, {"bucket": "guard"})
        admitted = await db.run_guarded(guard, [(_INSERT_BUCKET, {"bucket": "first"})])
        assert admitted == [{"bucket": "guard"}]
        # A write that fails undoes the guard's effect and every other write.
        with pytest.raises(UNIQUE_VIOLATIONS):
            await db.run_guarded(
                guard, [(_INSERT_BUCKET, {"bucket": "lost"}), (_INSERT_BUCKET, {"bucket": "taken"})]
            )
        # Once the guard returns no row, nothing is written.
        assert await db.run_guarded(guard, [(_INSERT_BUCKET, {"bucket": "second"})]) == [
            {"bucket": "guard"}
        ]
        assert await db.run_guarded(guard, [(_INSERT_BUCKET, {"bucket": "third"})]) == []
        assert query(url, "SELECT bucket, hits FROM rate_limits ORDER BY bucket") == [
            ("first", 1),
            ("guard", 2),
            ("second", 1),
            ("taken", 1),
        ]


async def test_on_postgres_a_guarded_statement_that_conflicts_runs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a transaction around it, the statement is what `Database.run` would retry: one
    # that failed on a serialization conflict or a deadlock had no effect.
    seeded = "INSERT INTO rate_limits VALUES ('guard', 0, 0, 0)"
    async with _connected("postgresql", tmp_path, seeded) as (db, url):
        autocommit = db.autocommit
        uses: list[int] = []

        @contextlib.asynccontextmanager
        async def conflicting_once() -> AsyncIterator[Any]:
            uses.append(1)
            if len(uses) == 1:
                raise TransactionConflict()
            async with autocommit() as conn:
                yield conn

        monkeypatch.setattr(db, "autocommit", conflicting_once)
        rows = await db.run_guarded(
            (_TAKE_BUCKET, {"bucket": "guard"}), [(_INSERT_BUCKET, {"bucket": "once"})]
        )
        assert rows == [{"bucket": "guard"}]
        assert len(uses) == 2
        assert query(url, "SELECT bucket, hits FROM rate_limits ORDER BY bucket") == [
            ("guard", 1),
            ("once", 1),
        ]


def test_a_guarded_write_must_be_an_insert_of_values() -> None:
    from server.storage.database import _guarded_text

    guard = "UPDATE t SET n = 1 WHERE id = :id RETURNING id"
    for write in (
        "UPDATE t SET n = :n",
        "INSERT INTO t (n) SELECT :n",
        "INSERT INTO t (n) VALUES (:n",
        "INSERT INTO t (n) VALUES (')'",
    ):
        with pytest.raises(ValueError, match="guarded write"):
            _guarded_text((guard, write))
    with pytest.raises(ValueError, match="cannot run together"):
        _guarded_text(("WITH d AS (SELECT 1) " + guard, "INSERT INTO t (n) VALUES (:n)"))
    text = _guarded_text(
        (guard, "INSERT INTO t (a, b) VALUES (lower(:a), ')''(') ON CONFLICT (a) DO NOTHING")
    )
    assert text == (
        "WITH guard AS (UPDATE t SET n = 1 WHERE id = :p0_id RETURNING id), "
        "part1 AS (INSERT INTO t (a, b) SELECT lower(:p1_a), ')''(' FROM guard "
        "ON CONFLICT (a) DO NOTHING) SELECT * FROM guard"
    )


class _SentStatements:
    """An asyncpg connection that records the text of every query sent through it."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.queries: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._raw, name)

        async def sent(query: str, *args: Any) -> Any:
            self.queries.append(query)
            return await method(query, *args)

        return sent


async def test_postgres_runs_writes_together_with_a_read_in_one_round_trip(
    tmp_path: Path,
) -> None:
    async with _connected("postgresql", tmp_path) as (db, _), db.transaction() as conn:
        sent = _SentStatements(conn._raw)  # type: ignore[attr-defined]
        conn._raw = sent  # type: ignore[attr-defined]
        await conn.run_together(
            [(_INSERT_BUCKET, {"bucket": "a"}), (_INSERT_BUCKET, {"bucket": "b"})],
            ("SELECT count(*) AS n FROM rate_limits", {}),
        )
    assert len(sent.queries) == 1, sent.queries
    assert sent.queries[0].startswith("WITH part0 AS (INSERT"), sent.queries


async def test_postgres_runs_guarded_writes_in_one_round_trip(tmp_path: Path) -> None:
    seeded = "INSERT INTO rate_limits VALUES ('guard', 0, 0, 0)"
    async with _connected("postgresql", tmp_path, seeded) as (db, _), db.autocommit() as conn:
        sent = _SentStatements(conn._raw)  # type: ignore[attr-defined]
        conn._raw = sent  # type: ignore[attr-defined]
        await conn.run_guarded(
            (_TAKE_BUCKET, {"bucket": "guard"}),
            [(_INSERT_BUCKET, {"bucket": "a"}), (_INSERT_BUCKET, {"bucket": "b"})],
        )
    assert len(sent.queries) == 1, sent.queries
    assert sent.queries[0].startswith("WITH guard AS (UPDATE"), sent.queries


class _RecordedFsyncs:
    """Stands in for os.fsync in server.storage.database: records which file each call synced
    and what another connection could read when it started; can hold calls or fail them."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.files: list[str] = []
        self.committed_when_started: list[list[str]] = []
        self.release = threading.Event()
        self.release.set()
        self.error: OSError | None = None

    def __call__(self, fd: int) -> None:
        self.files.append(os.readlink(f"/proc/self/fd/{fd}"))
        with sqlite3.connect(self.db_path) as reader:
            buckets = reader.execute("SELECT bucket FROM rate_limits ORDER BY bucket").fetchall()
        self.committed_when_started.append([bucket for (bucket,) in buckets])
        self.release.wait(10)
        if self.error is not None:
            raise self.error
        time.sleep(0.02)  # as long as a slow disk: commits pile up behind it


@pytest.fixture
async def sqlite_db(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Database, _RecordedFsyncs]]:
    from server.storage import database

    monkeypatch.setattr(database, "SQLITE_CHECKPOINT_INTERVAL", 3600)  # its fsyncs are not ours
    with database_url_for("sqlite", tmp_path) as url:
        migrate(url)
        db = Database(url)
        fsyncs = _RecordedFsyncs(Path(db.sqlite_path))
        monkeypatch.setattr(os, "fsync", fsyncs)
        await db.connect()
        try:
            yield db, fsyncs
        finally:
            fsyncs.release.set()
            await db.disconnect()


async def _durable_write(db: Database, bucket: str) -> None:
    async with db.transaction() as conn:
        await conn.execute(_INSERT_BUCKET, {"bucket": bucket})


async def _held_in_its_fsync(
    db: Database, fsyncs: _RecordedFsyncs, bucket: str
) -> asyncio.Task[None]:
    """A durable write that has committed and whose fsync has begun, held until released."""
    fsyncs.release.clear()
    begun = len(fsyncs.files)
    task = asyncio.create_task(_durable_write(db, bucket))
    while len(fsyncs.files) == begun:
        await asyncio.sleep(0.005)
    return task


async def test_on_sqlite_a_durable_transaction_returns_after_a_log_fsync_begun_after_its_commit(
    sqlite_db: tuple[Database, _RecordedFsyncs],
) -> None:
    # docs/design.md §5: the COMMIT does not wait for the disk; the caller does, for the log.
    db, fsyncs = sqlite_db
    async with db.transaction(durable=False) as conn:
        await conn.execute(_INSERT_BUCKET, {"bucket": "record"})
    assert fsyncs.files == []
    async with db.transaction() as conn:
        await conn.execute(_INSERT_BUCKET, {"bucket": "login"})
    assert fsyncs.files == [db.sqlite_path + "-wal"]
    assert fsyncs.committed_when_started == [["login", "record"]]


async def test_on_sqlite_other_writers_run_while_a_durable_transaction_waits_for_the_disk(
    sqlite_db: tuple[Database, _RecordedFsyncs],
) -> None:
    # The write lock is released before the fsync: a slow disk delays only the transactions
    # that must be durable, not every writer of every worker.
    db, fsyncs = sqlite_db
    waiting = await _held_in_its_fsync(db, fsyncs, "durable")
    await db.statement(_INSERT_BUCKET, {"bucket": "single"})
    async with db.transaction(durable=False) as conn:
        await conn.execute(_INSERT_BUCKET, {"bucket": "record"})
    assert not waiting.done()
    fsyncs.release.set()
    await waiting
    assert query(db.url, "SELECT count(*) FROM rate_limits") == [(3,)]


async def test_on_sqlite_concurrent_durable_commits_share_an_fsync(
    sqlite_db: tuple[Database, _RecordedFsyncs],
) -> None:
    db, fsyncs = sqlite_db
    # Twenty commits in one turn of the event loop: one fsync, begun after all of them.
    await asyncio.gather(*(_durable_write(db, f"login {n:02}") for n in range(20)))
    assert len(fsyncs.files) == 1
    assert len(fsyncs.committed_when_started[0]) == 20
    # Commits made while an fsync runs wait for the next one, which they share.
    first = await _held_in_its_fsync(db, fsyncs, "login 20")
    later = [asyncio.create_task(_durable_write(db, f"login {n}")) for n in range(21, 31)]
    await asyncio.sleep(0.05)
    assert not first.done() and len(fsyncs.files) == 2
    fsyncs.release.set()
    await asyncio.gather(first, *later)
    assert len(fsyncs.files) == 3
    assert len(fsyncs.committed_when_started[1]) == 21
    assert len(fsyncs.committed_when_started[2]) == 31


async def test_on_sqlite_a_failed_fsync_refuses_every_later_durable_write(
    sqlite_db: tuple[Database, _RecordedFsyncs],
) -> None:
    # After a failed fsync the kernel may have dropped the pages it could not write, and a later
    # fsync may succeed without them: no durable write is acknowledged again by this process.
    db, fsyncs = sqlite_db
    fsyncs.error = OSError(errno.EIO, "Input/output error")
    for bucket in ("first", "second"):
        with pytest.raises(TemporarilyUnavailable):
            await _durable_write(db, bucket)
    assert len(fsyncs.files) == 1
    # The first was committed, never acknowledged; the second never began.
    assert query(db.url, "SELECT bucket FROM rate_limits") == [("first",)]


async def test_on_sqlite_a_cancelled_wait_for_durability_leaves_the_fsync_running(
    sqlite_db: tuple[Database, _RecordedFsyncs],
) -> None:
    db, fsyncs = sqlite_db
    cancelled = await _held_in_its_fsync(db, fsyncs, "cancelled")
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    fsyncs.release.set()
    await _durable_write(db, "next")  # it gets an fsync of its own
    assert len(fsyncs.files) == 2


async def test_on_sqlite_a_write_behind_the_process_own_transaction_waits_for_its_end(
    tmp_path: Path,
) -> None:
    # docs/design.md §5: within a process, writers queue for SQLite's one write lock instead of
    # polling for it: a write statement issued while a transaction of the same process holds the
    # lock (here far longer than the busy timeout) runs once that transaction has committed.
    import asyncio

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    db = Database(url, sqlite_busy_timeout=0.05)
    await db.connect()
    holding = asyncio.Event()
    order: list[str] = []
    try:

        async def long_transaction() -> None:
            async with db.transaction() as conn:
                await conn.execute(_INSERT_BUCKET, {"bucket": "transaction"})
                holding.set()
                await asyncio.sleep(0.3)
                order.append("transaction ends")

        async def statement() -> None:
            await holding.wait()
            await db.statement(_INSERT_BUCKET, {"bucket": "statement"})
            order.append("statement")

        await asyncio.gather(long_transaction(), statement())
    finally:
        await db.disconnect()
    assert order == ["transaction ends", "statement"]
    assert sorted(query(url, "SELECT bucket FROM rate_limits")) == [
        ("statement",),
        ("transaction",),
    ]


async def test_a_single_statement_translates_driver_errors_and_passes_others_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docs/design.md §5 and §7: a locked or full database is `503 temporarily_unavailable`; an
    # exception the server does not know is passed on unchanged, never wrapped in itself.
    from server.errors import TemporarilyUnavailable

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    db = Database(url)
    await db.connect()
    try:
        raised: list[BaseException] = []

        async def failing(query: str, values: object) -> list[object]:
            raise raised[-1]

        assert db._statements is not None
        monkeypatch.setattr(db._statements, "run", failing)
        locked = sqlite3.OperationalError("database is locked")
        raised.append(locked)
        with pytest.raises(TemporarilyUnavailable) as translated:
            await db.statement("SELECT 1")
        assert translated.value.__cause__ is locked
        other = AssertionError("something else")
        raised.append(other)
        with pytest.raises(AssertionError) as passed_on:
            await db.statement("SELECT 1")
        assert passed_on.value is other and other.__cause__ is None
    finally:
        await db.disconnect()


_INSERT_REPLAY_ENTRY = "INSERT INTO dpop_replay (replay_key, expires_at) VALUES (:key, 0)"


@pytest.fixture
async def restarting_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Database]:
    """A SQLite database whose checkpointer runs every 20 ms and starts the log over once it
    holds 256 KiB. The file is cut back to 64 KiB, below that, so that every restart shrinks it
    however fast the writes are."""
    from server.storage import database

    monkeypatch.setattr(database, "SQLITE_CHECKPOINT_INTERVAL", 0.02)
    monkeypatch.setattr(database, "SQLITE_WAL_LIMIT_BYTES", 256 * 1024)
    monkeypatch.setattr(database, "SQLITE_WAL_FILE_BYTES", 64 * 1024)
    with database_url_for("sqlite", tmp_path) as url:
        migrate(url)
        db = Database(url)
        await db.connect()
        try:
            yield db
        finally:
            await db.disconnect()


@dataclass
class _LogWatch:
    """What writing without pause showed of the log: after every 20 writes, its file's size and
    its checkpoint sequence number (bytes 12 to 15 of the log's header, one more at every start
    over); and the longest that one write took."""

    sizes: list[int] = field(default_factory=list)
    sequence_numbers: list[int] = field(default_factory=list)
    slowest: float = 0.0

    @property
    def restarts(self) -> int:
        return len(set(self.sequence_numbers)) - 1

    @property
    def cut_backs(self) -> int:
        return sum(1 for before, after in itertools.pairwise(self.sizes) if after < before)


async def _write_without_pause(db: Database, seconds: float) -> _LogWatch:
    log = Path(db.sqlite_path + "-wal")
    watch = _LogWatch()
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        for _ in range(20):
            before = time.monotonic()
            await db.statement(_INSERT_REPLAY_ENTRY, {"key": os.urandom(16)})
            watch.slowest = max(watch.slowest, time.monotonic() - before)
            await asyncio.sleep(0)
        with log.open("rb") as header:
            watch.sequence_numbers.append(int.from_bytes(header.read(16)[12:16], "big"))
        watch.sizes.append(log.stat().st_size)
    return watch


async def test_the_write_ahead_log_is_started_over_and_cut_back_while_writes_never_pause(
    restarting_db: Database,
) -> None:
    # docs/design.md §5: PASSIVE checkpoints alone never let the log start over while new pages
    # arrive during every copy, and the file then only grows.
    watch = await _write_without_pause(restarting_db, 2)
    assert watch.restarts >= 3
    assert watch.cut_backs >= 3


async def test_a_reader_of_the_old_log_puts_off_its_restart_but_holds_up_no_write_for_long(
    restarting_db: Database,
) -> None:
    # docs/design.md §5: a RESTART waits at most SQLITE_WAL_RESTART_WAIT_MS for readers, holding
    # the writers off meanwhile, then gives up until the next round.
    path = restarting_db.sqlite_path
    with (
        contextlib.closing(sqlite3.connect(path, isolation_level=None)) as writer,
        contextlib.closing(sqlite3.connect(path, isolation_level=None)) as reader,
    ):
        # Its snapshot includes a page no checkpoint has copied yet (a checkpoint syncs the log
        # and the database file before it counts a page copied), so it reads from the log.
        writer.execute(_INSERT_REPLAY_ENTRY, {"key": os.urandom(16)})
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM dpop_replay").fetchall()
        held = await _write_without_pause(restarting_db, 1)
        reader.execute("COMMIT")
    released = await _write_without_pause(restarting_db, 1)
    assert held.restarts == 0
    assert held.slowest < 1
    assert released.restarts >= 1


async def test_a_worker_that_starts_while_another_process_holds_the_database_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # threats.md I11: after a crash the first process to open the database rebuilds the log's
    # index and holds the database meanwhile. A worker that started alongside failed its startup
    # on "database is locked", and uvicorn then stopped the whole server. A connection in
    # exclusive locking mode holds the database the same way.
    from server.storage import database

    monkeypatch.setattr(database, "SQLITE_CHECKPOINT_INTERVAL", 3600)
    with database_url_for("sqlite", tmp_path) as url:
        migrate(url)
        db = Database(url)
        holder = sqlite3.connect(db.sqlite_path, isolation_level=None, check_same_thread=False)
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute(_INSERT_BUCKET, {"bucket": "written while held"})
        release = threading.Timer(0.3, holder.close)
        release.start()
        try:
            started = time.monotonic()
            await db.connect()
            waited = time.monotonic() - started
            try:
                rows = await db.statement("SELECT bucket FROM rate_limits")
            finally:
                await db.disconnect()
        finally:
            release.join()
    assert waited >= 0.2
    assert rows == [{"bucket": "written while held"}]


async def test_a_transaction_that_keeps_conflicting_runs_eight_times_then_answers_503(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docs/design.md §7 and README: up to 8 attempts in all, then temporarily_unavailable.
    pauses: list[float] = []

    async def no_pause(seconds: float) -> None:
        pauses.append(seconds)

    async with _connected(backend, tmp_path) as (db, _url):
        monkeypatch.setattr("server.storage.database.asyncio.sleep", no_pause)
        runs: list[int] = []

        async def always_conflicting(conn: Any) -> None:
            runs.append(1)
            raise TransactionConflict()

        with pytest.raises(TemporarilyUnavailable):
            await db.run(always_conflicting)
    assert len(runs) == 8
    assert len(pauses) == 7
    assert all(0 <= pause <= 0.64 for pause in pauses)


async def test_on_postgres_the_pool_size_bounds_each_of_the_two_pools(tmp_path: Path) -> None:
    # docs/design.md §7, §14: database_pool_size connections at most in the transaction pool and as
    # many again in the single-statement pool, so twice as many per worker.
    with database_url_for("postgresql", tmp_path) as url:
        migrate(url)
        db = Database(url, pool_size=2)
        await db.connect()
        try:

            async def held(seconds: float) -> None:
                async with db.autocommit() as conn:
                    await conn.fetch_all("SELECT pg_sleep(:s)", {"s": seconds})

            async def counted() -> int:
                rows = query(
                    url,
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()",
                )
                return int(rows[0][0])

            transactions = [asyncio.create_task(held(0.5)) for _ in range(4)]
            statements = [
                asyncio.create_task(db.statement("SELECT pg_sleep(0.5)", {})) for _ in range(4)
            ]
            await asyncio.sleep(0.25)
            assert await counted() == 4
            await asyncio.gather(*transactions, *statements)
        finally:
            await db.disconnect()
