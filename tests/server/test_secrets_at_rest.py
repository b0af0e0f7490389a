"""No half, refresh token or access token rests in the database or reaches the logs
(SPEC.md §5.3; attacks.md C5)."""

from __future__ import annotations

import logging

import pytest
from support.harness import Harness

pytestmark = pytest.mark.anyio


async def test_database_dump_and_logs_hold_no_secret(
    server: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    device = server.device()
    started, email_half = await server.start_and_read_link(device, "a@example.com")
    response = await server.complete(
        device,
        attempt_id=started["attempt_id"],
        device_half=started["device_half"],
        email_half=email_half,
    )
    tokens = response.json()
    assert (await server.me(device, tokens["access_token"])).status_code == 200
    # A second attempt stays queued, so its sealed message is in the dump too.
    pending = await server.start(device, "b@example.com")
    secrets = {
        "device half": started["device_half"],
        "email half": email_half,
        "pending device half": pending.json()["device_half"],
        "refresh token": tokens["refresh_token"],
        "access token": tokens["access_token"],
        "access token signature": tokens["access_token"].rsplit(".", 1)[1],
    }
    dump = server.dump_database()
    logs = caplog.text + "\n".join(str(e) for e in server.events)
    for name, value in secrets.items():
        assert value not in dump, f"{name} rests in the database"
        assert value not in logs, f"{name} reached the logs"
    assert "@example.com" in dump  # the dump is real
    assert "login.completed" in logs  # and so are the logs


async def test_queued_mail_is_sealed_and_deleted_after_delivery(server: Harness) -> None:
    await server.start(server.device(), "a@example.com")
    (sealed,) = server.query("SELECT sealed_message FROM outbox")
    assert sealed[0] is not None and "attempt_id" not in sealed[0]
    await server.deliver()
    assert server.query("SELECT status, sealed_message FROM outbox") == [("sent", None)]


async def test_signing_key_rests_sealed(server: Harness) -> None:
    ((public_jwk, _sealed),) = server.query(
        "SELECT public_jwk, sealed_private_key FROM signing_keys"
    )
    assert '"d"' not in public_jwk
    jwks = (await server.client.get("/.well-known/jwks.json")).json()
    assert all("d" not in key for key in jwks["keys"])
    assert jwks["keys"][0]["kid"] == server.app.state.services.keys.key_set.current.kid
