"""The outbox store on both backends (docs/design.md §12.2): what a claim takes and in which order,
leases, whether a login link is still worth sending, releases, and how deliveries are recorded."""

from __future__ import annotations

import asyncio

import pytest
from support.backends import execute, query

from server.storage.database import UNIQUE_VIOLATIONS, Database
from server.storage.outbox import (
    ClaimedMail,
    DatabaseOutboxStore,
    DeliveryOutcome,
    DeliveryRecord,
    queue_row,
)
from server.storage.records import SealedMail

pytestmark = pytest.mark.anyio

MAX_FAILED = 5
LEASE = 60


def _store(database: Database) -> DatabaseOutboxStore:
    return DatabaseOutboxStore(database, max_failed_completions=MAX_FAILED)


async def _queue(
    database: Database,
    outbox_id: str,
    *,
    now: int,
    kind: str = "no_account",
    attempt_id: str | None = None,
) -> None:
    mail = SealedMail(
        id=outbox_id,
        kind=kind,
        attempt_id=attempt_id,
        recipient=f"{outbox_id}@example.com",
        message_id=f"<{outbox_id}@auth.example.test>",
        sealed=f"sealed-{outbox_id}",
    )
    async with database.transaction() as conn:
        await conn.execute(*queue_row(mail, now=now))


def _attempt(
    url: str,
    attempt_id: str,
    *,
    expires_at: int,
    failed_count: int = 0,
    consumed_at: int | None = None,
) -> None:
    execute(
        url,
        "INSERT INTO login_attempts (id, email_canonical, email_address, dpop_jkt, key_alg, "
        "device_half_hash, email_half_hash, signup_allowed, created_at, expires_at, "
        "failed_count, consumed_at) VALUES (?, 'a@example.com', 'a@example.com', 'jkt', 'ES256', "
        "'d', 'e', 1, 1, ?, ?, ?)",
        attempt_id,
        expires_at,
        failed_count,
        consumed_at,
    )


async def _claim(store: DatabaseOutboxStore, *, now: int, limit: int = 10) -> list[ClaimedMail]:
    return await store.claim(now=now, lease_until=now + LEASE, limit=limit)


def _record(
    claim: ClaimedMail,
    outcome: DeliveryOutcome,
    *,
    at: int,
    detail: str | None = None,
    next_try: int | None = None,
    keeps_order: bool = False,
) -> DeliveryRecord:
    return DeliveryRecord(
        claim=claim,
        outcome=outcome,
        at=at,
        detail=detail,
        next_try=next_try,
        keeps_order=keeps_order,
    )


def _row(url: str, outbox_id: str) -> tuple[object, ...]:
    (row,) = query(
        url,
        "SELECT status, tries, not_before, lease_until, sealed_message IS NOT NULL, sent_at, "
        "last_error FROM outbox WHERE id = ?",
        outbox_id,
    )
    return row


def _tries(url: str, outbox_id: str) -> list[tuple[object, ...]]:
    return query(
        url,
        "SELECT try_number, tried_at, outcome, detail FROM outbox_tries WHERE outbox_id = ? "
        "ORDER BY try_number",
        outbox_id,
    )


async def test_a_queued_message_is_claimed_as_it_was_queued(
    database: Database, database_url: str
) -> None:
    await _queue(database, "m1", now=10)
    (claim,) = await _claim(_store(database), now=12)
    assert claim == ClaimedMail(
        id="m1",
        kind="no_account",
        recipient="m1@example.com",
        sealed_message="sealed-m1",
        tries=1,
        live=True,
        claimed_at=12,
    )
    assert _row(database_url, "m1") == ("queued", 1, 10, 12 + LEASE, 1, None, None)


async def test_a_claim_takes_the_oldest_due_first_and_other_mail_before_login_links_in_a_second(
    database: Database, database_url: str
) -> None:
    for attempt_id in ("a0", "a1", "a2"):
        _attempt(database_url, attempt_id, expires_at=1000)
    await _queue(database, "later", now=20)
    await _queue(database, "n2", now=11)
    await _queue(database, "l1", now=10, kind="login_link", attempt_id="a1")
    await _queue(database, "d1", now=10, kind="new_device")
    await _queue(database, "l2", now=10, kind="login_link", attempt_id="a2")
    await _queue(database, "n1", now=10)
    await _queue(database, "l0", now=9, kind="login_link", attempt_id="a0")
    store = _store(database)
    first = await _claim(store, now=15, limit=2)
    rest = await _claim(store, now=15, limit=10)
    assert [c.id for c in first] == ["l0", "n1"]
    # 'no_account' and 'new_device' sort before 'login_link'; then by id. Not yet due: "later".
    assert [c.id for c in rest] == ["d1", "l1", "l2", "n2"]


