"""`GET /metrics` in-process: who may read it, what its labels may hold, the outbox gauges read
at scrape time, and the counts of the database layer (README "Metrics"). The counts summed
across worker processes are tested through `splitlink serve` in
tests/integration/test_metrics_across_workers.py."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from support.harness import Harness, running_server
from support.metrics import Scrape

from server import metrics
from server.errors import TemporarilyUnavailable
from server.events import SecurityEvent
from server.http import UNMATCHED_ROUTE
from server.metrics import OTHER, count_event, exposition
from server.routes.metrics import scrape_allowed
from server.scrape_gauges import OutboxState, ScrapeTimeGauges, read_outbox_state
from server.settings import Settings
from server.storage.database import Connection, Database, TransactionConflict
from server.storage.health import QueuedMail

pytestmark = pytest.mark.anyio

# The in-process client's address (support/harness.py).
CLIENT_NETWORK = "203.0.113.0/24"


@pytest.fixture
async def operated(tmp_path: Path, backend: str) -> AsyncIterator[Harness]:
    """A server whose metrics the test client may read."""
    async with running_server(
        tmp_path, backend=backend, metrics_allowed_networks=[CLIENT_NETWORK]
    ) as harness:
        yield harness


async def scrape(server: Harness) -> Scrape:
    response = await server.client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


async def test_a_scrape_from_outside_the_allowed_networks_looks_like_an_unknown_path(
    server: Harness,
) -> None:
    # Loopback alone by default; the test client is 203.0.113.7.
    refused = await server.client.get("/metrics")
    unknown = await server.client.get("/no-such-path")
    assert refused.status_code == unknown.status_code == 404
    assert refused.json() == unknown.json()
    assert "splitlink_" not in refused.text


def test_the_allowed_networks_default_to_loopback_and_match_mapped_ipv4_clients() -> None:
    networks = Settings().metrics_allowed_networks
    assert scrape_allowed("127.0.0.1", networks)
    assert scrape_allowed("::1", networks)
    assert scrape_allowed("::ffff:127.0.0.1", networks)
    assert not scrape_allowed("10.0.0.1", networks)
    assert not scrape_allowed("unknown", networks)
    assert not scrape_allowed("127.0.0.1", [])


async def test_every_metric_is_described_in_the_prometheus_text_format(operated: Harness) -> None:
    result = await scrape(operated)
    assert "# HELP splitlink_logins_failed_total " in result.text
    assert "# TYPE splitlink_http_request_duration_seconds histogram" in result.text
    for family in (
        "splitlink_http_requests",
        "splitlink_http_request_duration_seconds",
        "splitlink_http_requests_in_progress",
        "splitlink_logins_started",
        "splitlink_logins_completed",
        "splitlink_logins_failed",
        "splitlink_attempts_locked",
        "splitlink_refreshes",
        "splitlink_refresh_token_reuse_detected",
        "splitlink_sessions_ended",
        "splitlink_rate_limit_refusals",
        "splitlink_outbox_tries",
        "splitlink_database_conflict_retries",
        "splitlink_database_errors",
        "splitlink_database_up",
        "splitlink_outbox_queued_messages",
        "splitlink_outbox_oldest_queued_age_seconds",
    ):
        assert family in result.families, family
    assert result.value("splitlink_database_up") == 1


async def test_the_outbox_gauges_follow_mail_as_it_is_queued_and_sent(operated: Harness) -> None:
    before = await scrape(operated)
    assert before.value("splitlink_outbox_queued_messages") == 0
    assert before.value("splitlink_outbox_oldest_queued_age_seconds") == 0

    assert (await operated.start(operated.device(), "first@example.com")).status_code == 202
    operated.clock.advance(7)
    assert (await operated.start(operated.device(), "second@example.com")).status_code == 202
    operated.clock.advance(3)
    queued = await scrape(operated)
    assert queued.value("splitlink_outbox_queued_messages") == 2
    assert queued.value("splitlink_outbox_oldest_queued_age_seconds") == 10

    assert await operated.deliver() == 2
    sent = await scrape(operated)
    assert sent.value("splitlink_outbox_queued_messages") == 0
    assert sent.value("splitlink_outbox_oldest_queued_age_seconds") == 0
    tries = "splitlink_outbox_tries_total"
    assert sent.value(tries, outcome="sent") - before.value(tries, outcome="sent") == 2


async def test_a_failing_database_leaves_the_scrape_answering_with_database_up_at_zero(
    operated: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unavailable(query: str, values: Mapping[str, Any] | None = None) -> list[Any]:
        raise TemporarilyUnavailable()

    monkeypatch.setattr(operated.app.state.services.db, "statement", unavailable)
    result = await scrape(operated)
    assert result.value("splitlink_database_up") == 0
    assert not result.has("splitlink_outbox_queued_messages")
    assert not result.has("splitlink_outbox_oldest_queued_age_seconds")
    assert result.has("splitlink_logins_started_total")


async def test_a_database_slower_than_the_deadline_counts_as_down() -> None:
    class Stalled:
        async def queued_mail(self) -> QueuedMail:
            await asyncio.sleep(5)
            return QueuedMail(count=0, oldest_created_at=None)

    state = await read_outbox_state(Stalled(), now=0, deadline=0.05)
    assert state is None


def test_the_scrape_time_gauges_report_what_was_read() -> None:
    up = Scrape(
        exposition([ScrapeTimeGauges(OutboxState(queued=3, oldest_queued_age=42))]).decode()
    )
    assert up.value("splitlink_database_up") == 1
    assert up.value("splitlink_outbox_queued_messages") == 3
    assert up.value("splitlink_outbox_oldest_queued_age_seconds") == 42
    down = Scrape(exposition([ScrapeTimeGauges(None)]).decode())
    assert down.value("splitlink_database_up") == 0
    assert not down.has("splitlink_outbox_queued_messages")


async def test_requests_are_labelled_by_route_template_never_by_their_path(
    operated: Harness,
) -> None:
    session_id = "AAAAAAAAAAAAAAAAAAAAAA"
    await operated.client.delete(f"/v1/sessions/{session_id}")  # 401 before routing
    await operated.client.get(f"/secret-{session_id}")  # no such route
    await operated.client.request("BREW", "/metrics")  # no such method
    result = await scrape(operated)
    requests = "splitlink_http_requests_total"
    assert (
        result.value(requests, route="/v1/sessions/{session_id}", method="DELETE", status="401")
        >= 1
    )
    assert result.value(requests, route=UNMATCHED_ROUTE, method="GET", status="404") >= 1
    assert result.value(requests, route="/metrics", method=OTHER, status="405") >= 1
    assert not any(session_id in value for value in result.label_values())


def test_a_reason_outside_the_known_set_is_counted_as_other() -> None:
    before = Scrape(exposition().decode())
    count_event(SecurityEvent("login.failed", at=0, fields={"reason": "user@example.com"}))
    count_event(SecurityEvent("sessions.revoked_all", at=0, fields={"user_id": "u", "count": 3}))
    after = Scrape(exposition().decode())
    failed = "splitlink_logins_failed_total"
    assert after.value(failed, reason=OTHER) - before.value(failed, reason=OTHER) == 1
    ended = "splitlink_sessions_ended_total"
    assert after.value(ended, reason="logout_all") - before.value(ended, reason="logout_all") == 3
    assert not any("@" in value for value in after.label_values())


class RecordingObserver:
    def __init__(self) -> None:
        self.retries = 0
        self.failures: list[str] = []

    def conflict_retried(self) -> None:
        self.retries += 1

    def failed(self, kind: str) -> None:
        self.failures.append(kind)


async def test_conflicts_run_again_and_failures_that_may_pass_are_reported(
    tmp_path: Path,
) -> None:
    observer = RecordingObserver()
    db = Database(f"sqlite:///{tmp_path / 'observed.db'}", observer=observer)
    await db.connect()
    try:
        calls = 0

        async def conflicts_once(conn: Connection) -> int:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise TransactionConflict()
            return calls

        assert await db.run(conflicts_once) == 2
        assert observer.retries == 1

        async def disk_fails(conn: Connection) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        with pytest.raises(TemporarilyUnavailable):
            await db.run(disk_fails)
        assert observer.failures == ["unavailable"]
    finally:
        await db.disconnect()


def test_a_killed_workers_requests_in_progress_leave_the_sum_when_a_worker_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker killed mid-request never ran `worker_stopped`; its replacement forgets its live
    # gauge, and keeps the gauges of live workers and every worker's counters.
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = int(finished.stdout)
    live = os.getpid()
    for name in (f"gauge_livesum_{dead}.db", f"gauge_livesum_{live}.db", f"counter_{dead}.db"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setattr(metrics, "_MULTIPROCESS_DIR", str(tmp_path))
    metrics.worker_started()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"counter_{dead}.db",
        f"gauge_livesum_{live}.db",
    ]
    metrics.worker_stopped()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"counter_{dead}.db"]
