"""`DPoPAuthMiddleware`: the resource guard as pure ASGI (no BaseHTTPMiddleware), for this
server's `/v1` endpoints and for any other Starlette/ASGI application that accepts splitlink
access tokens.

A request on a protected path reaches the application only after `ResourceGuard.authenticate`
succeeded; the `Principal` is in `scope["splitlink.principal"]` (and `request.state` is not
used, so nothing depends on Starlette). Refusals are answered here with the RFC 9449 §7.1
challenge. When server nonces are on, every answer carries a fresh `DPoP-Nonce`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.errors import SplitlinkError
from server.dpop.guard import Principal, ResourceGuard
from server.dpop.proof import RS_NONCES
from server.errors import error_response_parts

PRINCIPAL_KEY = "splitlink.principal"

GuardSource = ResourceGuard[Any] | Callable[[Scope], ResourceGuard[Any]]


def principal_of(scope: Scope) -> Principal[Any]:
    """The authenticated caller; its `session` is of the type the guard's lookup returns."""
    principal: Principal[Any] = scope[PRINCIPAL_KEY]
    return principal


async def _send_error(send: Send, exc: SplitlinkError, extra: dict[str, str]) -> None:
    status, body, headers = error_response_parts(exc)
    payload = json.dumps(body, separators=(",", ":")).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
    ]
    raw += [(k.lower().encode(), v.encode()) for k, v in {**extra, **headers}.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def _target_path(scope: Scope) -> str:
    """The path as the client sent it: `htu` names it percent-encoded, while scope["path"] is
    already decoded (RFC 9449 §4.3 compares URIs, RFC 3986 §6.2.2)."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes) and raw:
        try:
            return raw.decode("ascii").split("?", 1)[0]
        except UnicodeDecodeError:
            pass
    return str(scope["path"])


class DPoPAuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        guard: GuardSource,
        protect: Callable[[str], bool] = lambda path: True,
    ) -> None:
        self.app = app
        self._guard = guard
        self._protect = protect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._protect(scope["path"]):
            await self.app(scope, receive, send)
            return
        guard = self._guard if isinstance(self._guard, ResourceGuard) else self._guard(scope)
        nonce_headers = {}
        nonce = guard.dpop.fresh_nonce(RS_NONCES)
        if nonce is not None:
            nonce_headers["DPoP-Nonce"] = nonce
        try:
            principal = await guard.authenticate(
                Headers(scope=scope), method=scope["method"], path=_target_path(scope)
            )
        except SplitlinkError as exc:
            await _send_error(send, exc, nonce_headers)
            return
        scope[PRINCIPAL_KEY] = principal
        if not nonce_headers:
            await self.app(scope, receive, send)
            return

        async def send_with_nonce(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"dpop-nonce", nonce_headers["DPoP-Nonce"].encode()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_nonce)
