"""Strict reading of HTTP requests at the edge: headers, bodies, the client address."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import Scope

from protocol.encoding import parse_json_object
from protocol.errors import MalformedInput
from server.errors import RequestTooLarge, UnsupportedMediaType
from server.settings import IPNetwork


def header_values(request: Request, name: str) -> list[str]:
    """Every value of a header, so that duplicates are seen (Starlette's .get returns the first)."""
    return request.headers.getlist(name)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _declares_more_than(declared: str | None, limit: int) -> bool:
    """Whether a Content-Length of ASCII digits names more than `limit` bytes. Its digits are
    counted before any conversion: int() refuses thousands of digits with ValueError, and
    str.isdigit() also takes digits such as superscripts that int() refuses."""
    if declared is None or not (declared.isascii() and declared.isdigit()):
        return False
    digits = declared.lstrip("0")
    return len(digits) > len(str(limit)) or int(digits or "0") > limit


async def read_body(request: Request, *, limit: int) -> bytes:
    if _declares_more_than(request.headers.get("content-length"), limit):
        raise RequestTooLarge(f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_object(request: Request, *, limit: int) -> dict[str, Any]:
    if _media_type(request) != "application/json":
        raise UnsupportedMediaType("the body must be application/json")
    return parse_json_object(await read_body(request, limit=limit), field="request body")


async def read_form(request: Request, *, limit: int) -> dict[str, str]:
    """RFC 6749 §3.2 form parameters: a repeated parameter is an error, an empty one is absent."""
    if _media_type(request) != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("the body must be application/x-www-form-urlencoded")
    body = await read_body(request, limit=limit)
    try:
        text = body.decode("ascii")
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedInput("the form body is not valid") from exc
    form: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in pairs:
        if name in seen:
            raise MalformedInput(f"parameter {name!r} is repeated")
        seen.add(name)
        if value:
            form[name] = value
    return form


def client_ip(request: Request, trusted_proxies: Sequence[IPNetwork]) -> str:
    """The socket peer, unless it is a trusted proxy: then the nearest untrusted hop it reports."""
    peer = request.client.host if request.client else "unknown"
    if not trusted_proxies:
        return peer

    def trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        # A dual-stack listener reports an IPv4 peer as ::ffff:a.b.c.d.
        forms = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            forms.append(ip.ipv4_mapped)
        return any(form in network for form in forms for network in trusted_proxies)

    if not trusted(peer):
        return peer
    hops = [h.strip() for v in header_values(request, "x-forwarded-for") for h in v.split(",")]
    for hop in reversed(hops):
        if not trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return peer


def json_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# What a log line and a metric label name a path that no route matches: never the path itself.
UNMATCHED_ROUTE = "unmatched"


def route_template(scope: Scope) -> str:
    """The template of the route that answered (`/v1/sessions/{session_id}`), never the path
    itself. A request refused before routing (the `/v1/` authentication) is matched here."""
    route = scope.get("route")
    if isinstance(route, Route):
        return route.path
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", []):
        if isinstance(candidate, Route) and candidate.matches(scope)[0] is not Match.NONE:
            return candidate.path
    return UNMATCHED_ROUTE
