"""The audit trail's store on both backends: rows appended in batches, read back in id order
(SPEC.md §6.12; docs/design.md §4)."""

from __future__ import annotations

import pytest
from support.backends import query

from server.storage.audit import ROWS_PER_STATEMENT, AuditRecord, AuditStore
from server.storage.database import Database

pytestmark = pytest.mark.anyio


def _record(at: int, *, event: str = "login.started") -> AuditRecord:
    return AuditRecord(
        at=at,
        event=event,
        user_id="u1",
        jkt="jkt",
        client_address="203.0.113.7",
        request_id=f"r{at}",
        details='{"attempt_id":"a1"}',
    )


async def test_appended_records_are_kept_as_given_also_beyond_one_statement(
    database: Database, database_url: str
) -> None:
    count = ROWS_PER_STATEMENT + 3
    await AuditStore(database).append([_record(at) for at in range(count)])
    rows = query(
        database_url,
        "SELECT at, event, user_id, jkt, client_address, request_id, details FROM audit_events "
        "ORDER BY id",
    )
    assert len(rows) == count
    assert rows[-1] == (
        count - 1,
        "login.started",
        "u1",
        "jkt",
        "203.0.113.7",
        f"r{count - 1}",
        '{"attempt_id":"a1"}',
    )
    assert [row[0] for row in rows] == list(range(count))


async def test_appending_nothing_writes_nothing(database: Database, database_url: str) -> None:
    await AuditStore(database).append([])
    assert query(database_url, "SELECT COUNT(*) FROM audit_events") == [(0,)]


async def test_the_latest_rows_come_oldest_first(database: Database) -> None:
    store = AuditStore(database)
    await store.append([_record(at) for at in (10, 20, 30)])
    latest = await store.latest(count=2)
    assert [row.at for row in latest] == [20, 30]
    assert latest[0].id < latest[1].id
    assert latest[1].details == '{"attempt_id":"a1"}'
    assert await store.latest(count=0) == []


async def test_rows_after_an_id_come_in_id_order_a_page_at_a_time(database: Database) -> None:
    store = AuditStore(database)
    await store.append([_record(at) for at in (1, 2, 3, 4)])
    first, *_ = await store.latest(count=4)
    page = await store.after(after_id=first.id, limit=2)
    assert [row.at for row in page] == [2, 3]
    assert [row.at for row in await store.after(after_id=page[-1].id)] == [4]


async def test_rows_between_two_times_include_since_and_exclude_until(database: Database) -> None:
    store = AuditStore(database)
    await store.append([_record(at) for at in (5, 10, 15, 20)])
    assert [r.at for r in await store.between(since=10, until=20)] == [10, 15]
    assert [r.at for r in await store.between(since=None, until=10)] == [5]
    assert [r.at for r in await store.between(since=15, until=None)] == [15, 20]
    page = await store.between(since=None, until=None, limit=3)
    rest = await store.between(since=None, until=None, after_id=page[-1].id)
    assert [r.at for r in page] + [r.at for r in rest] == [5, 10, 15, 20]