async def test_a_claim_takes_no_more_than_its_limit(database: Database) -> None:
    for n in range(5):
        await _queue(database, f"m{n}", now=10)
    store = _store(database)
    assert [len(await _claim(store, now=10, limit=limit)) for limit in (1, 3, 4)] == [1, 3, 1]


async def test_a_leased_message_is_not_claimed_again_until_its_lease_runs_out(
    database: Database, database_url: str
) -> None:
    await _queue(database, "m1", now=10)
    store = _store(database)
    (first,) = await _claim(store, now=10)
    assert await _claim(store, now=10 + LEASE) == []
    (again,) = await _claim(store, now=10 + LEASE + 1)
    assert (first.tries, again.tries) == (1, 2)
    assert _row(database_url, "m1")[:4] == ("queued", 2, 10, 10 + 2 * LEASE + 1)


@pytest.mark.parametrize(
    ("state", "live"),
    [("open", True), ("consumed", False), ("expired", False), ("locked", False)],
)
async def test_a_login_link_comes_back_live_only_while_its_attempt_can_be_completed(
    database: Database, database_url: str, state: str, live: bool
) -> None:
    now = 50
    _attempt(
        database_url,
        "a1",
        expires_at=now if state == "expired" else now + 1,
        failed_count=MAX_FAILED if state == "locked" else MAX_FAILED - 1,
        consumed_at=now - 1 if state == "consumed" else None,
    )
    await _queue(database, "l1", now=10, kind="login_link", attempt_id="a1")
    await _queue(database, "n1", now=10)
    claims = await _claim(_store(database), now=now)
    assert {c.id: c.live for c in claims} == {"n1": True, "l1": live}


async def test_a_released_message_is_due_again_at_once_with_its_try_recorded_as_a_retry(
    database: Database, database_url: str
) -> None:
    await _queue(database, "m1", now=10)
    await _queue(database, "m2", now=10)
    store = _store(database)
    claims = await _claim(store, now=10)
    await store.release(claims, now=12, reason="interrupted by shutdown")
    for outbox_id in ("m1", "m2"):
        assert _row(database_url, outbox_id) == (
            "queued",
            1,
            12,
            None,
            1,
            None,
            "interrupted by shutdown",
        )
        assert _tries(database_url, outbox_id) == [(1, 12, "retry", "interrupted by shutdown")]
    assert [c.tries for c in await _claim(store, now=12)] == [2, 2]


async def test_a_retry_changes_the_message_only_while_its_claim_holds_it(
    database: Database, database_url: str
) -> None:
    await _queue(database, "m1", now=10)
    store = _store(database)
    (stale,) = await _claim(store, now=10)
    (current,) = await _claim(store, now=10 + LEASE + 1)
    await store.record([_record(stale, "retry", at=80, detail="451 later", next_try=500)])
    assert _row(database_url, "m1")[:4] == ("queued", 2, 10, 10 + 2 * LEASE + 1)
    await store.record([_record(current, "retry", at=90, detail="451 again", next_try=200)])
    assert _row(database_url, "m1") == ("queued", 2, 200, None, 1, None, "451 again")
    # Every try is recorded, the stale one too.
    assert _tries(database_url, "m1") == [
        (1, 80, "retry", "451 later"),
        (2, 90, "retry", "451 again"),
    ]


async def test_a_delivery_is_always_recorded_as_sent(database: Database, database_url: str) -> None:
    await _queue(database, "m1", now=10)
    store = _store(database)
    (stale,) = await _claim(store, now=10)
    (current,) = await _claim(store, now=10 + LEASE + 1)
    await store.record([_record(current, "abandoned", at=80, detail="550 refused")])
    assert _row(database_url, "m1")[0] == "abandoned"
    # The first hand-off, its lease run out, went through after all.
    await store.record([_record(stale, "sent", at=85)])
    assert _row(database_url, "m1") == ("sent", 2, 10, None, 0, 85, "550 refused")
    assert [outcome for _, _, outcome, _ in _tries(database_url, "m1")] == ["sent", "abandoned"]


