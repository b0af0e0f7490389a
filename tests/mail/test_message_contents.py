"""What the messages say (SPEC.md §7.3): the check phrase, the QR code, escaping, the new-device
notice, and replaceable templates (threats.md D6, D7; NIST SP 800-63B-4 §4.6)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.mail_harness import (
    complete_from,
    delivery_for,
    mail_server,
    outbox_rows,
    start,
)
from support.qr_decode import decode_qr, read_pixels
from support.smtp_sink import Delivery, SmtpSink

from protocol.check_phrase import WORDS, check_phrase
from protocol.link import parse_login_link
from server.mail.compose import utc_time
from server.mail.mail_templates import MailTemplates, TemplateError
from server.mail.qr_image import MODULE_PIXELS, QUIET_ZONE_MODULES

pytestmark = pytest.mark.anyio

HOSTILE = '"><a href=//evil>x</a><img src=x onerror=alert(1)>'


async def test_check_phrase_in_the_mail_equals_the_one_in_the_start_response(
    tmp_path: Path, sink: SmtpSink
) -> None:
    async with mail_server(tmp_path, sink) as server:
        device = server.device()
        started = await start(server, device, "a@example.com")
        await server.deliver()
        delivery = delivery_for(sink, started["attempt_id"])
    phrase = started["check_phrase"]
    assert phrase == check_phrase(device.jkt)
    words = phrase.split(" ")
    assert len(words) == 4 and all(word in WORDS for word in words)
    assert f"Check phrase: {phrase}" in delivery.text
    assert phrase in delivery.html


async def test_check_phrase_differs_between_devices(tmp_path: Path, sink: SmtpSink) -> None:
    async with mail_server(tmp_path, sink) as server:
        phrases = {
            (await start(server, server.device(), "a@example.com"))["check_phrase"]
            for _ in range(3)
        }
    assert len(phrases) == 3


async def test_qr_code_is_an_inline_png_of_the_link(tmp_path: Path, sink: SmtpSink) -> None:
    async with mail_server(tmp_path, sink) as server:
        started = await start(server, server.device(), "a@example.com")
        await server.deliver()
        delivery = delivery_for(sink, started["attempt_id"])
    link = delivery.link()
    assert link is not None
    message = delivery.message
    assert message.get_content_type() == "multipart/alternative"
    related = [p for p in message.walk() if p.get_content_type() == "multipart/related"]
    assert len(related) == 1 and related[0].get_param("type") == "text/html"
    (image,) = [p for p in message.walk() if p.get_content_type() == "image/png"]
    content_id = image["Content-ID"].strip("<>")
    assert f'src="cid:{content_id}"' in delivery.html
    assert image.get_content_disposition() == "inline"
    data = image.get_content()
    # Read back by independent decoders: exactly the link, at level M.
    decoded = decode_qr(data)
    assert (decoded.text, decoded.ec_level) == (link, "M")
    # A 1-bit greyscale PNG of 6 pixels a module, shown at its own size, white around.
    pixels = read_pixels(data)
    modules = 4 * int(str(decoded.extra["Version"])) + 17 + 2 * QUIET_ZONE_MODULES
    assert pixels.width == pixels.height == modules * MODULE_PIXELS
    assert f'width="{pixels.width}" height="{pixels.height}"' in delivery.html
    quiet = QUIET_ZONE_MODULES * MODULE_PIXELS
    assert not any(pixels.rows[0]) and pixels.rows[quiet][quiet]


async def test_hostile_device_name_is_escaped_in_html_and_stays_out_of_headers_d6_d7(
    tmp_path: Path, sink: SmtpSink
) -> None:
    async with mail_server(tmp_path, sink) as server:
        device = server.device()
        started = await start(server, device, "a@example.com", device_name=HOSTILE)
        await server.deliver()
        delivery = delivery_for(sink, started["attempt_id"])
        completed = await complete_from(server, device, started, delivery)
        assert completed.status_code == 200
        await server.deliver()
    notice = _notice(sink)
    for mail in (delivery, notice):
        assert "<a href=//evil>" not in mail.html
        assert "<img src=x" not in mail.html
        assert "&quot;&gt;&lt;a href= evil&gt;x&lt; a&gt;&lt;img src=x" in mail.html
        # Plain text shows it as it is, but for the separators of a link (SPEC.md §7.3).
        assert '"><a href= evil>x< a><img src=x onerror=alert(1)>' in mail.text
        headers = "".join(f"{k}: {v}\n" for k, v in mail.message.items())
        assert "evil" not in headers


async def test_new_device_notice_is_queued_with_the_session_and_says_how_to_end_it(
    tmp_path: Path, sink: SmtpSink
) -> None:
    async with mail_server(tmp_path, sink, app_name="Example") as server:
        device = server.device("ES256")
        started = await start(server, device, "Ann@Example.com", device_name="Ann's phone")
        await server.deliver()
        server.clock.advance(42)
        response = await complete_from(
            server, device, started, delivery_for(sink, started["attempt_id"])
        )
        assert response.status_code == 200
        # Committed with the session: queued before any dispatch.
        kinds = [(row[1], row[3]) for row in outbox_rows(server)]
        assert kinds == [("login_link", "sent"), ("new_device", "queued")]
        ((session_id,),) = server.query("SELECT id FROM sessions")
        await server.deliver()
    notice = _notice(sink)
    assert notice.rcpt_tos == ("Ann@example.com",)
    assert notice.message["Subject"] == "New sign-in to Example"
    assert notice.link() is None
    when = server.clock.now()
    for body in (notice.text, notice.html):
        assert "Ann's phone" in body or "Ann&#x27;s phone" in body
        assert "ES256" in body
        assert utc_time(when) in body
        assert session_id in body
        assert check_phrase(device.jkt) in body
        assert "sign out everywhere" in body
        assert "list of signed-in devices" in body


async def test_failed_completion_queues_no_notice(tmp_path: Path, sink: SmtpSink) -> None:
    async with mail_server(tmp_path, sink) as server:
        device = server.device()
        started = await start(server, device, "a@example.com")
        await server.deliver()
        link = delivery_for(sink, started["attempt_id"]).link()
        assert link is not None
        wrong = await server.complete(
            server.device(),  # both halves, but another key
            attempt_id=started["attempt_id"],
            device_half=started["device_half"],
            email_half=parse_login_link(link).email_half,
        )
        assert wrong.status_code == 400
        kinds = [row[1] for row in outbox_rows(server)]
    assert kinds == ["login_link"]


async def test_a_deployment_replaces_templates_from_its_directory(
    tmp_path: Path, sink: SmtpSink
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "login_link.subject.txt").write_text("Your $app_name code: $check_phrase\n")
    (templates / "login_link.txt").write_text("Hello $recipient,\n\nTap: $link\n")
    async with mail_server(tmp_path, sink, mail_templates_dir=templates) as server:
        device = server.device()
        started = await start(server, device, "a@example.com")
        await server.deliver()
        delivery = delivery_for(sink, started["attempt_id"])
        assert (await complete_from(server, device, started, delivery)).status_code == 200
    assert delivery.message["Subject"] == f"Your splitlink code: {started['check_phrase']}"
    assert delivery.text.startswith("Hello a@example.com,")
    assert "Finish signing in on that device" in delivery.html  # the built-in HTML stays


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("login_link.txt", "Hello $user: $link\n", "unknown placeholders ['user']"),
        ("login_link.txt", "No link here\n", "must use ['link']"),
        ("new_device.html", "<p>$device at $signed_in_at costs 5$</p>", "'$'"),
    ],
)
def test_a_broken_template_stops_the_server_at_startup(
    tmp_path: Path, name: str, content: str, error: str
) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(TemplateError, match=re.escape(error)):
        MailTemplates.load(tmp_path)


def _notice(sink: SmtpSink) -> Delivery:
    (notice,) = [d for d in sink.deliveries if d.message["Subject"].startswith("New sign-in")]
    return notice
