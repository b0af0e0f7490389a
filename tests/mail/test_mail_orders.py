"""Queued mail is an order, rendered by the dispatcher (docs/design.md §12.1, §12.2; SPEC.md §7.4):
rendering is deterministic, an order that cannot be read or rendered is abandoned at once and never
guessed at, and rows queued as rendered messages still go out unchanged."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from support.harness import Harness, running_server
from support.mail_harness import outbox_rows, tries_of

from protocol.encoding import b64url_encode
from server.app import build_mail_composer
from server.mail.compose import MailComposer
from server.mail.delivery import MAX_BACKOFF_SECONDS
from server.mail.orders import (
    LoginLinkOrder,
    MailOrder,
    NewDeviceOrder,
    NoAccountOrder,
    OrderError,
    decode_order,
    encode_order,
)
from server.mail.outbox import LEASE_SECONDS
from server.settings import Settings

pytestmark = pytest.mark.anyio

HOSTILE = '"><a href=//evil>x</a> Zo\u00eb\u2019s phone =_0.'
LINK = "https://auth.example.test/l#attempt_id=AAAAAAAAAAAAAAAAAAAAAA&email_half=" + "B" * 43
ORDERS: list[MailOrder] = [
    LoginLinkOrder(
        recipient="a@example.com",
        message_id="<m1@auth.example.test>",
        link=LINK,
        device_name=HOSTILE,
        requested_at=1_800_000_000,
        expires_in_minutes=10,
        check_phrase="acid bake cable dance",
    ),
    NoAccountOrder(
        recipient="a@example.com", message_id="<m2@auth.example.test>", requested_at=1_800_000_000
    ),
    NewDeviceOrder(
        recipient="a@example.com",
        message_id="<m3@auth.example.test>",
        device_name=None,
        key_alg="ES256",
        signed_in_at=1_800_000_042,
        session_id="C" * 22,
        check_phrase="acid bake cable dance",
    ),
]


@pytest.mark.parametrize("order", ORDERS, ids=lambda order: order.kind)
def test_order_rendered_twice_is_byte_identical(order: MailOrder) -> None:
    # Two composers, as two server processes would hold, each rendering the stored document.
    first = decode_order(encode_order(order)).render(build_mail_composer(Settings()))
    second = decode_order(encode_order(order)).render(build_mail_composer(Settings()))
    assert first == second
    assert f"Message-ID: {order.message_id}".encode() in first
    # No boundary of the standard library's random form ("===============<19 digits>==").
    assert b"===============" not in first


def test_orders_survive_the_round_trip_and_are_read_strictly() -> None:
    for order in ORDERS:
        assert decode_order(encode_order(order)) == order
    secret = "s3cret-value"
    base = {"v": 1, "kind": "no_account", "recipient": secret, "message_id": "<m>"}
    refused = [
        b"not json",
        b"[1]",
        b'{"v": 1, "v": 1}',
        b'{"v": NaN}',
        b'{"v": 2, "kind": "no_account"}',
        b'{"v": true, "kind": "no_account"}',
        json.dumps({**base, "kind": "telegram", "requested_at": 1}).encode(),
        json.dumps(base).encode(),
        json.dumps({**base, "requested_at": 1, "cc": secret}).encode(),
        json.dumps({**base, "requested_at": "1"}).encode(),
        json.dumps({**base, "requested_at": True}).encode(),
        json.dumps({**base, "requested_at": 1, "recipient": None}).encode(),
    ]
    for document in refused:
        with pytest.raises(OrderError) as caught:
            decode_order(document)
        assert secret not in str(caught.value)  # its text ends up in logs and outbox_tries


def test_an_order_keeps_its_link_out_of_its_repr() -> None:
    assert LINK not in repr(ORDERS[0]) and "email_half" not in repr(ORDERS[0])


async def test_rendering_failure_abandons_the_message_without_crashing_the_dispatcher(
    tmp_path: Path,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    links: list[str] = []

    def broken(self: MailComposer, **kwargs: Any) -> bytes:
        links.append(kwargs["link"])
        raise RuntimeError(f"cannot lay out {kwargs['link']}")

    monkeypatch.setattr(MailComposer, "login_link", broken)
    async with running_server(tmp_path, backend=backend) as server:
        assert (await server.start(server.device(), "a@example.com")).status_code == 202
        server.clock.advance(1)  # claimed after the broken one, in the same round
        outbox_id = _new_outbox_id()
        _queue(
            server,
            outbox_id,
            "no_account",
            "b@example.com",
            encode_order(
                NoAccountOrder(
                    recipient="b@example.com",
                    message_id=_message_id(outbox_id),
                    requested_at=server.clock.now(),
                )
            ),
        )
        assert await server.deliver() == 2
        # Never tried again: not after the lease, not after the longest backoff.
        server.clock.advance(LEASE_SECONDS + MAX_BACKOFF_SECONDS)
        assert await server.deliver() == 0
        ((broken_id, kind, _, status, tries, _), _) = outbox_rows(server)
        recorded = tries_of(server, broken_id)
        (sealed,) = server.query("SELECT sealed_message FROM outbox WHERE id = ?", broken_id)
        dump = server.dump_database()
    assert (kind, status, tries) == ("login_link", "abandoned", 1)
    assert [(n, outcome, detail) for n, _, outcome, detail in recorded] == [
        (1, "abandoned", "cannot render: RuntimeError")
    ]
    assert sealed == (None,)
    assert [mail.recipient for mail in server.mail.sent] == ["b@example.com"]
    assert "cannot be rendered" in caplog.text
    assert "unexpected failure" not in caplog.text
    (link,) = links
    assert link not in caplog.text and link not in dump


async def test_an_unexpected_rendering_failure_gives_up_a_login_mail_only_with_its_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    links: list[str] = []

    def broken(self: MailComposer, **kwargs: Any) -> bytes:
        links.append(kwargs["link"])
        raise RuntimeError(f"cannot lay out {kwargs['link']}")

    monkeypatch.setattr(MailComposer, "login_link", broken)
    async with running_server(tmp_path) as server:
        assert (await server.start(server.device(), "a@example.com")).status_code == 202
        assert await server.deliver() == 1
        ((outbox_id, kind, _, status, _, _),) = outbox_rows(server)
    assert (kind, status) == ("login_link", "abandoned")
    events = [event for event in server.events if event.name == "mail.unrenderable"]
    assert [dict(event.fields) for event in events] == [
        {"outbox_id": outbox_id, "kind": "login_link", "error": "RuntimeError"}
    ]
    (link,) = links
    assert link not in repr(server.events)


async def test_a_login_mail_that_cannot_be_rendered_is_given_up_with_an_event_naming_it(
    tmp_path: Path, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    email_half = b64url_encode(os.urandom(32))
    link = LINK.replace("B" * 43, email_half)
    async with running_server(tmp_path, backend=backend) as server:
        outbox_id = _new_outbox_id()
        # A Message-ID that would add a header of its own (SPEC.md §7.3, D6): refused when the
        # message is built, however often it is tried.
        order = LoginLinkOrder(
            recipient="a@example.com",
            message_id=_message_id(outbox_id) + "\r\nBcc: victim@example.net",
            link=link,
            device_name=None,
            requested_at=server.clock.now(),
            expires_in_minutes=10,
            check_phrase="acid bake cable dance",
        )
        _queue(server, outbox_id, "login_link", "a@example.com", encode_order(order))
        assert await server.deliver() == 1
        server.clock.advance(LEASE_SECONDS + MAX_BACKOFF_SECONDS)
        assert await server.deliver() == 0
        ((_, kind, _, status, tries, _),) = outbox_rows(server)
        recorded = tries_of(server, outbox_id)
        dump = server.dump_database()
    assert server.mail.sent == []
    assert (kind, status, tries) == ("login_link", "abandoned", 1)
    assert [(outcome, detail) for _, _, outcome, detail in recorded] == [
        ("abandoned", "cannot render: HeaderError")
    ]
    events = [event for event in server.events if event.name == "mail.unrenderable"]
    assert [dict(event.fields) for event in events] == [
        {"outbox_id": outbox_id, "kind": "login_link", "error": "HeaderError"}
    ]
    (line,) = [r.getMessage() for r in caplog.records if "cannot be rendered" in r.getMessage()]
    assert outbox_id in line and "HeaderError" in line
    for text in (caplog.text, repr(server.events), dump):
        assert email_half not in text and "victim" not in text


async def test_the_dispatcher_renders_in_a_worker_thread_not_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    login_link = MailComposer.login_link

    def recording(self: MailComposer, **kwargs: Any) -> bytes:
        threads.append(threading.get_ident())
        return login_link(self, **kwargs)

    monkeypatch.setattr(MailComposer, "login_link", recording)
    async with running_server(tmp_path) as server:
        assert (await server.start(server.device(), "a@example.com")).status_code == 202
        assert await server.deliver() == 1
    assert len(server.mail.sent) == 1
    assert len(threads) == 1 and threads[0] != threading.get_ident()


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b'{"v":2,"kind":"no_account"}', "unknown order version 2"),
        (b'{"v":1,"kind":"fax","recipient":"a@example.com"}', "unknown order kind"),
        (b"{broken", "the order is not valid JSON"),
        (b'{"v":1,"v":1}', "duplicate JSON member 'v'"),
    ],
)
async def test_an_order_this_server_cannot_read_is_abandoned_not_guessed(
    tmp_path: Path, document: bytes, reason: str
) -> None:
    async with running_server(tmp_path) as server:
        outbox_id = _new_outbox_id()
        _queue(server, outbox_id, "no_account", "a@example.com", document)
        assert await server.deliver() == 1
        ((_, _, _, status, _, _),) = outbox_rows(server)
        recorded = tries_of(server, outbox_id)
    assert status == "abandoned" and server.mail.sent == []
    assert [(outcome, detail) for _, _, outcome, detail in recorded] == [
        ("abandoned", f"cannot render: {reason}")
    ]
    assert [(event.name, dict(event.fields)) for event in server.events] == [
        ("mail.unrenderable", {"outbox_id": outbox_id, "kind": "no_account", "error": "OrderError"})
    ]


async def test_a_row_whose_recipient_was_changed_in_the_database_is_not_sent(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server:
        assert (await server.start(server.device(), "a@example.com")).status_code == 202
        ((outbox_id,),) = server.query(
            "UPDATE outbox SET recipient = 'mallory@example.net' RETURNING id"
        )
        await server.deliver()
        ((_, _, _, status, _, _),) = outbox_rows(server)
        ((_, _, outcome, detail),) = tries_of(server, outbox_id)
    assert server.mail.sent == []
    assert (status, outcome) == ("abandoned", "abandoned")
    assert detail == "cannot render: the order is for another recipient than its row"


async def test_a_message_queued_rendered_by_an_earlier_release_is_sent_unchanged(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server:
        outbox_id = _new_outbox_id()
        rendered = build_mail_composer(server.settings).no_account(
            recipient="a@example.com",
            message_id=_message_id(outbox_id),
            requested_at=server.clock.now(),
        )
        _queue(server, outbox_id, "no_account", "a@example.com", rendered)
        assert await server.deliver() == 1
        ((_, _, _, status, _, _),) = outbox_rows(server)
    assert status == "sent"
    assert [mail.raw for mail in server.mail.sent] == [rendered]


def _new_outbox_id() -> str:
    return b64url_encode(os.urandom(16))


def _message_id(outbox_id: str) -> str:
    return f"<{outbox_id}@auth.example.test>"


def _queue(server: Harness, outbox_id: str, kind: str, recipient: str, plaintext: bytes) -> None:
    """A queued row holding `plaintext`, sealed as the server seals it."""
    keyring = server.app.state.services.keyring
    sealed = keyring.seal(plaintext, context=f"outbox:{outbox_id}", random_bytes=os.urandom)
    now = server.clock.now()
    server.query(
        "INSERT INTO outbox (id, kind, attempt_id, recipient, message_id, sealed_message, status, "
        "tries, not_before, created_at) VALUES (?, ?, NULL, ?, ?, ?, 'queued', 0, ?, ?) "
        "RETURNING id",
        outbox_id,
        kind,
        recipient,
        _message_id(outbox_id),
        sealed,
        now,
        now,
    )