async def test_a_finished_message_keeps_its_status_against_any_other_outcome(
    database: Database, database_url: str
) -> None:
    await _queue(database, "m1", now=10)
    store = _store(database)
    (stale,) = await _claim(store, now=10)
    (current,) = await _claim(store, now=10 + LEASE + 1)
    await store.record([_record(current, "sent", at=80)])
    await store.record([_record(stale, "abandoned", at=85, detail="timed out")])
    assert _row(database_url, "m1") == ("sent", 2, 10, None, 0, 80, None)
    assert [outcome for _, _, outcome, _ in _tries(database_url, "m1")] == ["abandoned", "sent"]


@pytest.mark.parametrize("outcome", ["sent", "abandoned", "expired"])
async def test_every_outcome_but_a_retry_drops_the_sealed_order(
    database: Database, database_url: str, outcome: DeliveryOutcome
) -> None:
    await _queue(database, "m1", now=10)
    store = _store(database)
    (claim,) = await _claim(store, now=10)
    detail = None if outcome == "sent" else "why"
    await store.record([_record(claim, outcome, at=20, detail=detail)])
    assert _row(database_url, "m1") == (
        outcome,
        1,
        10,
        None,
        0,
        20 if outcome == "sent" else None,
        detail,
    )
    assert _tries(database_url, "m1") == [(1, 20, outcome, detail)]


async def test_giving_up_after_the_last_try_keeps_the_sealed_order(
    database: Database, database_url: str
) -> None:
    await _queue(database, "m1", now=10)
    store = _store(database)
    (claim,) = await _claim(store, now=10)
    give_up = _record(claim, "abandoned", at=20, detail="451 (after 12 tries)", keeps_order=True)
    await store.record([give_up])
    assert _row(database_url, "m1") == ("abandoned", 1, 10, None, 1, None, "451 (after 12 tries)")
    assert _tries(database_url, "m1") == [(1, 20, "abandoned", "451 (after 12 tries)")]


async def test_a_record_keeps_the_first_200_characters_of_an_error(
    database: Database, database_url: str
) -> None:
    await _queue(database, "m1", now=10)
    store = _store(database)
    (claim,) = await _claim(store, now=10)
    error = "4" * 150 + "5" * 150
    await store.record([_record(claim, "retry", at=20, detail=error, next_try=30)])
    assert _row(database_url, "m1")[6] == error[:200]
    assert _tries(database_url, "m1")[0][3] == error[:200]


async def test_the_records_of_a_batch_are_written_together_or_not_at_all(
    database: Database, database_url: str
) -> None:
    await _queue(database, "m1", now=10)
    await _queue(database, "m2", now=10)
    store = _store(database)
    first, second = await _claim(store, now=10)
    # The second try record of one claim collides with the first: nothing is written.
    records = [_record(first, "sent", at=20), _record(second, "sent", at=20)]
    with pytest.raises(UNIQUE_VIOLATIONS):
        await store.record([*records, _record(second, "sent", at=21)])
    for outbox_id in ("m1", "m2"):
        assert _row(database_url, outbox_id) == ("queued", 1, 10, 10 + LEASE, 1, None, None)
        assert _tries(database_url, outbox_id) == []
    await store.record(records)
    assert query(database_url, "SELECT DISTINCT status FROM outbox") == [("sent",)]


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_on_postgresql_concurrent_claims_take_different_rows(
    database: Database, database_url: str
) -> None:
    count = 60
    for n in range(count):
        await _queue(database, f"m{n:02}", now=10)
    others = [Database(database_url) for _ in range(3)]
    for db in others:
        await db.connect()
    stores = [_store(db) for db in [database, *others]]

    async def claim_until_empty(store: DatabaseOutboxStore) -> list[str]:
        taken: list[str] = []
        while batch := await _claim(store, now=10, limit=3):
            taken += [c.id for c in batch]
        return taken

    try:
        taken = await asyncio.gather(*(claim_until_empty(s) for s in stores))
    finally:
        for db in others:
            await db.disconnect()
    claimed = [outbox_id for ids in taken for outbox_id in ids]
    assert sorted(claimed) == [f"m{n:02}" for n in range(count)]
    assert query(database_url, "SELECT DISTINCT tries FROM outbox") == [(1,)]
