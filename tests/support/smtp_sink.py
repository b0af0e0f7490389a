"""A real SMTP server in the test process (aiosmtpd, its own thread and event loop) that records
the wire: every connection's EHLO, every MAIL FROM and RCPT TO, the raw DATA, and whether the
session ran over TLS (STARTTLS or implicit). Its behaviour is scripted per test:

- `replies`: answers given, in order, to the next MAIL FROM / RCPT TO / DATA commands instead of
  accepting (e.g. ["451 4.3.0 try later", "421 4.3.2 closing"]);
- `reject_rcpt`: answer every RCPT TO with this 5xx reply;
- `slow`: sleep this long (wall clock) before answering EHLO, or after taking DATA.

A self-signed certificate made with `cryptography` serves STARTTLS and implicit TLS.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.fakes import MailView
from support.processes import free_port

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificate(directory: Path) -> Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, valid for a day either side."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "splitlink test SMTP")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file = directory / "smtp-cert.pem"
    key_file = directory / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(cert_file, key_file)


@dataclass(frozen=True)
class Delivery(MailView):
    """One accepted message, as it crossed the wire."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    tls: bool
    starttls: bool
    login: str | None

    @property
    def raw_message(self) -> bytes:
        return self.data

    def link(self) -> str | None:
        return next((word for word in self.text.split() if "#attempt_id=" in word), None)


@dataclass
class Recorder:
    """The aiosmtpd handler. Lists are appended from the server's thread; read them after the
    client has finished."""

    replies: list[str] = field(default_factory=list)
    reject_rcpt: str | None = None
    slow: tuple[Literal["EHLO", "DATA"], float] | None = None
    ehlos: int = 0
    rcpt_seen: list[str] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _scripted(self) -> str | None:
        with self.lock:
            return self.replies.pop(0) if self.replies else None

    async def _maybe_slow(self, stage: str) -> None:
        if self.slow is not None and self.slow[0] == stage:
            await asyncio.sleep(self.slow[1])

    async def handle_EHLO(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        with self.lock:
            self.ehlos += 1
        await self._maybe_slow("EHLO")
        session.host_name = hostname
        return responses

    async def handle_MAIL(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if (reply := self._scripted()) is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        with self.lock:
            self.rcpt_seen.append(address)
        if (reply := self._scripted()) is not None:
            return reply
        if self.reject_rcpt is not None:
            return self.reject_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if (reply := self._scripted()) is not None:
            return reply
        transport = server.transport
        tls = transport is not None and transport.get_extra_info("ssl_object") is not None
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        delivery = Delivery(
            mail_from=str(envelope.mail_from),
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""),
            tls=tls,
            starttls=session.ssl is not None,
            login=login,
        )
        with self.lock:
            self.deliveries.append(delivery)
        # A slow DATA reply comes after the message is taken: the client may give up and send
        # it again, as after a real server's lost reply.
        await self._maybe_slow("DATA")
        return "250 2.0.0 accepted"

    def authenticate(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        with self.lock:
            self.logins.append((login, password))
        if (login, password) != (SMTP_USER, SMTP_PASSWORD):
            # handled=False: the server itself answers 535 (handled=True would answer nothing).
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=auth_data.login)


SMTP_USER = "mailer@example.test"
SMTP_PASSWORD = "p@ss:w/rd%"  # every character that must be percent-encoded in a URL


@dataclass
class SmtpSink:
    recorder: Recorder
    port: int
    tls: Literal["starttls", "implicit", "none"]
    certificate: Certificate | None
    controller: Controller | None = None

    @property
    def deliveries(self) -> list[Delivery]:
        with self.recorder.lock:
            return list(self.recorder.deliveries)

    def url(self, *, scheme: str | None = None, credentials: bool = True) -> str:
        scheme = (
            scheme or {"starttls": "smtp", "implicit": "smtps", "none": "smtp+insecure"}[self.tls]
        )
        userinfo = ""
        if credentials and scheme != "smtp+insecure":
            userinfo = f"{quote(SMTP_USER, safe='')}:{quote(SMTP_PASSWORD, safe='')}@"
        return f"{scheme}://{userinfo}{HOST}:{self.port}"

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Server settings that send here (for the settings object or the environment)."""
        values: dict[str, Any] = {"smtp_url": self.url(), "smtp_timeout": 2.0}
        if self.certificate is not None:
            values["smtp_tls_ca_file"] = self.certificate.cert_file
        values.update(overrides)
        return values

    def start(self) -> None:
        """Listen (again) on the same port: a mail server coming back."""
        assert self.controller is None
        kwargs: dict[str, Any] = {
            "authenticator": self.recorder.authenticate,
            # aiosmtpd counts only STARTTLS as TLS; implicit TLS is TLS from the first byte.
            "auth_require_tls": self.tls == "starttls",
        }
        if self.tls == "starttls":
            assert self.certificate is not None
            kwargs["tls_context"] = self.certificate.server_context()
            kwargs["require_starttls"] = True
        elif self.tls == "implicit":
            assert self.certificate is not None
            kwargs["ssl_context"] = self.certificate.server_context()
        controller = Controller(self.recorder, hostname=HOST, port=self.port, **kwargs)
        controller.start()
        self.controller = controller

    def stop(self) -> None:
        """Stop listening: connections are refused from now on."""
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@contextmanager
def smtp_sink(
    directory: Path,
    *,
    tls: Literal["starttls", "implicit", "none"] = "starttls",
    running: bool = True,
) -> Iterator[SmtpSink]:
    """A sink on a free loopback port; `running=False` leaves the port closed (mail server down)
    until `start()`."""
    certificate = make_certificate(directory) if tls != "none" else None
    sink = SmtpSink(recorder=Recorder(), port=free_port(), tls=tls, certificate=certificate)
    if running:
        sink.start()
    try:
        yield sink
    finally:
        sink.stop()
