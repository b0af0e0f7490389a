"""The delivery guarantee (SPEC.md §7.4): at least once, identical bytes on a duplicate, never for
an attempt that can no longer complete, one sender per row among competing dispatchers, and
nothing lost to an outage or a crash (threats.md I1, I4, I5, I6, I11)."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import backends
from support.backends import database_url_for
from support.fakes import FakeClock
from support.harness import Harness
from support.mail_harness import (
    complete_from,
    deliver_until_idle,
    delivery_for,
    mail_server,
    outbox_rows,
    start,
    tries_of,
)
from support.smtp_sink import SmtpSink, smtp_sink

from server.app import build_mail_composer, build_mail_transport
from server.mail import outbox
from server.mail.delivery import MAX_TRIES
from server.mail.orders import NoAccountOrder
from server.mail.outbox import LEASE_SECONDS, OutboxDispatcher
from server.mail.transport import MailTransport
from server.storage.database import Database
from server.storage.outbox import _CLAIM, DatabaseOutboxStore, queue_row

pytestmark = pytest.mark.anyio


async def test_smtp_down_for_minutes_then_every_live_login_completes_none_stale_sent_i1_i4(
    tmp_path: Path, backend: str
) -> None:
    with smtp_sink(tmp_path / "smtp", running=False) as sink:
        async with mail_server(tmp_path, sink, backend=backend) as server:
            logins: dict[str, tuple[Any, dict[str, Any]]] = {}
            t0 = server.clock.now()
            # Starts at 0 s, 0 s, 300 s and 540 s while the mail server is down; the dispatcher
            # keeps trying every 30 s. Attempts live 600 s.
            starts = {0: ["a", "b"], 300: ["c"], 540: ["d"]}
            for at in range(0, 600, 30):
                server.clock.advance(t0 + at - server.clock.now())
                for email in starts.get(at, []):
                    device = server.device()
                    logins[email] = (device, await start(server, device, f"{email}@example.com"))
                await server.deliver()
            assert sink.deliveries == []
            assert {row[3] for row in outbox_rows(server)} == {"queued"}
            # 660 s: the mail server is back; a and b expired at 600 s.
            server.clock.advance(t0 + 660 - server.clock.now())
            sink.start()
            await deliver_until_idle(server)
            statuses = {row[2]: row[3] for row in outbox_rows(server)}
            for email in ("c", "d"):
                device, started = logins[email]
                response = await complete_from(
                    server, device, started, delivery_for(sink, started["attempt_id"])
                )
                assert response.status_code == 200, (email, response.text)
            tries = {row[0]: tries_of(server, row[0]) for row in outbox_rows(server)}
    delivered = {d.link() for d in sink.deliveries}
    assert len(sink.deliveries) == 2
    for email in ("a", "b"):
        attempt_id = logins[email][1]["attempt_id"]
        assert statuses[attempt_id] == "expired"
        assert not any(attempt_id in (link or "") for link in delivered)
    for email in ("c", "d"):
        assert statuses[logins[email][1]["attempt_id"]] == "sent"
    # Every try left a record; every failed one says why.
    for recorded in tries.values():
        assert [n for n, *_ in recorded] == list(range(1, len(recorded) + 1))
        assert all(detail for _, _, outcome, detail in recorded if outcome == "retry")


async def test_an_unreachable_server_ends_the_round_after_one_try(tmp_path: Path) -> None:
    with smtp_sink(tmp_path / "smtp", running=False) as sink:
        async with mail_server(tmp_path, sink) as server:
            await _start_logins(server, 3)
            assert await server.deliver() == 1
            (count,) = server.query("SELECT COUNT(*) FROM outbox_tries")
    assert count == (1,)


async def test_mail_committed_before_a_crash_is_sent_after_restart_i11(
    tmp_path: Path, sink: SmtpSink, backend: str
) -> None:
    clock = FakeClock()
    with database_url_for(backend, tmp_path) as database_url:
        async with mail_server(tmp_path, sink, clock=clock, database_url=database_url) as first:
            device = first.device()
            started = await start(first, device, "a@example.com")
        # The first process is gone without having dispatched anything.
        assert sink.recorder.ehlos == 0
        async with mail_server(tmp_path, sink, clock=clock, database_url=database_url) as second:
            assert await second.deliver() == 1
            response = await complete_from(
                second, device, started, delivery_for(sink, started["attempt_id"])
            )
    assert response.status_code == 200


async def test_two_dispatchers_racing_send_each_message_once_i5(
    tmp_path: Path, sink: SmtpSink, backend: str
) -> None:
    async with mail_server(tmp_path, sink, backend=backend) as server:
        await _start_logins(server, 8)
        dispatchers, databases = [], []
        for _ in range(2):
            db = Database(server.database_url)
            await db.connect()
            databases.append(db)
            dispatchers.append(
                _dispatcher(server, db, build_mail_transport(server.settings), concurrency=4)
            )
        try:
            handled = await asyncio.gather(*(d.dispatch_due() for d in dispatchers))
        finally:
            for db in databases:
                await db.disconnect()
        rows = outbox_rows(server)
    assert sum(handled) == 8
    assert {row[3] for row in rows} == {"sent"}
    assert {row[4] for row in rows} == {1}  # no row was claimed twice
    per_message = Counter(d.message["Message-ID"] for d in sink.deliveries)
    assert len(per_message) == 8 and set(per_message.values()) == {1}


class _Crash(BaseException):
    """The process dies after the hand-off, before `sent` is recorded."""


class _CrashAfterHandOff:
    def __init__(self, inner: MailTransport) -> None:
        self.inner = inner

    async def send(self, *, recipient: str, message: bytes, message_key: str) -> None:
        await self.inner.send(recipient=recipient, message=message, message_key=message_key)
        raise _Crash


async def test_a_duplicate_after_a_lease_expiry_carries_identical_bytes_i2(
    tmp_path: Path, sink: SmtpSink, backend: str
) -> None:
    async with mail_server(tmp_path, sink, backend=backend) as server:
        device = server.device()
        started = await start(server, device, "a@example.com")
        db = Database(server.database_url)
        await db.connect()
        try:
            crashing = _dispatcher(
                server, db, _CrashAfterHandOff(build_mail_transport(server.settings))
            )
            with pytest.raises(_Crash):
                await crashing.dispatch_due()
        finally:
            await db.disconnect()
        assert len(sink.deliveries) == 1
        # While the lease runs, nobody else sends it.
        server.clock.advance(LEASE_SECONDS - 1)
        assert await server.deliver() == 0
        server.clock.advance(2)
        assert await server.deliver() == 1
        first, second = sink.deliveries
        response = await complete_from(server, device, started, second)
        ((outbox_id, _, _, status, tries, _),) = _login_rows(server)
        recorded = tries_of(server, outbox_id)
    assert first.data == second.data
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert first.link() == second.link()
    assert (status, tries) == ("sent", 2)
    assert [(n, outcome) for n, _, outcome, _ in recorded] == [(2, "sent")]
    assert response.status_code == 200


@pytest.mark.parametrize("state", ["consumed", "locked", "expired"])
async def test_mail_for_an_attempt_that_can_no_longer_complete_is_never_sent_i4(
    tmp_path: Path, sink: SmtpSink, state: str
) -> None:
    async with mail_server(tmp_path, sink) as server:
        device = server.device()
        started = await start(server, device, "a@example.com")
        # The state is set directly: nobody has read the mail, which is still queued.
        if state == "consumed":
            _set(server, "consumed_at", server.clock.now(), started["attempt_id"])
        elif state == "locked":
            _set(
                server,
                "failed_count",
                server.settings.max_failed_completions,
                started["attempt_id"],
            )
        else:
            server.clock.advance(server.settings.attempt_lifetime)
        await server.deliver()
        ((outbox_id, _, _, status, _, _),) = outbox_rows(server)
        recorded = tries_of(server, outbox_id)
        (sealed,) = server.query("SELECT sealed_message FROM outbox")
    assert sink.recorder.ehlos == 0 and sink.deliveries == []
    assert status == "expired" and sealed == (None,)
    assert [outcome for _, _, outcome, _ in recorded] == ["expired"]


async def test_a_poisoned_recipient_never_reaches_the_wire_i6(
    tmp_path: Path, sink: SmtpSink
) -> None:
    async with mail_server(tmp_path, sink) as server:
        svc = server.app.state.services
        mail = outbox.new_queued_mail(random_bytes=os.urandom, domain="auth.example.test")
        async with svc.db.transaction() as conn:
            sealed = outbox.seal_mail(
                mail,
                NoAccountOrder(
                    recipient="victim@example.com\r\nRCPT TO:<evil@example.net>",
                    message_id=mail.message_id,
                    requested_at=server.clock.now(),
                ),
                attempt_id=None,
                keyring=svc.keyring,
                random_bytes=os.urandom,
            )
            await conn.execute(*queue_row(sealed, now=server.clock.now()))
        await server.deliver()
        ((outbox_id, _, _, status, _, _),) = outbox_rows(server)
        ((_, _, outcome, detail),) = tries_of(server, outbox_id)
    assert sink.recorder.ehlos == 0 and sink.recorder.rcpt_seen == []
    assert (status, outcome, detail) == ("abandoned", "abandoned", "invalid recipient")


async def test_transient_failures_stop_after_max_tries(tmp_path: Path) -> None:
    with smtp_sink(tmp_path / "smtp") as sink:
        sink.recorder.replies = ["451 4.3.0 try later"] * (MAX_TRIES + 5)
        # Closed sign-up: a "no account" notice has no attempt, so only the cap ends it.
        async with mail_server(tmp_path, sink, signup_policy="closed") as server:
            await start(server, server.device(), "stranger@example.com")
            await deliver_until_idle(server)
            ((outbox_id, kind, _, status, tries, _),) = outbox_rows(server)
            recorded = tries_of(server, outbox_id)
            (last_error,) = server.query("SELECT last_error FROM outbox")
    assert (kind, status, tries) == ("no_account", "abandoned", MAX_TRIES)
    assert [outcome for _, _, outcome, _ in recorded] == ["retry"] * (MAX_TRIES - 1) + ["abandoned"]
    # Backoff: each wait at least half of min(600, 2^tries) seconds.
    times = [tried_at for _, tried_at, _, _ in recorded]
    for n, (earlier, later) in enumerate(itertools.pairwise(times), start=1):
        assert later - earlier >= min(600, 2**n) // 2
    assert "451" in last_error[0]
    assert sink.deliveries == []


async def _start_logins(server: Harness, count: int, *, first: int = 0) -> None:
    """`count` logins, each for an address of its own and with a key of its own."""
    for n in range(first, first + count):
        await start(server, server.device(), f"user{n}@example.com")


def _dispatcher(
    server: Harness, db: Database, transport: MailTransport, *, concurrency: int = 1
) -> OutboxDispatcher:
    return OutboxDispatcher(
        store=DatabaseOutboxStore(
            db, max_failed_completions=server.settings.max_failed_completions
        ),
        keyring=server.app.state.services.keyring,
        transport=transport,
        composer=build_mail_composer(server.settings),
        clock=server.clock,
        events=server.app.state.services.events,
        poll_interval=0.1,
        concurrency=concurrency,
    )


class _SlowHandOff:
    """A mail server 50 ms away: counts the hand-offs in flight at once."""

    def __init__(self, inner: MailTransport) -> None:
        self.inner = inner
        self.in_flight = 0
        self.most_in_flight = 0

    async def send(self, *, recipient: str, message: bytes, message_key: str) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.05)
            await self.inner.send(recipient=recipient, message=message, message_key=message_key)
        finally:
            self.in_flight -= 1


async def test_a_process_hands_off_up_to_outbox_concurrency_messages_at_once_each_once(
    tmp_path: Path, sink: SmtpSink, backend: str
) -> None:
    # docs/design.md §12.2: lanes of one dispatcher claim different rows, as competing processes do.
    async with mail_server(tmp_path, sink, backend=backend) as server:
        await _start_logins(server, 12)
        slow = _SlowHandOff(build_mail_transport(server.settings))
        dispatcher = _dispatcher(server, server.app.state.services.db, slow, concurrency=4)
        assert await dispatcher.dispatch_due() == 12
        rows = outbox_rows(server)
    assert slow.most_in_flight == 4
    assert {row[3] for row in rows} == {"sent"}
    assert {row[4] for row in rows} == {1}
    per_message = Counter(d.message["Message-ID"] for d in sink.deliveries)
    assert len(per_message) == 12 and set(per_message.values()) == {1}


async def test_with_several_lanes_an_outage_still_costs_one_try_per_round(
    tmp_path: Path, backend: str
) -> None:
    with smtp_sink(tmp_path / "smtp", running=False) as sink:
        async with mail_server(tmp_path, sink, backend=backend) as server:
            await _start_logins(server, 12)
            dispatcher = _dispatcher(
                server,
                server.app.state.services.db,
                build_mail_transport(server.settings),
                concurrency=4,
            )
            handled = await dispatcher.dispatch_due()
            rows = outbox_rows(server)
    # The first message of a round goes alone: an outage costs one try of one message.
    assert handled == 1
    assert sum(row[4] for row in rows) == 1
    assert {row[3] for row in rows} == {"queued"}


def _login_rows(server: Harness) -> list[tuple[Any, ...]]:
    return [row for row in outbox_rows(server) if row[1] == "login_link"]


def _set(server: Harness, column: str, value: int, attempt_id: str) -> None:
    assert column in ("consumed_at", "failed_count")
    server.query(
        f"UPDATE login_attempts SET {column} = ? WHERE id = ? RETURNING id",  # noqa: S608
        value,
        attempt_id,
    )


async def test_tries_go_with_their_row_when_housekeeping_removes_it(
    tmp_path: Path, sink: SmtpSink
) -> None:
    # docs/design.md §6: the tries of the rows being purged, first, so none outlives its row.
    from server.storage.housekeeping import KEEP_FINISHED_SECONDS, purge_expired

    async with mail_server(tmp_path, sink) as server:
        await start(server, server.device(), "a@example.com")
        await server.deliver()
        db = server.app.state.services.db
        await purge_expired(db, now=server.clock.now() + KEEP_FINISHED_SECONDS)
        assert len(server.query("SELECT * FROM outbox_tries")) == 1  # its row is still there
        await purge_expired(db, now=server.clock.now() + KEEP_FINISHED_SECONDS + 1)
        assert server.query("SELECT COUNT(*) FROM outbox") == [(0,)]
        assert server.query("SELECT COUNT(*) FROM outbox_tries") == [(0,)]


async def test_a_claim_takes_at_most_its_limit_of_rows_oldest_first(
    tmp_path: Path, sink: SmtpSink, backend: str
) -> None:
    # docs/design.md §12.2 step 1: one statement claims a batch. On PostgreSQL `id IN (subquery)`
    # may run its subquery again for the outer rows and take more than its LIMIT.
    async with mail_server(tmp_path, sink, backend=backend) as server:
        for second in range(3):
            await _start_logins(server, 3, first=3 * second)
            server.clock.advance(1)
        due = [row[0] for row in outbox_rows(server)]
        dispatcher = _dispatcher(
            server, server.app.state.services.db, build_mail_transport(server.settings)
        )
        claimed = []
        for limit in (1, 2, 4, 4):
            batch = await dispatcher._claim(limit)
            assert len(batch) == min(limit, len(due) - len(claimed))
            claimed += [claim.id for claim in batch]
        leased = [row[0] for row in outbox_rows(server) if row[4] == 1]
    assert claimed == due
    assert sorted(leased) == sorted(due)


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


async def test_on_postgres_a_claim_reads_no_more_rows_than_it_takes_whatever_the_statistics_say(
    tmp_path: Path, sink: SmtpSink
) -> None:
    # docs/design.md §12.2 step 1. A busy outbox leaves statistics taken while the queue was all but
    # empty. With them, the planner once found the claimed rows through the claim index and
    # walked every queued entry to do so (920 of them under the login measurement).
    limit = 4
    async with mail_server(tmp_path, sink, backend="postgresql") as server:
        url, now = server.database_url, server.clock.now()
        rows = (
            "INSERT INTO outbox (id, kind, recipient, message_id, status, not_before, created_at) "
            "SELECT ?::text || i, 'login_link', 'a@example.com', 'm' || i, ?, ?, ? "
            "FROM generate_series(1, ?) AS i"
        )
        backends.execute(url, "ALTER TABLE outbox SET (autovacuum_enabled = false)")
        backends.execute(url, rows, "q", "queued", now - 10, now - 10, 5)
        backends.execute(url, rows, "s", "sent", now - 10, now - 10, 5000)
        backends.execute(url, "ANALYZE outbox")
        backends.execute(url, rows, "r", "queued", now - 10, now - 10, 1000)
        values = {"now": now, "lease": now + LEASE_SECONDS, "limit": limit, "max_failed": 5}
        claim = re.sub(r":(\w+)", lambda m: str(values[m.group(1)]), _CLAIM["postgresql"])
        [(plan,)] = backends.query(url, "EXPLAIN (ANALYZE, FORMAT JSON) " + claim)
    scans = [node for node in _plan_nodes(plan[0]["Plan"]) if node.get("Relation Name") == "outbox"]
    assert scans
    for scan in scans:
        assert scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0) <= limit, scan
