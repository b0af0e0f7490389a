"""The reasons that security events carry are exactly those SPEC.md §6.12 lists, and a session's
stored `revoked_reason` is the reason of its `session.revoked` event (§6.6, §6.8)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
from support import backends
from support.harness import Harness

from protocol.encoding import b64url_encode

if TYPE_CHECKING:
    from conftest import Ops

pytestmark = pytest.mark.anyio

# SPEC.md §6.12, table of events.
LOGIN_FAILED_REASONS = {
    "unknown_attempt",
    "mismatch",
    "consumed",
    "locked",
    "expired",
    "no_account",
}
SESSION_REVOKED_REASONS = {"refresh_token_reused", "revocation", "ended_by_user", "logout"}


def _random_half() -> str:
    return b64url_encode(os.urandom(32))


async def test_session_revocations_report_the_documented_reasons_and_store_them(
    server: Harness, ops: Ops
) -> None:
    revoked = await ops.sign_in("revoked@example.com")
    deleted = await ops.sign_in("deleted@example.com")
    logged_out = await ops.sign_in("out@example.com")
    reused = await ops.sign_in("reused@example.com")

    assert (await ops.revoke(revoked.refresh_token)).status_code == 200
    response = await ops.call(
        deleted.device, "DELETE", f"/v1/sessions/{deleted.session_id}", deleted.access_token
    )
    assert response.status_code == 204
    response = await ops.call(logged_out.device, "POST", "/v1/logout", logged_out.access_token)
    assert response.status_code == 204
    assert (await ops.refresh(reused.device, reused.refresh_token)).status_code == 200
    server.clock.advance(server.settings.refresh_grace_period + 1)
    assert (await ops.refresh(reused.device, reused.refresh_token)).status_code == 400

    reasons = {e["session_id"]: e["reason"] for e in ops.events("session.revoked")}
    assert reasons == {
        revoked.session_id: "revocation",
        deleted.session_id: "ended_by_user",
        logged_out.session_id: "logout",
        reused.session_id: "refresh_token_reused",
    }
    assert set(reasons.values()) == SESSION_REVOKED_REASONS
    stored = dict(server.query("SELECT id, revoked_reason FROM sessions"))
    assert stored == reasons


async def test_failed_logins_report_the_documented_reasons(server: Harness) -> None:
    device = server.device()

    async def started(address: str) -> dict[str, str]:
        begun, email_half = await server.start_and_read_link(device, address)
        return {
            "attempt_id": begun["attempt_id"],
            "device_half": begun["device_half"],
            "email_half": email_half,
        }

    consumed, locked, expired, closed = [
        await started(f"{name}@example.com") for name in ("consumed", "locked", "expired", "closed")
    ]
    unknown = {**consumed, "attempt_id": b64url_encode(os.urandom(16))}
    assert (await server.complete(device, **unknown)).status_code == 400
    assert (await server.complete(device, **consumed)).status_code == 200
    assert (await server.complete(device, **consumed)).status_code == 400
    for _ in range(server.settings.max_failed_completions):
        wrong = {**locked, "email_half": _random_half()}
        assert (await server.complete(device, **wrong)).status_code == 400
    assert (await server.complete(device, **locked)).status_code == 400
    backends.execute(
        server.database_url,
        "UPDATE login_attempts SET signup_allowed = 0 WHERE id = ?",
        closed["attempt_id"],
    )
    assert (await server.complete(device, **closed)).status_code == 400
    server.clock.advance(server.settings.attempt_lifetime)
    assert (await server.complete(device, **expired)).status_code == 400

    reasons = [e.fields["reason"] for e in server.events if e.name == "login.failed"]
    assert set(reasons) == LOGIN_FAILED_REASONS
