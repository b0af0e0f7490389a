"""`SPLITLINK_SMTP_URL` and the other mail settings, and `splitlink outbox` (docs/design.md §13,
§14)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.harness import running_server
from support.processes import BIN

from server.app import build_mail_transport, create_app
from server.mail.smtp import SmtpTransport, envelope_sender, parse_smtp_url
from server.mail.transport import DevMailbox
from server.settings import Settings

pytestmark = pytest.mark.anyio

PASSWORD = "s3cr3t p@ss/word"
ENCODED = "s3cr3t%20p%40ss%2Fword"


HOST = "smtp.example.com"


@pytest.mark.parametrize(
    ("url", "security", "host", "port", "username"),
    [
        (f"smtp://apikey:{ENCODED}@{HOST}", "starttls", HOST, 587, "apikey"),
        (f"smtps://u%40x.org:{ENCODED}@{HOST}", "tls", HOST, 465, "u@x.org"),
        (f"SMTP://apikey:{ENCODED}@{HOST}:2525", "starttls", HOST, 2525, "apikey"),
        (f"smtp://{HOST}", "starttls", HOST, 587, None),
        ("smtp+insecure://127.0.0.1", "none", "127.0.0.1", 25, None),
        ("smtp+insecure://[::1]:2525", "none", "::1", 2525, None),
    ],
)
def test_smtp_url_forms_and_percent_decoded_credentials(
    url: str, security: str, host: str, port: int, username: str | None
) -> None:
    target = parse_smtp_url(url)
    assert (target.security, target.host, target.port, target.username) == (
        security,
        host,
        port,
        username,
    )
    if username is not None:
        assert target.password is not None
        assert target.password.get_secret_value() == PASSWORD
        assert PASSWORD not in repr(target) and ENCODED not in repr(target)
    assert PASSWORD not in target.describe()


@pytest.mark.parametrize(
    "url",
    [
        f"http://u:{ENCODED}@smtp.example.com",
        f"smtp+insecure://u:{ENCODED}@relay.internal",  # credentials in clear
        f"smtp://:{ENCODED}@smtp.example.com",
        "smtp://user@smtp.example.com",
        f"smtp://u:{ENCODED}@",
        f"smtp://u:{ENCODED}@smtp.example.com/path",
        f"smtp://u:{ENCODED}@smtp.example.com?x=1",
        f"smtp://u:{ENCODED}@smtp.example.com:99999",
    ],
)
def test_a_malformed_smtp_url_stops_the_server_without_echoing_it(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_smtp_url(url)
    for secret in (PASSWORD, ENCODED, url):
        assert secret not in str(raised.value)
    settings = Settings(smtp_url=url, data_dir=tmp_path)
    assert ENCODED not in repr(settings) and ENCODED not in str(settings.model_dump())
    with pytest.raises(ValueError) as at_startup:
        create_app(settings)
    assert ENCODED not in str(at_startup.value) and PASSWORD not in str(at_startup.value)


def test_the_transport_follows_the_settings(tmp_path: Path) -> None:
    dev = build_mail_transport(Settings(data_dir=tmp_path))
    assert isinstance(dev, DevMailbox) and dev.directory == tmp_path / "mail"
    smtp = build_mail_transport(
        Settings(
            smtp_url=f"smtps://apikey:{ENCODED}@smtp.example.com",
            mail_from='"Example Login" <login@example.com>',
        )
    )
    assert isinstance(smtp, SmtpTransport)
    assert repr(smtp) == "SmtpTransport(smtps://smtp.example.com:465)"


@pytest.mark.parametrize(
    ("mail_from", "address"),
    [
        ("splitlink <no-reply@localhost>", "no-reply@localhost"),
        ("login@example.com", "login@example.com"),
        ('"Example, Inc." <login@example.com>', "login@example.com"),
    ],
)
def test_the_envelope_sender_is_the_address_in_mail_from(mail_from: str, address: str) -> None:
    assert envelope_sender(mail_from) == address
    assert Settings(mail_from=mail_from).mail_envelope_sender == address


@pytest.mark.parametrize(
    "mail_from", ["a@example.com, b@example.com", "nobody", "a@example.com\r\nBcc: x@y.z"]
)
def test_mail_from_must_hold_one_address(mail_from: str) -> None:
    with pytest.raises(ValueError):
        Settings(mail_from=mail_from)


def test_a_missing_ca_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Settings(smtp_tls_ca_file=tmp_path / "missing.pem")


async def test_outbox_command_shows_counts_and_rows_never_contents(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        device = server.device()
        started, email_half = await server.start_and_read_link(device, "sent@example.com")
        pending = await server.start(server.device(), "queued@example.com")
        await server.start(server.device(), "gone@example.com")
        server.query(
            "UPDATE outbox SET status = 'abandoned', last_error = '550 5.1.1 no such user', "
            "sealed_message = NULL WHERE recipient = ? RETURNING id",
            "gone@example.com",
        )
        ((queued_id,),) = server.query(
            "SELECT id FROM outbox WHERE recipient = ?", "queued@example.com"
        )
        database_url = server.database_url
    env = {**os.environ, "SPLITLINK_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [str(BIN / "splitlink"), "outbox", "--database-url", database_url],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    output = result.stdout
    assert "queued: 1   sent: 1   expired: 0   abandoned: 1" in output
    for text in ("sent@example.com", "queued@example.com", "gone@example.com", queued_id):
        assert text in output
    assert "550 5.1.1 no such user" in output
    for secret in (email_half, started["attempt_id"], pending.json()["device_half"], "#attempt"):
        assert secret not in output
    tries = subprocess.run(
        [str(BIN / "splitlink"), "outbox", "--database-url", database_url, "--id", queued_id],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "none recorded" in tries.stdout
