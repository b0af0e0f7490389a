"""Mail transports: where the outbox dispatcher hands a rendered message."""

from __future__ import annotations

import asyncio
import os
import sys
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Protocol


class TransientMailError(Exception):
    """Try again later (SMTP 4xx, connection failure)."""


class MailServiceUnavailable(TransientMailError):
    """The mail service itself cannot take mail now (unreachable, timed out, 421, no STARTTLS):
    other messages would fail the same way, so the dispatcher ends its round."""


class PermanentMailError(Exception):
    """Do not try again (SMTP 5xx about this message)."""


class MailTransport(Protocol):
    async def send(self, *, recipient: str, message: bytes, message_key: str) -> None: ...


class DevMailbox:
    """Development delivery: one .eml file per message in `directory`, and the text on stdout.

    The printed text includes the login link: this is a mailbox, for a developer's own machine.
    """

    def __init__(self, directory: Path, *, console: bool) -> None:
        self.directory = directory
        self.console = console

    async def send(self, *, recipient: str, message: bytes, message_key: str) -> None:
        path = self.directory / f"{message_key}.eml"
        # In a thread: creating a file waits for the file system's journal now and then, which
        # the event loop's other requests must not wait for.
        await asyncio.to_thread(self._write, path, message)
        if self.console:
            parsed = message_from_bytes(message, _class=EmailMessage, policy=SMTP)
            text_part = parsed.get_body(preferencelist=("plain",))
            text = text_part.get_content() if text_part is not None else ""
            print(f"\n--- mail to {recipient} ({path}) ---\n{text}---", file=sys.stdout, flush=True)

    def _write(self, path: Path, message: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed, so a reader of the mailbox never sees half a message.
        partial = path.with_name(f".{path.name}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(message)
        os.replace(partial, path)
