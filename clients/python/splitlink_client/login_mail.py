"""Login mail as a test reads it: the link of one attempt, found in the mail a server sent.

A development server writes each message to its mailbox directory (`{data_dir}/mail/*.eml`);
`MailboxDirectory` reads them there. `SmtpSink` (`splitlink_client.smtp_sink`) receives them over
SMTP instead. Both only read: the same mail can be looked at again after it was used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from protocol.errors import MalformedInput
from protocol.link import parse_login_link
from splitlink_client.errors import MailNotReceived

POLL_INTERVAL_SECONDS = 0.05
# A development server's outbox hands a message over within a second or so.
DEFAULT_MAIL_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class LoginMail:
    """A message that carries a login link, and the attempt that link completes."""

    attempt_id: str
    link: str
    message: EmailMessage

    @property
    def recipient(self) -> str:
        return str(self.message["To"])

    def __repr__(self) -> str:
        # The link holds the email half: it stays out of assertion messages and logs.
        return f"LoginMail(attempt_id={self.attempt_id!r}, recipient={self.recipient!r})"


class LoginMailbox(Protocol):
    """Where a server's mail can be read by a test."""

    def login_mails(self) -> list[LoginMail]:
        """Every login mail received so far, oldest first."""
        ...


def read_login_mail(raw: bytes) -> LoginMail | None:
    """The login mail in one raw message; None for mail without a link (the notices)."""
    message = message_from_bytes(raw, _class=EmailMessage, policy=SMTP)
    body = message.get_body(preferencelist=("plain",))
    if body is None or not isinstance(body, EmailMessage):
        return None
    for word in str(body.get_content()).split():
        if "#attempt_id=" not in word:
            continue
        # Only an absolute link to the landing page: a device name shown in the mail may hold
        # a bare fragment of its own choosing.
        parts = urlsplit(word)
        if parts.scheme not in ("http", "https") or parts.path != "/l":
            continue
        try:
            parsed = parse_login_link(word)
        except MalformedInput:
            continue
        return LoginMail(attempt_id=parsed.attempt_id, link=word, message=message)
    return None


def wait_for_login_mail(
    mailbox: LoginMailbox, *, attempt_id: str, timeout: float = DEFAULT_MAIL_TIMEOUT_SECONDS
) -> LoginMail:
    """The login mail of `attempt_id`, once it has arrived; raises `MailNotReceived` after
    `timeout` seconds. Mail of other attempts is passed over, so tests can share a mailbox."""
    deadline = time.monotonic() + timeout
    while True:
        for mail in mailbox.login_mails():
            if mail.attempt_id == attempt_id:
                return mail
        if time.monotonic() >= deadline:
            raise MailNotReceived(
                f"no login mail for attempt {attempt_id} reached {mailbox!r} in {timeout:g} s"
            )
        time.sleep(POLL_INTERVAL_SECONDS)


class MailboxDirectory:
    """A development server's mailbox: one `.eml` file per message (the server writes each
    aside and renames it into place, so a file here is always whole)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._read: dict[str, LoginMail | None] = {}

    def __repr__(self) -> str:
        return f"MailboxDirectory({str(self.directory)!r})"

    def login_mails(self) -> list[LoginMail]:
        if not self.directory.is_dir():
            return []
        files = sorted(
            self.directory.glob("*.eml"), key=lambda path: (path.stat().st_mtime_ns, path.name)
        )
        mails: list[LoginMail] = []
        for path in files:
            if path.name not in self._read:
                self._read[path.name] = read_login_mail(path.read_bytes())
            mail = self._read[path.name]
            if mail is not None:
                mails.append(mail)
        return mails
