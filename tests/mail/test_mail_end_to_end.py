"""A whole login through a real mail server: `splitlink serve`, the reference client, and an SMTP
server that requires STARTTLS and AUTH (SPEC.md §6, §7)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from splitlink_client.client import SplitlinkClient
from support.processes import running_server_process
from support.smtp_sink import SMTP_PASSWORD, Delivery, SmtpSink, smtp_sink

pytestmark = pytest.mark.slow


def _wait_for(sink: SmtpSink, count: int, timeout: float = 15.0) -> list[Delivery]:
    deadline = time.monotonic() + timeout
    while len(sink.deliveries) < count:
        assert time.monotonic() < deadline, f"fewer than {count} messages reached the sink"
        time.sleep(0.05)
    return sink.deliveries


def test_a_login_completes_through_a_real_smtp_server(tmp_path: Path) -> None:
    with smtp_sink(tmp_path / "smtp", tls="starttls") as sink:
        env = {
            "SPLITLINK_SMTP_URL": sink.url(),
            "SPLITLINK_SMTP_TLS_CA_FILE": str(sink.certificate.cert_file),  # type: ignore[union-attr]
            "SPLITLINK_MAIL_FROM": "Example <login@example.test>",
            "SPLITLINK_APP_NAME": "Example",
        }
        with running_server_process(tmp_path, workers=1, extra_env=env) as server:
            with SplitlinkClient(server.url, tmp_path / "device.json") as client:
                started = client.start_login("Alice@Example.com", "Alice's phone")
                (login_mail,) = _wait_for(sink, 1)
                link = login_mail.link()
                assert link is not None and started.attempt_id in link
                client.complete_login(link)
                me = client.me()
            notice = _wait_for(sink, 2)[1]
            log = server.log()
            mailbox = sorted(server.mail_dir.glob("*.eml")) if server.mail_dir.exists() else []
    assert me["user"]["email"] == "Alice@example.com"
    assert login_mail.rcpt_tos == ("Alice@example.com",)
    assert login_mail.mail_from == "login@example.test"
    assert login_mail.tls and login_mail.starttls
    assert "Alice's phone" in login_mail.text
    assert notice.message["Subject"] == "New sign-in to Example"
    assert notice.rcpt_tos == ("Alice@example.com",)
    assert "Alice's phone" in notice.text
    # The mail went over SMTP only; neither the password nor the link reached the log.
    assert mailbox == []
    assert SMTP_PASSWORD not in log
    assert link not in log and link.rsplit("=", 1)[1] not in log
