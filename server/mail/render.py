"""Rendering of outgoing mail (pure: everything it shows is an argument or a template).

Templates are `string.Template` files in server/mail/templates/; a deployment replaces any of them
with a file of the same name in `SPLITLINK_MAIL_TEMPLATES_DIR`. Each template may use only the
placeholders listed in `PLACEHOLDERS`, and every template is checked when the server starts. In
the HTML templates every value is HTML-escaped before substitution (attacks.md D7); the text
templates get the values as they are.

Rendering is deterministic: the same arguments give the same bytes, MIME boundaries included, so
the dispatcher can render a queued order again for a second hand-off (SPEC.md §7.4).

Messages are built with `email.message.EmailMessage` under the SMTP policy, which refuses CR and
LF in header values (D6); every user-influenced value is validated before it gets here (SPEC.md
§5). Bodies are 7-bit (quoted-printable or base64 where needed), so any SMTP server can carry
them without the 8BITMIME extension.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path
from string import Template

DEFAULT_TEMPLATES_DIR = Path(__file__).parent / "templates"

_POLICY = SMTP.clone(cte_type="7bit")

_LOGIN_LINK = frozenset(
    {
        "app_name",
        "recipient",
        "device",
        "requested_at",
        "link",
        "expires_in_minutes",
        "check_phrase",
    }
)
_NO_ACCOUNT = frozenset({"app_name", "recipient", "requested_at"})
_NEW_DEVICE = frozenset(
    {"app_name", "recipient", "device", "key_alg", "signed_in_at", "session_id", "check_phrase"}
)

# Template file -> the placeholders it may use.
PLACEHOLDERS: dict[str, frozenset[str]] = {
    "login_link.subject.txt": _LOGIN_LINK - {"link"},
    "login_link.txt": _LOGIN_LINK,
    "login_link.html": _LOGIN_LINK | {"qr_src", "qr_size"},
    "no_account.subject.txt": _NO_ACCOUNT,
    "no_account.txt": _NO_ACCOUNT,
    "new_device.subject.txt": _NEW_DEVICE,
    "new_device.txt": _NEW_DEVICE,
    "new_device.html": _NEW_DEVICE,
}
# A login mail without its link, or a notice without the device, would be useless.
_REQUIRED: dict[str, frozenset[str]] = {
    "login_link.txt": frozenset({"link"}),
    "login_link.html": frozenset({"link"}),
    "new_device.txt": frozenset({"device", "signed_in_at"}),
    "new_device.html": frozenset({"device", "signed_in_at"}),
}


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class MailTemplates:
    templates: dict[str, Template]

    @classmethod
    def load(cls, override_dir: Path | None = None) -> MailTemplates:
        """The built-in templates, each replaced by a file of the same name in `override_dir`."""
        if override_dir is not None and not override_dir.is_dir():
            raise TemplateError(f"mail_templates_dir {override_dir} is not a directory")
        templates: dict[str, Template] = {}
        for name, allowed in PLACEHOLDERS.items():
            path = DEFAULT_TEMPLATES_DIR / name
            if override_dir is not None and (override_dir / name).is_file():
                path = override_dir / name
            template = Template(path.read_text(encoding="utf-8"))
            if not template.is_valid():
                raise TemplateError(f"{path}: a '$' that is not a placeholder (write '$$')")
            used = set(template.get_identifiers())
            if unknown := used - allowed:
                raise TemplateError(f"{path}: unknown placeholders {sorted(unknown)}")
            if missing := _REQUIRED.get(name, frozenset()) - used:
                raise TemplateError(f"{path}: must use {sorted(missing)}")
            templates[name] = template
        return cls(templates)

    def text(self, name: str, values: dict[str, str]) -> str:
        return self.templates[name].substitute(values)

    def html(self, name: str, values: dict[str, str]) -> str:
        escaped = {key: html.escape(value, quote=True) for key, value in values.items()}
        return self.templates[name].substitute(escaped)

    def subject(self, name: str, values: dict[str, str]) -> str:
        return " ".join(self.text(name, values).split())


def utc_time(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _message(
    *, sender: str, recipient: str, subject: str, message_id: str, sent_at: int
) -> EmailMessage:
    message = EmailMessage(policy=_POLICY)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message["Date"] = format_datetime(datetime.fromtimestamp(sent_at, UTC))
    message["Auto-Submitted"] = "auto-generated"
    return message


def _stable_bytes(message: EmailMessage, message_id: str) -> bytes:
    """The message's bytes, with MIME boundaries derived from the Message-ID instead of drawn at
    random, so that the same order renders to the same bytes every time (SPEC.md §7.4).

    A boundary must not occur in any body. Quoted-printable and base64 never contain "=_"; a 7-bit
    text part could, but only with the hash of a random Message-ID that nobody who puts text into
    the message (a device name, a template) knows beforehand."""
    digest = hashlib.sha256(message_id.encode()).hexdigest()[:32]
    multiparts = [part for part in message.walk() if part.is_multipart()]
    for n, part in enumerate(multiparts):
        part.set_boundary(f"=_{n}.{digest}")
    return message.as_bytes()


def qr_content_id(message_id: str) -> str:
    """The Content-ID of the QR image: derived from the Message-ID, so unique and stable."""
    return "qr." + message_id.strip("<>")


@dataclass(frozen=True)
class MailComposer:
    """Everything a message needs that comes from configuration."""

    app_name: str
    sender: str
    templates: MailTemplates

    def login_link(
        self,
        *,
        recipient: str,
        message_id: str,
        link: str,
        device_name: str | None,
        requested_at: int,
        expires_in_minutes: int,
        check_phrase: str,
        qr_png: bytes,
        qr_size: int,
    ) -> bytes:
        """`multipart/alternative`: the text, and the HTML with the QR code of the link as a
        `cid:` image in `multipart/related` (RFC 2387)."""
        values = {
            "app_name": self.app_name,
            "recipient": recipient,
            "device": device_name or "a device",
            "requested_at": utc_time(requested_at),
            "link": link,
            "expires_in_minutes": str(expires_in_minutes),
            "check_phrase": check_phrase,
        }
        content_id = qr_content_id(message_id)
        html_values = {**values, "qr_src": f"cid:{content_id}", "qr_size": str(qr_size)}
        message = _message(
            sender=self.sender,
            recipient=recipient,
            subject=self.templates.subject("login_link.subject.txt", values),
            message_id=message_id,
            sent_at=requested_at,
        )
        message.set_content(self.templates.text("login_link.txt", values))
        message.add_alternative(self.templates.html("login_link.html", html_values), subtype="html")
        html_part = message.get_body(preferencelist=("html",))
        if html_part is None:  # pragma: no cover - added just above
            raise RuntimeError("the HTML part is missing")
        html_part.add_related(
            qr_png,
            maintype="image",
            subtype="png",
            cid=f"<{content_id}>",
            disposition="inline",
            filename="sign-in-code.png",
        )
        html_part.set_param("type", "text/html")  # RFC 2387 §3.1: the root part's type
        return _stable_bytes(message, message_id)

    def no_account(self, *, recipient: str, message_id: str, requested_at: int) -> bytes:
        values = {
            "app_name": self.app_name,
            "recipient": recipient,
            "requested_at": utc_time(requested_at),
        }
        message = _message(
            sender=self.sender,
            recipient=recipient,
            subject=self.templates.subject("no_account.subject.txt", values),
            message_id=message_id,
            sent_at=requested_at,
        )
        message.set_content(self.templates.text("no_account.txt", values))
        return _stable_bytes(message, message_id)

    def new_device(
        self,
        *,
        recipient: str,
        message_id: str,
        device_name: str | None,
        key_alg: str,
        signed_in_at: int,
        session_id: str,
        check_phrase: str,
    ) -> bytes:
        """The notice after a completed login (NIST SP 800-63B-4 §4.6): which device, when,
        and how to end its session."""
        values = {
            "app_name": self.app_name,
            "recipient": recipient,
            "device": device_name or "a device without a name",
            "key_alg": key_alg,
            "signed_in_at": utc_time(signed_in_at),
            "session_id": session_id,
            "check_phrase": check_phrase,
        }
        message = _message(
            sender=self.sender,
            recipient=recipient,
            subject=self.templates.subject("new_device.subject.txt", values),
            message_id=message_id,
            sent_at=signed_in_at,
        )
        message.set_content(self.templates.text("new_device.txt", values))
        message.add_alternative(self.templates.html("new_device.html", values), subtype="html")
        return _stable_bytes(message, message_id)
