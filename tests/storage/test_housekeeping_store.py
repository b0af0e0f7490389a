"""Housekeeping's store on both backends: what has outlived its keeping goes, nothing else, and
a purge may run any number of times (docs/design.md §6)."""

from __future__ import annotations

import pytest
from support.backends import execute, query

from server.settings import DAY
from server.storage.database import Database
from server.storage.housekeeping import KEEP_FINISHED_SECONDS, HousekeepingStore

pytestmark = pytest.mark.anyio

NOW = 10 * DAY
CUTOFF = NOW - KEEP_FINISHED_SECONDS


def _attempt(url: str, attempt_id: str, *, expires_at: int, consumed_at: int | None) -> None:
    execute(
        url,
        "INSERT INTO login_attempts (id, email_canonical, email_address, dpop_jkt, key_alg, "
        "device_half_hash, email_half_hash, signup_allowed, created_at, expires_at, consumed_at) "
        "VALUES (?, 'a@example.com', 'a@example.com', 'jkt', 'ES256', 'd', 'e', 1, 1, ?, ?)",
        attempt_id,
        expires_at,
        consumed_at,
    )


def _mail(url: str, outbox_id: str, *, status: str, created_at: int, attempt: str | None) -> None:
    execute(
        url,
        "INSERT INTO outbox (id, kind, attempt_id, recipient, message_id, status, tries, "
        "not_before, created_at) VALUES (?, 'login', ?, 'a@example.com', 'm', ?, 1, 0, ?)",
        outbox_id,
        attempt,
        status,
        created_at,
    )
    execute(
        url,
        "INSERT INTO outbox_tries (outbox_id, try_number, tried_at, outcome) "
        "VALUES (?, 1, 1, 'sent')",
        outbox_id,
    )


def _seed(url: str) -> None:
    for key, expires_at in ((b"old-entry-16byte", NOW - 1), (b"new-entry-16byte", NOW)):
        execute(
            url, "INSERT INTO dpop_replay (replay_key, expires_at) VALUES (?, ?)", key, expires_at
        )
    for bucket, expires_at in (("old", NOW - 1), ("new", NOW)):
        execute(
            url,
            "INSERT INTO rate_limits (bucket, window_start, hits, expires_at) VALUES (?, 0, 1, ?)",
            bucket,
            expires_at,
        )
    _attempt(url, "abandoned", expires_at=CUTOFF - 1, consumed_at=None)
    _attempt(url, "recent", expires_at=CUTOFF, consumed_at=None)
    _attempt(url, "consumed", expires_at=CUTOFF - 1, consumed_at=2)
    _attempt(url, "mailed", expires_at=CUTOFF - 1, consumed_at=None)
    _mail(url, "finished", status="sent", created_at=CUTOFF - 1, attempt=None)
    _mail(url, "fresh", status="sent", created_at=CUTOFF, attempt=None)
    _mail(url, "queued", status="queued", created_at=CUTOFF - 1, attempt="mailed")
    for at in (NOW - 30 * DAY - 1, NOW - 30 * DAY):
        execute(url, "INSERT INTO audit_events (at, event, details) VALUES (?, 'e', '{}')", at)


async def test_a_purge_deletes_only_what_has_outlived_its_keeping(
    database: Database, database_url: str
) -> None:
    _seed(database_url)
    await HousekeepingStore(database).purge_expired(now=NOW, audit_retention_days=30)
    assert query(database_url, "SELECT COUNT(*) FROM dpop_replay") == [(1,)]
    assert query(database_url, "SELECT bucket FROM rate_limits") == [("new",)]
    assert query(database_url, "SELECT id FROM login_attempts ORDER BY id") == [
        ("consumed",),
        ("mailed",),
        ("recent",),
    ]
    assert query(database_url, "SELECT id FROM outbox ORDER BY id") == [("fresh",), ("queued",)]
    assert query(database_url, "SELECT outbox_id FROM outbox_tries ORDER BY outbox_id") == [
        ("fresh",),
        ("queued",),
    ]
    assert query(database_url, "SELECT at FROM audit_events") == [(NOW - 30 * DAY,)]


async def test_a_purge_run_again_changes_nothing_more(
    database: Database, database_url: str
) -> None:
    _seed(database_url)
    store = HousekeepingStore(database)
    await store.purge_expired(now=NOW, audit_retention_days=30)
    before = {
        table: query(database_url, f"SELECT COUNT(*) FROM {table}")  # noqa: S608
        for table in ("dpop_replay", "rate_limits", "login_attempts", "outbox", "audit_events")
    }
    await store.purge_expired(now=NOW, audit_retention_days=30)
    after = {
        table: query(database_url, f"SELECT COUNT(*) FROM {table}")  # noqa: S608
        for table in before
    }
    assert after == before
