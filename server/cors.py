"""CORS for web apps on other origins (SPEC.md §10, `cors_origins`).

Starlette's `CORSMiddleware` answers preflights and adds the headers, but only to requests from
a listed origin: it would otherwise add `Access-Control-Expose-Headers` to every answer, and a
refusal to every preflight. Requests from any other origin, or without `Origin`, reach the app
as if there were no CORS at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# What the SDK sends and must read: the proof and the token; the nonce, the challenge, and the
# server's clock, from which a device with a wrong clock dates its proofs.
ALLOWED_METHODS = ("GET", "POST", "DELETE")
ALLOWED_HEADERS = ("Authorization", "DPoP", "Content-Type")
EXPOSED_HEADERS = ("DPoP-Nonce", "WWW-Authenticate", "Date")
PREFLIGHT_MAX_AGE = 600


class ListedOriginsCORS:
    def __init__(self, app: ASGIApp, *, origins: Sequence[str]) -> None:
        self.app = app
        self.origins = frozenset(origin.encode("latin-1") for origin in origins)
        self.cors = CORSMiddleware(
            app,
            allow_origins=list(origins),
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            max_age=PREFLIGHT_MAX_AGE,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif self._listed_origin(scope):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, _vary_by_origin(send))

    def _listed_origin(self, scope: Scope) -> bool:
        origins = [value for name, value in scope["headers"] if name == b"origin"]
        return len(origins) == 1 and origins[0] in self.origins


def _vary_by_origin(send: Send) -> Send:
    """An answer without CORS headers still varies by `Origin`: a shared cache must not serve
    it to a listed origin's page (metadata and JWKS are cacheable)."""

    async def send_varying(message: Message) -> None:
        if message["type"] == "http.response.start":
            MutableHeaders(scope=message).add_vary_header("Origin")
        await send(message)

    return send_varying
