"""`SmtpSink`: an SMTP server on the loopback interface that keeps every message it is given,
for a server under test to send its mail to (`SPLITLINK_SMTP_URL=<sink.url>`).

It is aiosmtpd's threaded controller (`pip install 'splitlink-client[testing]'`) with a handler
that only records: no TLS and no login, which the server allows for `smtp+insecure://` on a
host it can reach directly.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from splitlink_client.login_mail import LoginMail, read_login_mail

LOOPBACK = "127.0.0.1"
# aiosmtpd's one second is short on a machine busy running a test suite.
READY_TIMEOUT = 10.0


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class _Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.messages.append(bytes(envelope.original_content or b""))
        return "250 2.0.0 accepted"


class SmtpSink:
    """Listens on `port` (a free one when 0) between `start()` and `stop()`, or as a context
    manager."""

    def __init__(self, *, port: int = 0) -> None:
        self.port = port or free_port()
        self._recorder = _Recorder()
        self._controller: Controller | None = None
        self._read: dict[int, LoginMail | None] = {}

    def __repr__(self) -> str:
        return f"SmtpSink(port={self.port})"

    @property
    def url(self) -> str:
        """The server's `SPLITLINK_SMTP_URL` for this sink."""
        return f"smtp+insecure://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        if self._controller is None:
            controller = Controller(
                self._recorder, hostname=LOOPBACK, port=self.port, ready_timeout=READY_TIMEOUT
            )
            controller.start()
            self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def messages(self) -> list[bytes]:
        """Every message received, raw, in the order received."""
        with self._recorder.lock:
            return list(self._recorder.messages)

    def login_mails(self) -> list[LoginMail]:
        mails: list[LoginMail] = []
        for index, raw in enumerate(self.messages()):
            if index not in self._read:
                self._read[index] = read_login_mail(raw)
            mail = self._read[index]
            if mail is not None:
                mails.append(mail)
        return mails
