"""Protecting another API with splitlink access tokens: offline verification from the JWKS.

    app = protect(api, issuer="https://auth.example", public_url="https://api.example")

`protect` wraps any ASGI application in `DPoPAuthMiddleware`. Tokens are verified with the
issuer's published keys (fetched once, again when an unknown `kid` appears), proofs with `ath`
and `cnf.jkt`, replays against the given store. Revocation reaches such an API when the access
token expires (10 minutes by default) or through introspection (SPEC.md §6.8).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import httpx
from starlette.types import ASGIApp

from protocol.errors import InvalidKey, MalformedInput
from protocol.keys import PublicKey, parse_public_jwk
from server.clock import Clock, SystemClock
from server.dpop_guard import DPoPGuard
from server.errors import TemporarilyUnavailable
from server.replay import MemoryReplayStore, ReplayStore
from server.resource import ResourceGuard, SessionCheck
from server.resource_middleware import DPoPAuthMiddleware

logger = logging.getLogger("splitlink.protect")

MIN_RELOAD_INTERVAL = 5.0
# The issuer serves its JWKS with max-age=60: keys are refetched at least that often, so a key
# the issuer retires stops verifying here within a minute.
MAX_KEY_AGE = 60.0


class RemoteJwks:
    """The issuer's JWKS over HTTPS, cached; refetched at most every MIN_RELOAD_INTERVAL s."""

    def __init__(self, jwks_uri: str, *, http: httpx.AsyncClient | None = None) -> None:
        self._jwks_uri = jwks_uri
        self._http = http
        self._keys: dict[str, PublicKey] = {}
        self._last_reload = -MIN_RELOAD_INTERVAL

    def verification_keys(self) -> Mapping[str, PublicKey]:
        return self._keys

    async def refresh_if_stale(self) -> None:
        if time.monotonic() - self._last_reload >= MAX_KEY_AGE:
            try:
                await self.reload(force=True)
            except TemporarilyUnavailable:
                # Keep the keys held until the next try; an unreachable issuer must not take
                # the API down with it, and a retired key is still dropped within a minute of
                # the issuer answering again.
                if not self._keys:
                    raise
                logger.warning("the issuer's keys could not be refetched; keeping the cached set")

    async def reload(self, *, force: bool = False) -> bool:
        if not force and time.monotonic() - self._last_reload < MIN_RELOAD_INTERVAL:
            return False
        self._last_reload = time.monotonic()
        try:
            if self._http is not None:
                response = await self._http.get(self._jwks_uri)
            else:
                async with httpx.AsyncClient(timeout=5.0) as client:
                    response = await client.get(self._jwks_uri)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise TemporarilyUnavailable("the issuer's keys cannot be fetched") from exc
        keys: dict[str, PublicKey] = {}
        for jwk in document.get("keys", []) if isinstance(document, dict) else []:
            kid = jwk.get("kid") if isinstance(jwk, dict) else None
            if not isinstance(kid, str):
                continue
            try:
                key = parse_public_jwk({k: v for k, v in jwk.items() if k not in ("kid", "use")})
            except (InvalidKey, MalformedInput):
                continue
            # A kid is the key's thumbprint: a key published under another name is ignored.
            if key.thumbprint == kid:
                keys[kid] = key
        self._keys = keys
        return True


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
    session_check: SessionCheck | None = None,
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
        session_check=session_check,
    )
    return DPoPAuthMiddleware(app, guard=guard, protect=protect_path)
