"""The testing kit's mail readers: the development mailbox directory and the SMTP sink."""

from __future__ import annotations

import os
import smtplib
import time
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
from splitlink_client.errors import MAIL_NOT_RECEIVED, MailNotReceived
from splitlink_client.smtp_sink import SmtpSink
from splitlink_client.testing import MailboxDirectory, read_login_mail, wait_for_login_mail

from protocol.encoding import b64url_encode
from protocol.link import build_login_link

SERVER = "http://127.0.0.1:8000"


def _attempt(n: int) -> str:
    return b64url_encode(bytes([n]) * 16)


def _link(n: int) -> str:
    return build_login_link(
        public_url=SERVER, attempt_id=_attempt(n), email_half=b64url_encode(bytes([n]) * 32)
    )


def _message(to: str, text: str) -> bytes:
    message = EmailMessage()
    message["To"] = to
    message["Subject"] = "Sign in to splitlink"
    message.set_content(text)
    return message.as_bytes(policy=SMTP)


def _login(to: str, n: int) -> bytes:
    return _message(to, f"Open this link on that device to finish signing in:\n\n{_link(n)}\n")


def test_a_login_mail_yields_its_link_and_attempt() -> None:
    mail = read_login_mail(_login("a@example.com", 1))
    assert mail is not None
    assert (mail.attempt_id, mail.link, mail.recipient) == (_attempt(1), _link(1), "a@example.com")


def test_a_login_mail_keeps_its_link_out_of_its_repr() -> None:
    mail = read_login_mail(_login("a@example.com", 1))
    assert mail is not None
    assert "email_half" not in repr(mail) and b64url_encode(b"\x01" * 32) not in repr(mail)


def test_mail_without_a_valid_link_is_no_login_mail() -> None:
    assert read_login_mail(_message("a@example.com", "New sign-in to splitlink.")) is None
    broken = _link(1).replace("email_half=", "email_half=short")
    assert read_login_mail(_message("a@example.com", f"link: {broken}")) is None


def test_a_fragment_a_device_name_shows_before_the_link_is_not_taken_for_it() -> None:
    fake = _link(9).split("/l", 1)[1]  # "#attempt_id=...&email_half=...", no origin
    mail = read_login_mail(_message("a@example.com", f"Device: {fake}\n\nLink: {_link(1)}\n"))
    assert mail is not None
    assert (mail.attempt_id, mail.link) == (_attempt(1), _link(1))


def test_the_mailbox_directory_lists_login_mail_oldest_first_and_skips_the_rest(
    tmp_path: Path,
) -> None:
    mailbox = MailboxDirectory(tmp_path / "mail")
    assert mailbox.login_mails() == []
    (tmp_path / "mail").mkdir()
    files = [
        ("b.eml", _login("a@example.com", 2)),
        ("notice.eml", _message("a@example.com", "New sign-in to splitlink.")),
        ("a.eml", _login("b@example.com", 1)),
        (".c.eml.partial", _login("c@example.com", 3)),
    ]
    for age, (name, raw) in enumerate(files):
        path = tmp_path / "mail" / name
        path.write_bytes(raw)
        stamp = 1_700_000_000 + age
        os.utime(path, (stamp, stamp))
    assert [mail.attempt_id for mail in mailbox.login_mails()] == [_attempt(2), _attempt(1)]


def test_waiting_finds_the_mail_of_one_attempt_among_others(tmp_path: Path) -> None:
    (tmp_path / "other.eml").write_bytes(_login("a@example.com", 1))
    (tmp_path / "mine.eml").write_bytes(_login("b@example.com", 2))
    mail = wait_for_login_mail(MailboxDirectory(tmp_path), attempt_id=_attempt(2), timeout=1)
    assert mail.recipient == "b@example.com"


def test_waiting_for_mail_that_never_comes_raises_mail_not_received(tmp_path: Path) -> None:
    (tmp_path / "other.eml").write_bytes(_login("a@example.com", 1))
    began = time.monotonic()
    with pytest.raises(MailNotReceived) as raised:
        wait_for_login_mail(MailboxDirectory(tmp_path), attempt_id=_attempt(2), timeout=0.2)
    assert raised.value.error == MAIL_NOT_RECEIVED
    assert _attempt(2) in raised.value.description
    assert 0.2 <= time.monotonic() - began < 2


def test_the_smtp_sink_receives_mail_over_smtp_and_finds_the_login_link() -> None:
    with SmtpSink() as sink:
        assert sink.url == f"smtp+insecure://127.0.0.1:{sink.port}"
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=5) as smtp:
            smtp.sendmail("login@example.test", ["a@example.com"], _login("a@example.com", 4))
            smtp.sendmail("login@example.test", ["a@example.com"], _message("a@example.com", "x"))
        mail = wait_for_login_mail(sink, attempt_id=_attempt(4), timeout=5)
        assert len(sink.messages()) == 2
    assert mail.link == _link(4)
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", sink.port, timeout=2)
