"""Header values of outgoing mail, checked before the email package sees them (SPEC.md §7.3).

The SMTP policy refuses a value that spans lines, but writes NUL and most other controls as they
are (SPEC.md §7.3, D6). So every value is checked here first: a control character, a line or
paragraph separator or a lone surrogate raises `HeaderError`, whose text names the header, never
the value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.charset import QP, Charset
from email.header import Header
from email.headerregistry import Address
from email.policy import SMTP, Policy

# C0 and C1 controls (CR, LF, TAB, NUL, ...), DEL, the line and paragraph separators (header
# folding breaks lines at them) and lone surrogates (not text, and not encodable).
_NOT_IN_HEADERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# Addresses and message IDs: printable ASCII only.
_NOT_IN_ADDRESSES = re.compile(r"[^\x20-\x7e]")
_MAX_LINE_OCTETS = 998  # RFC 5322 §2.1.1, without the CRLF
# UTF-8 in "Q" encoded words, which keep ASCII text readable. An instance of its own:
# `email.charset.add_charset` would change the default for every user of the package.
_UTF8_Q = Charset("utf-8")
_UTF8_Q.header_encoding = QP


class HeaderError(ValueError):
    """A header value that could break the message's header block (SPEC.md §7.3, D6)."""


def one_line(text: str) -> str:
    """Every run of white space (line breaks included) as one space, none at either end."""
    return " ".join(text.split())


def has_control_character(text: str) -> bool:
    return _NOT_IN_HEADERS.search(text) is not None


def checked(name: str, value: str) -> str:
    if has_control_character(value):
        raise HeaderError(f"{name}: a header value must be one line without control characters")
    return value


def address_text(name: str, value: str) -> str:
    """An address or a message ID: printable ASCII, so nothing to encode."""
    if _NOT_IN_ADDRESSES.search(value):
        raise HeaderError(f"{name}: an address must be printable ASCII on one line")
    return value


@dataclass(frozen=True, slots=True)
class EncodedWords:
    """A header written whole as RFC 2047 encoded words of UTF-8, in the "Q" encoding.

    The SMTP policy writes ASCII text as it is, and a reader decodes any "=?...?=" in it: a
    device name "=?utf-8?q?evil=2Etest?=" would show as "evil.test". Encoded, text that looks
    like an encoded word shows as written. The policy calls `fold` on any value with a `name`."""

    name: str
    text: str

    def fold(self, *, policy: Policy) -> str:
        header = Header(self.text, _UTF8_Q, header_name=self.name)
        encoded = header.encode(linesep=policy.linesep, maxlinelen=policy.max_line_length)
        return f"{self.name}: {encoded}{policy.linesep}"

    def __str__(self) -> str:
        return self.text


def subject(text: str) -> str | EncodedWords:
    """The subject, already one line: as it is if ASCII without "=?" (the policy folds it at
    its spaces and encodes any word too long for a line), else whole as encoded words."""
    checked("Subject", text)
    if text.isascii() and "=?" not in text:
        return text
    return EncodedWords("Subject", text)


def sender(mail_from: str) -> Address:
    """The one address of `mail_from` ("Name <addr>" or "addr"), parsed as the settings check
    it; comments are left out. Checked when the composer is built, not in every message."""
    checked("From", mail_from)
    parsed = SMTP.header_factory("From", mail_from)
    addresses: tuple[Address, ...] = getattr(parsed, "addresses", ())
    if len(addresses) != 1 or parsed.defects:
        raise HeaderError("From: mail_from must hold exactly one address")
    (address,) = addresses
    address_text("From", address.addr_spec)
    single = Address(display_name=address.display_name, addr_spec=address.addr_spec)
    # An address has no space to fold at: one of hundreds of characters would not fit a line.
    folded = SMTP.header_factory("From", [single]).fold(policy=SMTP)
    if max(len(line) for line in folded.split("\r\n")) > _MAX_LINE_OCTETS:
        raise HeaderError("From: mail_from is too long for a header line")
    return single
