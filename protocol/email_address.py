"""Email addresses: one grammar and one canonical form (SPEC.md §5.1).

Validation happens on what will be used: the domain is mapped to its IDNA A-label first, then
checked; the local part must be an ASCII dot-atom, which rules out Unicode case-mapping
collisions (threats.md D1) and parser differentials (D5). The canonical form lowercases the ASCII
local part and the domain; it keys users, uniqueness and rate limits. Mail goes to `address`.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

import idna

from protocol.errors import InvalidEmail

MAX_ADDRESS_LENGTH = 254
MAX_LOCAL_PART_LENGTH = 64
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Cc controls (CR, LF, NUL, ...), Cf format characters (bidi overrides, zero-width joiners),
# line and paragraph separators, and every space.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Zs"})


@dataclass(frozen=True)
class EmailAddress:
    address: str
    canonical: str


def parse_email_address(value: object) -> EmailAddress:
    """Accept exactly one address in the SPEC.md §5.1 grammar, or raise InvalidEmail."""
    if not isinstance(value, str):
        raise InvalidEmail("email must be a single string")
    if len(value) > MAX_ADDRESS_LENGTH:
        raise InvalidEmail(f"email is longer than {MAX_ADDRESS_LENGTH} characters")
    if any(unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in value):
        raise InvalidEmail("email must not contain spaces or control characters")
    if value.count("@") != 1:
        raise InvalidEmail("email must contain exactly one @ (one address only)")
    local, domain = value.split("@")
    if not local.isascii():
        raise InvalidEmail("the part before @ must be ASCII")
    if len(local) > MAX_LOCAL_PART_LENGTH or _DOT_ATOM.fullmatch(local) is None:
        raise InvalidEmail("the part before @ is not a valid address")
    if _holds_encoded_word(local):
        raise InvalidEmail("the part before @ must not hold an encoded-word (=?...?=)")
    ascii_domain = _mail_domain(domain)
    if isinstance(ascii_domain, InvalidEmail):
        raise InvalidEmail(str(ascii_domain))
    address = f"{local}@{ascii_domain}"
    if len(address) > MAX_ADDRESS_LENGTH:
        raise InvalidEmail(f"email is longer than {MAX_ADDRESS_LENGTH} characters")
    return EmailAddress(address=address, canonical=f"{local.lower()}@{ascii_domain}")


def _holds_encoded_word(local: str) -> bool:
    """An RFC 2047 encoded-word, `=?charset?encoding?text?=`, is not allowed in an address
    (RFC 2047 §5), yet some mail software decodes it there, into any bytes: `@`, `>`, NUL. Then
    the address the server checked is not the one that software delivers to. Refused in any
    shape: an opening `=?` with a closing `?=` after it, in any case and any charset."""
    opening = local.find("=?")
    return opening >= 0 and "?=" in local[opening + 2 :]


# Most addresses share a few domains, and the IDNA mapping with the checks of its result is most
# of a parse: it is kept for the domains seen last.
# Bounded, so that a stream of invented domains only costs memory up to the bound. A refusal is
# kept as its error, raised anew by each caller.
@functools.lru_cache(maxsize=1024)
def _mail_domain(domain: str) -> str | InvalidEmail:
    """The domain's A-label form, or the error that refuses it."""
    try:
        ascii_domain = idna.encode(domain, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return InvalidEmail("the domain is not a valid host name")
    labels = ascii_domain.split(".")
    if len(labels) < 2 or any(_LDH_LABEL.fullmatch(label) is None for label in labels):
        return InvalidEmail("the domain is not a valid host name")
    # An all-numeric top label is an IP address, not a mail domain (RFC 3696 §2).
    if labels[-1].isdigit():
        return InvalidEmail("the domain must be a host name, not an address")
    return ascii_domain
