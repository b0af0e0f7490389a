"""SMTP on the wire: one recipient, TLS as configured, and each reply mapped to the right outcome
(docs/design.md §12.2, §13; threats.md D1, D4, D6, I2, I3)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.mail_harness import (
    complete_from,
    deliver_until_idle,
    delivery_for,
    mail_server,
    outbox_rows,
    start,
    tries_of,
)
from support.smtp_sink import SMTP_PASSWORD, SMTP_USER, SmtpSink, smtp_sink

pytestmark = pytest.mark.anyio


async def test_rcpt_to_is_exactly_the_stored_address_with_one_to_header_d1_d4_d6(
    tmp_path: Path, sink: SmtpSink
) -> None:
    async with mail_server(tmp_path, sink, mail_from="Example <login@example.test>") as server:
        first = server.device()
        started = await start(server, first, "Mike@Example.org")
        await server.deliver()
        assert (await complete_from(server, first, started, sink.deliveries[0])).status_code == 200
        # Another spelling of the same account: mail goes to the stored address only.
        second = server.device()
        started = await start(server, second, "MIKE@EXAMPLE.ORG")
        await server.deliver()
        delivery = delivery_for(sink, started["attempt_id"])
    assert delivery.rcpt_tos == ("Mike@example.org",)
    assert set(sink.recorder.rcpt_seen) == {"Mike@example.org"}
    assert len(sink.recorder.rcpt_seen) == len(sink.deliveries)  # one RCPT per message
    assert delivery.mail_from == "login@example.test"
    message = delivery.message
    assert message.get_all("To") == ["Mike@example.org"]
    for header in ("Cc", "Bcc", "Reply-To"):
        assert message.get_all(header) is None
    assert message["From"] == "Example <login@example.test>"
    assert message["Auto-Submitted"] == "auto-generated"
    # STARTTLS, then AUTH with the percent-decoded credentials.
    assert delivery.tls and delivery.starttls
    assert delivery.login == SMTP_USER
    assert sink.recorder.logins[0] == (SMTP_USER, SMTP_PASSWORD)


async def test_implicit_tls_smtps_delivers(tmp_path: Path) -> None:
    with smtp_sink(tmp_path / "smtp", tls="implicit") as sink:
        async with mail_server(tmp_path, sink) as server:
            started = await start(server, server.device(), "a@example.com")
            await server.deliver()
            delivery = delivery_for(sink, started["attempt_id"])
    assert delivery.tls and not delivery.starttls
    assert delivery.login == SMTP_USER


async def test_plain_local_relay_delivers_without_tls_or_credentials(tmp_path: Path) -> None:
    with smtp_sink(tmp_path / "smtp", tls="none") as sink:
        assert sink.url().startswith("smtp+insecure://127.0.0.1:")
        async with mail_server(tmp_path, sink) as server:
            started = await start(server, server.device(), "a@example.com")
            await server.deliver()
            delivery = delivery_for(sink, started["attempt_id"])
    assert not delivery.tls
    assert delivery.login is None


async def test_starttls_required_but_not_offered_sends_nothing_in_clear(tmp_path: Path) -> None:
    with smtp_sink(tmp_path / "smtp", tls="none") as sink:
        # The server offers no STARTTLS, but the URL asks for it.
        async with mail_server(tmp_path, sink, smtp_url=sink.url(scheme="smtp")) as server:
            await start(server, server.device(), "a@example.com")
            await server.deliver()
            ((outbox_id, _, _, status, tries, _),) = outbox_rows(server)
            recorded = tries_of(server, outbox_id)
    assert sink.recorder.ehlos == 1
    assert sink.recorder.rcpt_seen == [] and sink.deliveries == []
    assert sink.recorder.logins == []  # the password never crossed in clear either
    assert (status, tries) == ("queued", 1)
    ((_, _, outcome, detail),) = recorded
    assert outcome == "retry"
    assert "STARTTLS" in detail


async def test_an_untrusted_certificate_sends_nothing(tmp_path: Path) -> None:
    with smtp_sink(tmp_path / "smtp", tls="implicit") as sink:
        # No CA file: the self-signed certificate is not trusted, so the TLS handshake fails.
        async with mail_server(tmp_path, sink, smtp_tls_ca_file=None) as server:
            await start(server, server.device(), "a@example.com")
            await server.deliver()
            ((outbox_id, _, _, status, _, _),) = outbox_rows(server)
            ((_, _, outcome, detail),) = tries_of(server, outbox_id)
    assert sink.deliveries == [] and sink.recorder.logins == []
    assert status == "queued" and outcome == "retry"
    assert "TLS" in detail or "certificate" in detail.lower()


async def test_451_then_421_then_accept_is_delivered_after_backoff_i3(
    tmp_path: Path, sink: SmtpSink
) -> None:
    sink.recorder.replies = ["451 4.3.0 try again later", "421 4.3.2 service shutting down"]
    async with mail_server(tmp_path, sink) as server:
        device = server.device()
        started = await start(server, device, "a@example.com")
        await server.deliver()
        ((outbox_id, _, _, status, tries, not_before),) = outbox_rows(server)
        assert (status, tries) == ("queued", 1)
        assert not_before > server.clock.now()  # backing off: 2^1 s with jitter, plus 1
        assert await server.deliver() == 0  # not due yet
        server.clock.advance(not_before - server.clock.now())
        await server.deliver()
        ((_, _, _, status, tries, not_before),) = outbox_rows(server)
        assert (status, tries) == ("queued", 2)
        server.clock.advance(not_before - server.clock.now())
        await server.deliver()
        ((_, _, _, status, tries, _),) = outbox_rows(server)
        recorded = tries_of(server, outbox_id)
        completed = await complete_from(
            server, device, started, delivery_for(sink, started["attempt_id"])
        )
    assert (status, tries) == ("sent", 3)
    assert [(n, outcome) for n, _, outcome, _ in recorded] == [
        (1, "retry"),
        (2, "retry"),
        (3, "sent"),
    ]
    assert "451" in recorded[0][3] and "421" in recorded[1][3]
    assert completed.status_code == 200


async def test_550_abandons_at_once_and_records_the_try_i3(tmp_path: Path, sink: SmtpSink) -> None:
    sink.recorder.reject_rcpt = "550 5.1.1 no such mailbox"
    async with mail_server(tmp_path, sink) as server:
        await start(server, server.device(), "nobody@example.com")
        await server.deliver()
        server.clock.advance(3600)
        await server.deliver()
        ((outbox_id, _, _, status, tries, _),) = outbox_rows(server)
        recorded = tries_of(server, outbox_id)
        (sealed,) = server.query("SELECT sealed_message FROM outbox")
    assert (status, tries) == ("abandoned", 1)
    assert len(sink.recorder.rcpt_seen) == 1 and sink.deliveries == []
    ((_, _, outcome, detail),) = recorded
    assert outcome == "abandoned" and "550" in detail
    assert sealed == (None,)


async def test_a_server_slower_than_the_timeout_is_retried_i2(
    tmp_path: Path, sink: SmtpSink
) -> None:
    sink.recorder.slow = ("EHLO", 1.5)
    async with mail_server(tmp_path, sink, smtp_timeout=0.3) as server:
        device = server.device()
        started = await start(server, device, "a@example.com")
        began = time.monotonic()
        await server.deliver()
        assert time.monotonic() - began < 1.4  # the timeout, not the server, ended the try
        ((outbox_id, _, _, status, _, _),) = outbox_rows(server)
        assert status == "queued" and sink.deliveries == []
        sink.recorder.slow = None
        await deliver_until_idle(server)
        recorded = tries_of(server, outbox_id)
        completed = await complete_from(
            server, device, started, delivery_for(sink, started["attempt_id"])
        )
    assert [outcome for _, _, outcome, _ in recorded] == ["retry", "sent"]
    assert "timed out" in recorded[0][3]
    assert completed.status_code == 200


async def test_a_late_reply_to_data_gives_a_duplicate_with_identical_bytes_i2(
    tmp_path: Path, sink: SmtpSink
) -> None:
    # The server takes the message but answers after the client gave up: the dispatcher must
    # retry, and the second copy is the same message (same link, same Message-ID).
    sink.recorder.slow = ("DATA", 1.0)
    async with mail_server(tmp_path, sink, smtp_timeout=0.3) as server:
        device = server.device()
        started = await start(server, device, "a@example.com")
        await server.deliver()
        deadline = time.monotonic() + 5
        while not sink.deliveries and time.monotonic() < deadline:
            time.sleep(0.05)  # the sink finishes its slow reply on its own thread
        sink.recorder.slow = None
        await deliver_until_idle(server)
        first, second = sink.deliveries
        completed = await complete_from(server, device, started, second)
    assert first.data == second.data
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert first.link() == second.link()
    assert completed.status_code == 200


async def test_start_latency_does_not_depend_on_smtp_f4_i2(tmp_path: Path, sink: SmtpSink) -> None:
    sink.recorder.slow = ("EHLO", 1.5)
    async with mail_server(tmp_path, sink, smtp_timeout=5.0) as server:
        began = time.monotonic()
        for n in range(3):
            await start(server, server.device(), f"user{n}@example.com")
        elapsed = time.monotonic() - began
        # The request path never opens an SMTP connection; only the dispatcher does.
        assert sink.recorder.ehlos == 0
        assert elapsed < 1.5
        sink.recorder.slow = None
        await server.deliver()
    assert sink.recorder.ehlos == 2 * 3  # EHLO before and after STARTTLS, once per message
    assert len(sink.deliveries) == 3


async def test_a_rejected_login_is_a_configuration_error_retried_not_abandoned(
    tmp_path: Path, sink: SmtpSink
) -> None:
    wrong = sink.url().replace("p%40ss", "wrong")
    async with mail_server(tmp_path, sink, smtp_url=wrong) as server:
        await start(server, server.device(), "a@example.com")
        await server.deliver()
        ((outbox_id, _, _, status, _, _),) = outbox_rows(server)
        ((_, _, outcome, detail),) = tries_of(server, outbox_id)
    assert sink.recorder.rcpt_seen == [] and sink.deliveries == []
    assert (status, outcome) == ("queued", "retry")
    assert detail.startswith("AUTH: 535")
