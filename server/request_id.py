"""The request id: one per HTTP request, returned in `X-Request-ID` and carried by every log
record and security event that the request causes (SPEC.md §6.12, §10)."""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Sequence
from contextvars import ContextVar, Token

from server.settings import IPNetwork

HEADER = "x-request-id"
# An id from a proxy is copied into every log line: short, and nothing a log reader could
# mistake for structure (no spaces, quotes, newlines or control characters).
_ACCEPTED = re.compile(r"[A-Za-z0-9._:-]{1,64}")

_current: ContextVar[str | None] = ContextVar("splitlink_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being handled, None outside a request."""
    return _current.get()


def new_request_id() -> str:
    return secrets.token_urlsafe(12)


def request_id_for(
    incoming: str | None, *, peer: str | None, trusted_proxies: Sequence[IPNetwork]
) -> str:
    """The proxy's id when a trusted proxy sent a well-formed one, else a fresh random one: a
    client must not choose the id under which its requests are logged."""
    if incoming is None or peer is None or not _ACCEPTED.fullmatch(incoming):
        return new_request_id()
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return new_request_id()
    # A dual-stack listener reports an IPv4 proxy as ::ffff:a.b.c.d, as client_ip allows for.
    forms = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        forms.append(address.ipv4_mapped)
    if any(form in network for form in forms for network in trusted_proxies):
        return incoming
    return new_request_id()


def bind_request_id(request_id: str | None) -> Token[str | None]:
    """Make `request_id` current; returns the token for `unbind_request_id`."""
    return _current.set(request_id)


def unbind_request_id(token: Token[str | None]) -> None:
    _current.reset(token)
