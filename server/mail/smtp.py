"""SMTP delivery (docs/design.md §13): one connection per message, one recipient, TLS unless the
operator asked for a plain local relay in so many words.

`SPLITLINK_SMTP_URL` picks the connection:

- `smtp://user:password@host:587`: STARTTLS is required. If the server does not offer it, or the
  upgrade fails, nothing is sent and the try counts as a transient failure.
- `smtps://user:password@host:465`: TLS from the first byte (implicit TLS, RFC 8314).
- `smtp+insecure://host:25`: no TLS and no credentials, for a relay on the same host or a private
  network. Anyone on the path reads every message, login links included.

User and password are percent-decoded. Certificates are verified against the system's CAs, or
against `SPLITLINK_SMTP_TLS_CA_FILE` alone when it is set, and the host name must match.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import aiosmtplib
from pydantic import SecretStr

from server.mail.transport import MailServiceUnavailable, PermanentMailError, TransientMailError

Security = Literal["starttls", "tls", "none"]

_SCHEMES: dict[str, tuple[Security, int]] = {
    "smtp": ("starttls", 587),
    "smtps": ("tls", 465),
    "smtp+insecure": ("none", 25),
}
_MAX_DETAIL = 200


@dataclass(frozen=True)
class SmtpTarget:
    security: Security
    host: str
    port: int
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)

    def describe(self) -> str:
        """For logs: scheme, host and port; never the credentials."""
        scheme = {"starttls": "smtp", "tls": "smtps", "none": "smtp+insecure"}[self.security]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


def parse_smtp_url(value: str) -> SmtpTarget:
    """Read `SPLITLINK_SMTP_URL`. Error messages never repeat the value: it holds a password."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError("smtp_url is not a valid URL") from exc
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError("smtp_url must start with smtp://, smtps:// or smtp+insecure://")
    security, default_port = _SCHEMES[scheme]
    if not parts.hostname:
        raise ValueError("smtp_url must name a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("smtp_url takes no path, query or fragment")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if (username is None) != (password is None) or username == "":
        raise ValueError("smtp_url needs both a user and a password, or neither")
    if security == "none" and username is not None:
        raise ValueError(
            "smtp+insecure:// takes no credentials: they would cross the network in clear"
        )
    return SmtpTarget(
        security=security,
        host=parts.hostname,
        port=port or default_port,
        username=username,
        password=SecretStr(password) if password is not None else None,
    )


def envelope_sender(mail_from: str) -> str:
    """The address inside `mail_from` ("Name <addr>" or "addr"): the SMTP `MAIL FROM`."""
    if "\r" in mail_from or "\n" in mail_from:
        raise ValueError("mail_from must be one line")
    header = SMTP_POLICY.header_factory("From", mail_from)
    addresses: tuple[Any, ...] = getattr(header, "addresses", ())
    if len(addresses) != 1 or header.defects or "@" not in addresses[0].addr_spec:
        raise ValueError("mail_from must hold exactly one address")
    return str(addresses[0].addr_spec)


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _detail(stage: str, text: str) -> str:
    return f"{stage}: {' '.join(text.split())}"[:_MAX_DETAIL]


class SmtpTransport:
    """Hands each message to an SMTP server: `MAIL FROM` is the address in `mail_from`, and
    there is exactly one `RCPT TO`, the stored recipient.

    Replies map to the dispatcher's outcomes: a 5xx answer to `RCPT TO` or to the message data
    is about this message and is permanent. Every other failure is transient: 4xx replies,
    connection failures, timeouts, a missing STARTTLS, and 5xx answers to the greeting, `EHLO`,
    `AUTH` or `MAIL FROM`, which reject the server's own configuration (credentials, sender),
    not the message, and heal once the operator fixes it.
    """

    def __init__(
        self,
        target: SmtpTarget,
        *,
        sender: str,
        timeout: float,
        ca_file: Path | None = None,
        local_hostname: str = "localhost",
    ) -> None:
        self.target = target
        self._sender = sender
        self._timeout = timeout
        self._tls = tls_context(ca_file) if target.security != "none" else None
        self._local_hostname = local_hostname

    def __repr__(self) -> str:
        return f"SmtpTransport({self.target.describe()})"

    async def send(self, *, recipient: str, message: bytes, message_key: str) -> None:
        target = self.target
        client = aiosmtplib.SMTP(
            hostname=target.host,
            port=target.port,
            timeout=self._timeout,
            use_tls=target.security == "tls",
            start_tls=False,  # upgraded below, where a missing STARTTLS is a refusal
            tls_context=self._tls,
            local_hostname=self._local_hostname,
        )
        stage = "connect"
        delivered = False
        try:
            await client.connect()
            stage = "EHLO"
            await client.ehlo()
            if target.security == "starttls":
                if not client.supports_extension("starttls"):
                    raise MailServiceUnavailable(
                        "the SMTP server does not offer STARTTLS; nothing was sent in clear"
                    )
                stage = "STARTTLS"
                await client.starttls(tls_context=self._tls)
            if target.username is not None and target.password is not None:
                stage = "AUTH"
                await client.login(target.username, target.password.get_secret_value())
            stage = "MAIL"
            await client.sendmail(self._sender, [recipient], message)
            delivered = True
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            text = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            error = _detail("RCPT", text)
            if 421 in codes:
                raise MailServiceUnavailable(error) from None
            if codes and min(codes) >= 500:
                raise PermanentMailError(error) from None
            raise TransientMailError(error) from None
        except aiosmtplib.SMTPRecipientRefused as exc:
            self._raise_for_reply("RCPT", exc.code, exc.message, message_level=True)
        except aiosmtplib.SMTPDataError as exc:
            self._raise_for_reply("DATA", exc.code, exc.message, message_level=True)
        except aiosmtplib.SMTPResponseException as exc:
            self._raise_for_reply(stage, exc.code, exc.message, message_level=False)
        except (TimeoutError, aiosmtplib.SMTPTimeoutError) as exc:
            raise MailServiceUnavailable(_detail(stage, f"timed out ({exc})")) from None
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected) as exc:
            raise MailServiceUnavailable(_detail(stage, str(exc))) from None
        except ssl.SSLError as exc:
            raise MailServiceUnavailable(_detail(stage, f"TLS failed: {exc}")) from None
        except OSError as exc:
            raise MailServiceUnavailable(_detail(stage, str(exc))) from None
        except aiosmtplib.SMTPException as exc:
            raise TransientMailError(_detail(stage, str(exc))) from None
        finally:
            await _close(client, polite=delivered)

    async def probe(self) -> str:
        """Connect, upgrade to TLS as configured, `EHLO`, log in if there are credentials, and
        `QUIT`, sending no mail: what succeeded, or MailServiceUnavailable saying what failed."""
        target = self.target
        client = aiosmtplib.SMTP(
            hostname=target.host,
            port=target.port,
            timeout=self._timeout,
            use_tls=target.security == "tls",
            start_tls=False,
            tls_context=self._tls,
            local_hostname=self._local_hostname,
        )
        stage = "connect"
        done = ["connected", "TLS" if target.security == "tls" else ""]
        try:
            await client.connect()
            stage = "EHLO"
            await client.ehlo()
            if target.security == "starttls":
                if not client.supports_extension("starttls"):
                    raise MailServiceUnavailable("the SMTP server does not offer STARTTLS")
                stage = "STARTTLS"
                await client.starttls(tls_context=self._tls)
                done.append("STARTTLS")
            done.append("EHLO")
            if target.username is not None and target.password is not None:
                stage = "AUTH"
                await client.login(target.username, target.password.get_secret_value())
                done.append("AUTH")
            stage = "QUIT"
            await client.quit()
        except MailServiceUnavailable:
            raise
        except aiosmtplib.SMTPResponseException as exc:
            raise MailServiceUnavailable(_detail(stage, f"{exc.code} {exc.message}")) from None
        except ssl.SSLError as exc:
            raise MailServiceUnavailable(_detail(stage, f"TLS failed: {exc}")) from None
        except (TimeoutError, OSError, aiosmtplib.SMTPException) as exc:
            raise MailServiceUnavailable(_detail(stage, str(exc) or type(exc).__name__)) from None
        finally:
            if client.is_connected:
                client.close()
        return f"{target.describe()}: " + ", ".join(step for step in done if step)

    @staticmethod
    def _raise_for_reply(stage: str, code: int, text: str, *, message_level: bool) -> None:
        error = _detail(stage, f"{code} {text}")
        if code >= 500 and message_level:
            raise PermanentMailError(error)
        if code == 421:  # "service not available, closing transmission channel"
            raise MailServiceUnavailable(error)
        raise TransientMailError(error)


async def _close(client: aiosmtplib.SMTP, *, polite: bool) -> None:
    """QUIT after a delivery; after a failure, just drop the connection."""
    if not client.is_connected:
        return
    if polite:
        try:
            await client.quit(timeout=1)
            return
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            pass
    client.close()
