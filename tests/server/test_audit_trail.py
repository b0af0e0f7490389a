"""The audit trail: each security event becomes a row of `audit_events`, written after the
event, never holding a secret, and purged after `audit_retention_days` (SPEC.md §6.12, §8.6)."""

from __future__ import annotations

import json

import pytest
from support.backends import execute
from support.harness import Harness
from support.invariants import violations

from server.settings import DAY
from server.storage.audit import AuditStore
from server.storage.housekeeping import purge_expired

pytestmark = pytest.mark.anyio


async def _flush(server: Harness) -> None:
    await server.app.state.audit.flush(AuditStore(server.app.state.services.db))


async def test_security_events_are_kept_with_who_where_and_details_but_no_secret(
    server: Harness,
) -> None:
    device = server.device()
    started, email_half = await server.start_and_read_link(device, "Audit@Example.com")
    response = await server.complete_started(device, started, email_half)
    assert response.status_code == 200
    tokens = response.json()
    refreshed = await server.client.post(
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers={"DPoP": device.proof("POST", "/oauth2/token")},
    )
    assert refreshed.status_code == 200
    await _flush(server)

    rows = server.query(
        "SELECT event, user_id, jkt, client_address, request_id, details FROM audit_events "
        "ORDER BY id"
    )
    assert [row[0] for row in rows] == ["login.started", "login.completed", "refresh.rotated"]
    ((user_id,),) = server.query("SELECT id FROM users")
    ((session_id,),) = server.query("SELECT id FROM sessions")
    started_row, completed_row, refresh_row = rows
    # A first login has no account at its start.
    assert started_row[1] is None
    assert completed_row[1] == refresh_row[1] == user_id
    assert {row[2] for row in rows} == {device.jkt}
    assert {row[3] for row in rows} == {"203.0.113.7"}
    assert json.loads(started_row[5]) == {"attempt_id": started["attempt_id"]}
    assert json.loads(completed_row[5]) == {
        "attempt_id": started["attempt_id"],
        "session_id": session_id,
    }
    assert json.loads(refresh_row[5]) == {"session_id": session_id}
    secrets = [
        started["device_half"],
        email_half,
        tokens["access_token"],
        tokens["refresh_token"],
        refreshed.json()["refresh_token"],
    ]
    assert violations(server.database_url, secrets=secrets) == []


async def test_a_login_succeeds_while_the_audit_trail_cannot_be_written(server: Harness) -> None:
    _execute(server, "ALTER TABLE audit_events RENAME TO audit_events_elsewhere")
    tokens = await server.login(server.device(), "unaudited@example.com")
    assert tokens["access_token"]
    audit = server.app.state.audit
    with pytest.raises(Exception):  # noqa: B017 - each driver has its own error
        await _flush(server)
    # Nothing is lost while the database refuses: the rows wait for the next flush.
    assert audit.pending == 2
    _execute(server, "ALTER TABLE audit_events_elsewhere RENAME TO audit_events")
    await _flush(server)
    assert audit.pending == 0
    events = server.query("SELECT event FROM audit_events ORDER BY id")
    assert events == [("login.started",), ("login.completed",)]


async def test_requests_under_v1_add_no_audit_row(server: Harness) -> None:
    device = server.device()
    tokens = await server.login(device, "reader@example.com")
    await _flush(server)
    assert (await server.me(device, tokens["access_token"])).status_code == 200
    assert server.app.state.audit.pending == 0


async def test_housekeeping_deletes_audit_rows_past_their_retention(server: Harness) -> None:
    await server.login(server.device(), "old@example.com")
    await _flush(server)
    db = server.app.state.services.db
    server.clock.advance(30 * DAY)
    await server.login(server.device(), "new@example.com")
    await _flush(server)
    await purge_expired(db, now=server.clock.now(), audit_retention_days=30)
    assert server.query("SELECT COUNT(*) FROM audit_events") == [(4,)]
    server.clock.advance(1)
    await purge_expired(db, now=server.clock.now(), audit_retention_days=30)
    # The first login's two rows are now 30 days and a second old.
    assert server.query("SELECT COUNT(*) FROM audit_events") == [(2,)]


def _execute(server: Harness, sql: str) -> None:
    execute(server.database_url, sql)
