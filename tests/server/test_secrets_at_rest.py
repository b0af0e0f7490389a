"""No half, refresh token or access token rests in the database or reaches the logs
(SPEC.md §5.3; threats.md C5)."""

from __future__ import annotations

import logging

import pytest
from support.harness import Harness
from support.mail_harness import record_rendering

from server.mail.orders import LoginLinkOrder, NewDeviceOrder, decode_order

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
    # A second attempt stays queued, so its sealed order is in the dump too.
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


def _open_order(server: Harness, outbox_id: str) -> bytes:
    ((sealed,),) = server.query("SELECT sealed_message FROM outbox WHERE id = ?", outbox_id)
    opened: bytes = server.app.state.services.keyring.open(sealed, context=f"outbox:{outbox_id}")
    return opened


async def test_login_start_stores_no_rendered_mail_and_no_plain_half(
    server: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendering = record_rendering(monkeypatch)
    device = server.device()
    response = await server.start(device, "a@example.com", device_name="Ann on the train")
    assert response.status_code == 202
    assert rendering == []  # neither the QR code nor the message is made in the request
    ((outbox_id, kind),) = server.query("SELECT id, kind FROM outbox")
    opened = _open_order(server, outbox_id)
    dump = server.dump_database()
    await server.deliver()
    assert rendering == ["qr_png", "login_link"]  # the dispatcher makes them
    (mail,) = server.mail.sent
    link = mail.link_text()
    email_half = mail.login_link().email_half
    # What rests is an order, sealed: no MIME message, and neither the link nor its half in
    # plain form anywhere in the database.
    order = decode_order(opened)
    assert kind == "login_link" and isinstance(order, LoginLinkOrder)
    assert order.link == link and order.device_name == "Ann on the train"
    assert not opened.startswith((b"From:", b"MIME-Version:", b"Content-Type:"))
    assert email_half not in dump and link not in dump
    assert "Ann on the train" in dump  # the device name rests in login_attempts; the dump is real


async def test_completion_queues_its_notice_as_an_order_and_renders_nothing(
    server: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = server.device()
    started, email_half = await server.start_and_read_link(device, "a@example.com")
    rendering = record_rendering(monkeypatch)
    response = await server.complete(
        device,
        attempt_id=started["attempt_id"],
        device_half=started["device_half"],
        email_half=email_half,
    )
    assert response.status_code == 200
    assert rendering == []
    ((outbox_id,),) = server.query("SELECT id FROM outbox WHERE kind = 'new_device'")
    ((session_id,),) = server.query("SELECT id FROM sessions")
    order = decode_order(_open_order(server, outbox_id))
    assert isinstance(order, NewDeviceOrder) and order.session_id == session_id
    assert order.signed_in_at == server.clock.now()
    await server.deliver()
    assert rendering == ["new_device"]
    assert server.mail.sent[-1].message["Message-ID"] == order.message_id


async def test_signing_key_rests_sealed(server: Harness) -> None:
    ((public_jwk, _sealed),) = server.query(
        "SELECT public_jwk, sealed_private_key FROM signing_keys"
    )
    assert '"d"' not in public_jwk
    jwks = (await server.client.get("/.well-known/jwks.json")).json()
    assert all("d" not in key for key in jwks["keys"])
    assert jwks["keys"][0]["kid"] == server.app.state.services.keys.key_set.current.kid
