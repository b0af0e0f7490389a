"""The three messages, composed from their values and the deployment's wording (SPEC.md §7.3).

Composing is pure: everything a message shows is an argument, the configuration or a template,
so the same arguments give the same bytes. The text templates get the values as they are but for
the two a requester chooses, which no mail client may make a link of: the device name is made
inert (`inert_text`), and a recipient whose local part could pass for part of a URL is shown as
"this address".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address

from server.mail import header_values
from server.mail.inert import inert_text
from server.mail.mail_templates import MailTemplates
from server.mail.mime import Body, Envelope, InlinePng, Multipart, Text, boundaries, message_bytes

# A local part that mail clients link, if at all, as part of the address itself (mailto:).
_PLAIN_LOCAL_PART = re.compile(r"[A-Za-z0-9._+-]+")


def utc_time(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def qr_content_id(message_id: str) -> str:
    """The Content-ID of the QR image: derived from the Message-ID, so unique and stable."""
    return "qr." + message_id.strip("<>")


def _device(name: str | None, unnamed: str) -> str:
    """The device name as every part and header shows it: inert, and `unnamed` where nothing
    of it is left."""
    return (inert_text(name) if name is not None else "") or unnamed


def _shown_recipient(recipient: str) -> str:
    """The recipient as the text of a message shows it. A local part may hold "/", "?" or "#",
    which autolinkers read as a URL's path, query and fragment ("evil.test/l@victim.example"
    becomes a link to evil.test), and where the domain takes every local part the requester
    chooses it whole. Such an address is shown as "this address"; the `To` header names it."""
    local_part = recipient.rpartition("@")[0]
    return recipient if _PLAIN_LOCAL_PART.fullmatch(local_part) else "this address"


@dataclass(frozen=True)
class MailComposer:
    """Everything a message needs that comes from configuration."""

    app_name: str
    sender: str
    templates: MailTemplates
    _sender: Address = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Both end up in headers (the app name in subjects): refused here, when the server
        # starts, rather than in every message.
        header_values.checked("app_name", self.app_name)
        object.__setattr__(self, "_sender", header_values.sender(self.sender))

    def _message(
        self, body: Body, *, recipient: str, subject: str, message_id: str, sent_at: int
    ) -> bytes:
        envelope = Envelope(
            sender=self._sender,
            recipient=recipient,
            subject=header_values.subject(subject),
            message_id=message_id,
            sent_at=sent_at,
        )
        return message_bytes(envelope, body)

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
            "recipient": _shown_recipient(recipient),
            "device": _device(device_name, "a device"),
            "requested_at": utc_time(requested_at),
            "link": link,
            "expires_in_minutes": str(expires_in_minutes),
            "check_phrase": check_phrase,
        }
        content_id = header_values.address_text("Content-ID", qr_content_id(message_id))
        html_values = {**values, "qr_src": f"cid:{content_id}", "qr_size": str(qr_size)}
        alternative_boundary, related_boundary = boundaries(message_id)
        related = Multipart(
            "related",
            related_boundary,
            (
                Text("html", self.templates.html("login_link.html", html_values)),
                InlinePng(qr_png, content_id, "sign-in-code.png"),
            ),
            root_type="text/html",
        )
        body = Multipart(
            "alternative",
            alternative_boundary,
            (Text("plain", self.templates.text("login_link.txt", values)), related),
        )
        return self._message(
            body,
            recipient=recipient,
            subject=self.templates.subject("login_link.subject.txt", values),
            message_id=message_id,
            sent_at=requested_at,
        )

    def no_account(self, *, recipient: str, message_id: str, requested_at: int) -> bytes:
        values = {
            "app_name": self.app_name,
            "recipient": _shown_recipient(recipient),
            "requested_at": utc_time(requested_at),
        }
        return self._message(
            Text("plain", self.templates.text("no_account.txt", values)),
            recipient=recipient,
            subject=self.templates.subject("no_account.subject.txt", values),
            message_id=message_id,
            sent_at=requested_at,
        )

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
            "recipient": _shown_recipient(recipient),
            "device": _device(device_name, "a device without a name"),
            "key_alg": key_alg,
            "signed_in_at": utc_time(signed_in_at),
            "session_id": session_id,
            "check_phrase": check_phrase,
        }
        alternative_boundary, _ = boundaries(message_id)
        body = Multipart(
            "alternative",
            alternative_boundary,
            (
                Text("plain", self.templates.text("new_device.txt", values)),
                Text("html", self.templates.html("new_device.html", values)),
            ),
        )
        return self._message(
            body,
            recipient=recipient,
            subject=self.templates.subject("new_device.subject.txt", values),
            message_id=message_id,
            sent_at=signed_in_at,
        )
