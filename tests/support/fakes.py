"""An injected clock, a counting random source and a recording mail transport."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP

from protocol.link import LoginLink, parse_login_link


class FakeClock:
    def __init__(self, start: int = 1_800_000_000) -> None:
        self.current = start

    def now(self) -> int:
        return self.current

    def advance(self, seconds: int) -> None:
        self.current += seconds


class MailView:
    """A raw RFC 5322 message read the way a mail client shows it."""

    @property
    def raw_message(self) -> bytes:
        raise NotImplementedError

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.raw_message, _class=EmailMessage, policy=SMTP)
        return parsed

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return "" if part is None else str(part.get_content())

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        return "" if part is None else str(part.get_content())


@dataclass
class SentMail(MailView):
    recipient: str
    raw: bytes

    @property
    def raw_message(self) -> bytes:
        return self.raw

    def login_link(self) -> LoginLink:
        for word in self.text.split():
            if "#attempt_id=" in word:
                return parse_login_link(word)
        raise AssertionError("the message carries no login link")

    def link_text(self) -> str:
        return next(word for word in self.text.split() if "#attempt_id=" in word)


@dataclass
class RecordingTransport:
    sent: list[SentMail] = field(default_factory=list)

    async def send(self, *, recipient: str, message: bytes, message_key: str) -> None:
        self.sent.append(SentMail(recipient=recipient, raw=message))

    def to(self, recipient: str) -> list[SentMail]:
        return [mail for mail in self.sent if mail.recipient == recipient]


def os_random_bytes(n: int) -> bytes:
    return os.urandom(n)
