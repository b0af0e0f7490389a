"""Rendering of outgoing mail (pure: everything it shows is an argument or a template).

Templates are `string.Template` files in server/mail/templates/; a deployment replaces any of them
with a file of the same name in `SPLITLINK_MAIL_TEMPLATES_DIR`. Each template may use only the
placeholders listed in `PLACEHOLDERS`, and every template is checked when the server starts. In
the HTML templates every value is HTML-escaped before substitution (threats.md D7); the text
templates get the values as they are, but for the two a requester chooses, which no mail
client may make a link of (SPEC.md §7.3): the device name is made inert first (`inert_text`),
and a recipient whose local part could pass for part of a URL is shown as "this address".

Rendering is deterministic: the same arguments give the same bytes, MIME boundaries included, so
the dispatcher can render a queued order again for a second hand-off (SPEC.md §7.4).

Messages are written by `write_message` with CRLF line endings, byte for byte as the
`email.mime` classes and `BytesGenerator` under `policy.compat32` (see `_POLICY`) write them,
which is how `EmailMessage.as_bytes` wrote them under the SMTP policy before. Header values still
pass through compat32's folding and text through the package's quoted-printable encoder; the
MIME structure around them is written here. The SMTP policy's header registry and content
manager took most of the dispatcher's CPU under a login load, and `email.mime` with its
generator still most of a rendering. Measured back to back on one machine (means over 300,
QR code excluded): a login mail took 0.84 ms through `email.mime` and takes 0.28 ms, a
new-device notice 0.45 ms and 0.18 ms (under the SMTP policy, on another machine: 2.1 ms and
1.35 ms). compat32 writes what it is given, so what the SMTP policy did for these messages is
done here:

- Header injection (threats.md D6): compat32 refuses a line break in a header value only where
  what follows looks like a header field (CR LF "Bcc: ..."); it writes other line breaks, NUL
  and the other controls as they are. Every header value is checked before it is set: one
  with a control character (CR, LF, TAB, NUL, ...), a line or paragraph separator or a lone
  surrogate raises `HeaderError`. The subject is made one line first (`MailTemplates.subject`
  turns every run of white space, line breaks included, into one space). The app name and
  `mail_from` are checked when the composer is built and subject templates when they are
  loaded, so a broken configuration stops the server instead of failing every message. The
  user-influenced values a subject template may show (recipient, device name) are validated
  before they get here (SPEC.md §5); the check here is the last barrier.
- 7-bit: text bodies are UTF-8 in quoted-printable, the QR code base64, so any SMTP server
  carries them without the 8BITMIME extension, and no body line exceeds 76 characters.
- Headers: a subject that is not ASCII, or that compat32 could not fold at its spaces within 78
  characters a line, is written as RFC 2047 encoded words of UTF-8, which fold anywhere. The
  display name in `mail_from` is quoted or encoded once, when the composer is built, by the
  header registry that also checks the setting. Addresses and the Message-ID must be printable
  ASCII.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import quoprimime
from email.charset import QP, Charset
from email.header import Header
from email.headerregistry import Address
from email.policy import SMTP, Compat32
from email.utils import format_datetime
from pathlib import Path
from string import Template
from typing import Any

from server.mail.inert import inert_text

DEFAULT_TEMPLATES_DIR = Path(__file__).parent / "templates"

# Header text in UTF-8, as quoted-printable RFC 2047 encoded words ("Q"). An instance of its
# own: `email.charset.add_charset` would change the default for every user of the package.
_UTF8 = Charset("utf-8")
_UTF8.header_encoding = QP

# What no header value may hold: C0 and C1 controls (CR, LF, TAB, NUL, ...), DEL, the line and
# paragraph separators (str.splitlines() and so the header folding break lines at them, as at
# several of the controls) and lone surrogates (not text, and not encodable).
_NOT_IN_HEADERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# Addresses and message IDs: printable ASCII only.
_NOT_IN_ADDRESSES = re.compile(r"[^\x20-\x7e]")
# compat32 folds an ASCII header value only at its spaces; a word of up to 77 characters fits on
# a continuation line (" " + word) of 78.
_LONGEST_FOLDABLE_WORD = 77
_MAX_LINE_OCTETS = 998  # RFC 5322 §2.1.1, without the CRLF


class _Compat32(Compat32):
    """compat32 with one shortcut: a header that fits on its line is written as it is.

    compat32 passes every header through `email.header.Header`, which gives such a header back
    unchanged, at about 20 µs a header: half the time of a whole message."""

    def fold_binary(self, name: str, value: Any) -> bytes:
        if (
            isinstance(value, str)
            and self.max_line_length is not None
            and len(name) + 2 + len(value) <= self.max_line_length
            and value.isascii()
            and not _NOT_IN_HEADERS.search(value)
        ):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


# Long header lines are folded at 78 characters (RFC 5322 §2.1.1), every line ends in CRLF.
_POLICY = _Compat32(linesep="\r\n", cte_type="7bit")

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


class HeaderError(ValueError):
    """A header value that could break the message's header block (threats.md D6). The text
    names the header, never the value."""


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
            # A subject's line breaks and other white space become single spaces (`subject`);
            # any other control character would be refused in every message.
            if name.endswith(".subject.txt") and _NOT_IN_HEADERS.search(
                _one_line(template.template)
            ):
                raise TemplateError(f"{path}: a control character in a subject")
            templates[name] = template
        return cls(templates)

    def text(self, name: str, values: dict[str, str]) -> str:
        return self.templates[name].substitute(values)

    def html(self, name: str, values: dict[str, str]) -> str:
        escaped = {key: html.escape(value, quote=True) for key, value in values.items()}
        return self.templates[name].substitute(escaped)

    def subject(self, name: str, values: dict[str, str]) -> str:
        return _one_line(self.text(name, values))


def _one_line(text: str) -> str:
    """Every run of white space (line breaks included) as one space, none at either end."""
    return " ".join(text.split())


def utc_time(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _device(name: str | None, unnamed: str) -> str:
    """The device name as every part and header shows it: inert (no mail client makes a link
    of it, SPEC.md §7.3), and `unnamed` where nothing of it is left."""
    return (inert_text(name) if name is not None else "") or unnamed


# A local part that mail clients link, if at all, as part of the address itself (mailto:).
_PLAIN_LOCAL_PART = re.compile(r"[A-Za-z0-9._+-]+")


def _shown_recipient(recipient: str) -> str:
    """The recipient as the text of a message shows it. An address accepted at start may hold
    "/", "?" or "#" in its local part, which autolinkers read as a URL's path, query and
    fragment ("evil.test/l@victim.example" becomes a link to evil.test); where the domain
    takes every local part, the requester chooses it whole (SPEC.md §7.3). Such an address is
    shown as "this address"; the `To` header names it."""
    local_part = recipient.rpartition("@")[0]
    return recipient if _PLAIN_LOCAL_PART.fullmatch(local_part) else "this address"


def _checked(name: str, value: str) -> str:
    if _NOT_IN_HEADERS.search(value):
        raise HeaderError(f"{name}: a header value must be one line without control characters")
    return value


def _address(name: str, value: str) -> str:
    """An address or a message ID, set as it is: printable ASCII, so nothing to encode."""
    if _NOT_IN_ADDRESSES.search(value):
        raise HeaderError(f"{name}: an address must be printable ASCII on one line")
    return value


def _unstructured(name: str, value: str) -> str | Header:
    """A text header (the subject): as it is if compat32 can fold it at its spaces, else as
    RFC 2047 encoded words of UTF-8 (those fold anywhere). Text that looks like an encoded word
    ("=?") is encoded too, so that a reader shows it as it was written."""
    _checked(name, value)
    if (
        value.isascii()
        and "=?" not in value
        and all(len(word) <= _LONGEST_FOLDABLE_WORD for word in value.split(" "))
    ):
        return value
    return Header(value, _UTF8, header_name=name)


def _from_value(mail_from: str) -> str:
    """The `From` value for `mail_from` ("Name <addr>" or "addr"), made once per composer.

    Parsed as the settings check it, by the header registry; its display name is quoted or
    RFC 2047-encoded as needed, comments are left out. Returned unfolded (the RFC 5322 §2.2.3
    unfolding of the registry's folding: its line breaks removed), for compat32 to fold again
    at the same spaces."""
    _checked("From", mail_from)
    parsed = SMTP.header_factory("From", mail_from)
    addresses: tuple[Address, ...] = getattr(parsed, "addresses", ())
    if len(addresses) != 1 or parsed.defects:
        raise HeaderError("From: mail_from must hold exactly one address")
    (address,) = addresses
    single = Address(display_name=address.display_name, addr_spec=address.addr_spec)
    folded = SMTP.header_factory("From", [single]).fold(policy=SMTP)
    value = _address("From", folded.removeprefix("From: ").replace("\r\n", ""))
    # An address has no space to fold at: one of hundreds of characters would not fit a line.
    lines = _POLICY.fold("From", value).split("\r\n")
    if max(len(line) for line in lines) > _MAX_LINE_OCTETS:
        raise HeaderError("From: mail_from is too long for a header line")
    return value


def _boundaries(message_id: str) -> tuple[str, str]:
    """The MIME boundaries of a message, in the order its multipart parts are written, derived
    from the Message-ID instead of drawn at random, so that the same order renders to the same
    bytes every time (SPEC.md §7.4).

    A boundary must not occur in any body. Every body here is quoted-printable or base64, and
    neither ever holds "=_", whatever text or image it carries: in quoted-printable "=" is
    followed by two hexadecimal digits or ends a line, and base64 has no "_"."""
    digest = hashlib.sha256(message_id.encode()).hexdigest()[:32]
    return f"=_0.{digest}", f"=_1.{digest}"


@dataclass(frozen=True, slots=True)
class TextPart:
    """UTF-8 text in quoted-printable: 7-bit, lines of at most 76 characters."""

    subtype: str
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """A PNG image in base64, shown inline and named by its Content-ID (`cid:` in the HTML)."""

    png: bytes
    content_id: str
    filename: str


@dataclass(frozen=True, slots=True)
class Multipart:
    subtype: str
    boundary: str
    parts: tuple[MimePart, ...]
    # RFC 2387 §3.1: the `type` parameter of multipart/related names its root part's type.
    root_type: str | None = None


MimePart = TextPart | ImagePart | Multipart
Headers = list[tuple[str, "str | Header"]]

_CRLF = b"\r\n"


def content_headers(part: MimePart) -> list[tuple[str, str]]:
    """A part's MIME headers, in the order and form `email.mime` gives them."""
    if isinstance(part, TextPart):
        return [
            ("Content-Type", f'text/{part.subtype}; charset="utf-8"'),
            ("Content-Transfer-Encoding", "quoted-printable"),
        ]
    if isinstance(part, ImagePart):
        return [
            ("Content-Type", "image/png"),
            ("Content-Transfer-Encoding", "base64"),
            ("Content-Disposition", f'inline; filename="{part.filename}"'),
            ("Content-ID", _address("Content-ID", f"<{part.content_id}>")),
        ]
    root = f'; type="{part.root_type}"' if part.root_type is not None else ""
    return [("Content-Type", f'multipart/{part.subtype}{root}; boundary="{part.boundary}"')]


def _encoded_body(part: MimePart) -> bytes:
    if isinstance(part, TextPart):
        # What `Charset.body_encode` does: the UTF-8 bytes, one code point each, through the
        # package's own quoted-printable encoder; its lines end in LF.
        encoded = quoprimime.body_encode(part.text.encode("utf-8").decode("latin-1"))
        return encoded.replace("\n", "\r\n").encode("ascii")
    if isinstance(part, ImagePart):
        return base64.encodebytes(part.png).replace(b"\n", _CRLF)
    # RFC 2046 §5.1.1: the first delimiter, each part after a delimiter, the close delimiter.
    delimiter = b"--" + part.boundary.encode("ascii")
    out = [delimiter, _CRLF]
    for index, child in enumerate(part.parts):
        if index:
            out += [_CRLF, delimiter, _CRLF]
        out.append(_entity(content_headers(child), child))
    out += [_CRLF, delimiter, b"--", _CRLF]
    return b"".join(out)


def _entity(headers: Sequence[tuple[str, str | Header]], part: MimePart) -> bytes:
    folded = b"".join(_POLICY.fold_binary(name, value) for name, value in headers)
    return folded + _CRLF + _encoded_body(part)


def write_message(headers: Headers, body: MimePart) -> bytes:
    """The message: `headers`, then the MIME headers and the encoded content of `body`.

    Writes the bytes that `BytesGenerator` under `_POLICY` writes for the same message built
    with the `email.mime` classes (tests/mail/test_message_format.py compares the two over every
    kind of message), at a fifth of the cost: the package's generator and `Message` machinery
    took most of a rendering. Header values still go through the policy's own folding, and
    text through the package's quoted-printable encoder."""
    return _entity([*headers, *content_headers(body)], body)


def qr_content_id(message_id: str) -> str:
    """The Content-ID of the QR image: derived from the Message-ID, so unique and stable."""
    return "qr." + message_id.strip("<>")


@dataclass(frozen=True)
class MailComposer:
    """Everything a message needs that comes from configuration."""

    app_name: str
    sender: str
    templates: MailTemplates
    _from: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Both end up in headers (the app name in subjects): refused here, when the server
        # starts, rather than in every message.
        _checked("app_name", self.app_name)
        object.__setattr__(self, "_from", _from_value(self.sender))

    def _bytes(
        self, body: MimePart, *, recipient: str, subject: str, message_id: str, sent_at: int
    ) -> bytes:
        headers: Headers = [
            ("From", self._from),
            ("To", _address("To", recipient)),
            ("Subject", _unstructured("Subject", subject)),
            ("Message-ID", _address("Message-ID", message_id)),
            ("Date", format_datetime(datetime.fromtimestamp(sent_at, UTC))),
            ("Auto-Submitted", "auto-generated"),
            ("MIME-Version", "1.0"),
        ]
        return write_message(headers, body)

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
        content_id = qr_content_id(message_id)
        html_values = {**values, "qr_src": f"cid:{content_id}", "qr_size": str(qr_size)}
        alternative_boundary, related_boundary = _boundaries(message_id)
        related = Multipart(
            "related",
            related_boundary,
            (
                TextPart("html", self.templates.html("login_link.html", html_values)),
                ImagePart(qr_png, content_id, "sign-in-code.png"),
            ),
            root_type="text/html",
        )
        body = Multipart(
            "alternative",
            alternative_boundary,
            (TextPart("plain", self.templates.text("login_link.txt", values)), related),
        )
        return self._bytes(
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
        return self._bytes(
            TextPart("plain", self.templates.text("no_account.txt", values)),
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
        alternative_boundary, _ = _boundaries(message_id)
        body = Multipart(
            "alternative",
            alternative_boundary,
            (
                TextPart("plain", self.templates.text("new_device.txt", values)),
                TextPart("html", self.templates.html("new_device.html", values)),
            ),
        )
        return self._bytes(
            body,
            recipient=recipient,
            subject=self.templates.subject("new_device.subject.txt", values),
            message_id=message_id,
            sent_at=signed_in_at,
        )
