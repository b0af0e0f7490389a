"""Protecting another API with splitlink access tokens: offline verification from the JWKS.

    app = protect(api, issuer="https://auth.example", public_url="https://api.example")

`protect` wraps any ASGI application in `DPoPAuthMiddleware`. Tokens are verified with the
issuer's published keys (fetched once, again when an unknown `kid` appears), proofs with `ath`
and `cnf.jkt`, replays against the given store. Revocation reaches such an API when the access
token expires (10 minutes by default), through introspection (SPEC.md §6.8), or through the
session lookup it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from starlette.types import ASGIApp

from server.clock import Clock, SystemClock
from server.dpop.guard import ResourceGuard
from server.dpop.jwks import RemoteJwks
from server.dpop.lookup import SessionLookup, TokenLifetimeOnly
from server.dpop.middleware import DPoPAuthMiddleware
from server.dpop.proof import DPoPGuard
from server.replay import MemoryReplayStore, ReplayStore


def protect(
    app: ASGIApp,
    *,
    issuer: str,
    public_url: str,
    audience: str | None = None,
    jwks_uri: str | None = None,
    replay_store: ReplayStore | None = None,
    http: httpx.AsyncClient | None = None,
    clock: Clock | None = None,
    session_check: SessionLookup[Any] | None = None,
    protect_path: Callable[[str], bool] = lambda path: True,
    max_age: int = 60,
    max_future: int = 60,
) -> DPoPAuthMiddleware:
    """Wrap `app` so that every request on a protected path carries a valid token and proof.

    Args:
        issuer: the splitlink server's issuer URL (its public URL).
        public_url: this API's own origin, as clients call it (checked against `htu`).
        audience: the `aud` to require; splitlink's default audience is its issuer.
        replay_store: shared by every process of this API; the default keeps entries in this
            process only, which is right for a single process and wrong for several.
        session_check: a lookup of the token's session on every request; without one, a
            session counts as live while its token is valid.
    """
    clock = clock or SystemClock()
    retention = max_age + max_future + 1
    guard = ResourceGuard(
        issuer=issuer,
        audience=audience or issuer,
        keys=RemoteJwks(jwks_uri or issuer.rstrip("/") + "/.well-known/jwks.json", http=http),
        dpop=DPoPGuard(
            public_url=public_url,
            max_age=max_age,
            max_future=max_future,
            replay=replay_store or MemoryReplayStore(retention=retention),
            clock=clock,
        ),
        clock=clock,
        sessions=TokenLifetimeOnly() if session_check is None else session_check,
    )
    return DPoPAuthMiddleware(app, guard=guard, protect=protect_path)
