"""The MIME message of a mail: `EmailMessage` under the SMTP policy (SPEC.md §7.3).

Lines end in CRLF and every body is 7-bit: text is UTF-8 in quoted-printable, the QR code
base64, so any SMTP server carries them without the 8BITMIME extension. The boundaries are
derived from the Message-ID instead of drawn at random, so the same order renders to the same
bytes every time (SPEC.md §7.4).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP

from server.mail.header_values import EncodedWords, HeaderError, address_text, checked

# Lines of at most 76 characters: RFC 2045 §6.7's limit for quoted-printable, which the
# policy's encoder takes from `max_line_length`; headers fold there too.
POLICY = SMTP.clone(max_line_length=76)


@dataclass(frozen=True, slots=True)
class Text:
    subtype: str
    text: str


@dataclass(frozen=True, slots=True)
class InlinePng:
    """Shown inline and named by its Content-ID, which the HTML refers to as `cid:`."""

    png: bytes = field(repr=False)
    content_id: str
    filename: str


@dataclass(frozen=True, slots=True)
class Multipart:
    subtype: str
    boundary: str
    parts: tuple[Body, ...]
    # RFC 2387 §3.1: the `type` parameter of multipart/related names its root part's type.
    root_type: str | None = None


Body = Text | InlinePng | Multipart

_MAKE_MULTIPART: dict[str, Callable[[MIMEPart, str], None]] = {
    "alternative": lambda part, boundary: part.make_alternative(boundary),
    "related": lambda part, boundary: part.make_related(boundary),
}


@dataclass(frozen=True, slots=True)
class Envelope:
    """The headers a message starts with, in this order."""

    sender: Address
    recipient: str
    subject: str | EncodedWords
    message_id: str
    sent_at: int


def boundaries(message_id: str) -> tuple[str, str]:
    """The boundaries of a message's multiparts, in the order they are nested.

    A boundary must not occur in any body. Every body is quoted-printable or base64, and neither
    ever holds "=_": in quoted-printable "=" is followed by two hexadecimal digits or ends a line,
    and base64 has no "_"."""
    digest = hashlib.sha256(message_id.encode()).hexdigest()[:32]
    return f"=_0.{digest}", f"=_1.{digest}"


def message_bytes(envelope: Envelope, body: Body) -> bytes:
    message = EmailMessage(policy=POLICY)
    message["From"] = envelope.sender
    message["To"] = address_text("To", checked("To", envelope.recipient))
    # The parser reads "a@b, c@d" as two addresses: the header must name the one recipient.
    to_addresses: tuple[Address, ...] = getattr(message["To"], "addresses", ())
    if [address.addr_spec for address in to_addresses] != [envelope.recipient]:
        raise HeaderError("To: must be exactly one address")
    message["Subject"] = envelope.subject
    message["Message-ID"] = address_text("Message-ID", envelope.message_id)
    message["Date"] = datetime.fromtimestamp(envelope.sent_at, UTC)
    message["Auto-Submitted"] = "auto-generated"
    # Before the content, which would add it after its own headers otherwise.
    message["MIME-Version"] = "1.0"
    _fill(message, body)
    return message.as_bytes()


def _fill(part: MIMEPart, body: Body) -> None:
    if isinstance(body, Text):
        part.set_content(body.text, subtype=body.subtype, charset="utf-8", cte="quoted-printable")
    elif isinstance(body, InlinePng):
        content_id = address_text("Content-ID", f"<{body.content_id}>")
        part.set_content(
            body.png,
            maintype="image",
            subtype="png",
            disposition="inline",
            filename=body.filename,
            cid=content_id,
        )
    else:
        _MAKE_MULTIPART[body.subtype](part, body.boundary)
        if body.root_type is not None:
            part.set_param("type", body.root_type)
        for child in body.parts:
            inner = MIMEPart(policy=POLICY)
            _fill(inner, child)
            part.attach(inner)
