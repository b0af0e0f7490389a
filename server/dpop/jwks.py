"""The issuer's published keys for an API under `protect()`: fetched over HTTPS and kept, refetched
when they are a minute old or name no key a token was signed with (SPEC.md §6.5, "Other APIs")."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import httpx

from protocol.errors import InvalidKey, MalformedInput
from protocol.keys import PublicKey, parse_public_jwk
from server.errors import TemporarilyUnavailable

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
