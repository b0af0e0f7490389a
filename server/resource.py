"""Authenticating a request that presents a DPoP-bound access token (RFC 9449 §7).

Used by the server's own `/v1` endpoints. Order: credentials syntax, the proof (with `ath`), the
token's signature and claims, the key binding (`cnf.jkt`), the session still being live, and last
the replay record, so that a rejected request does not burn its proof's `jti` (attacks.md B6).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from protocol.access_token import VerifiedAccessToken, verify_access_token
from protocol.errors import ErrorCode, InvalidDPoPProof, InvalidToken
from server.clock import Clock
from server.dpop_guard import DPoPGuard
from server.errors import ResourceError
from server.http import header_values
from server.signing_keys import KeySet

_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

SessionLookup = Callable[[VerifiedAccessToken, int], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True)
class Principal:
    user_id: str
    session_id: str
    jkt: str
    token: VerifiedAccessToken
    session: dict[str, Any]


def read_dpop_credentials(request: Request) -> str:
    values = header_values(request, "authorization")
    if not values:
        raise ResourceError(None, "an access token is required")
    if len(values) > 1:
        raise ResourceError(
            ErrorCode.INVALID_REQUEST, "exactly one Authorization header is allowed"
        )
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() == "bearer":
        raise ResourceError(
            ErrorCode.INVALID_TOKEN, "the token is bound to a key: use the DPoP scheme and a proof"
        )
    if scheme.lower() != "dpop":
        raise ResourceError(None, "the DPoP authorization scheme is required")
    token = token.strip(" ")
    if _TOKEN68.fullmatch(token) is None:
        raise ResourceError(ErrorCode.INVALID_TOKEN, "the access token is malformed")
    return token


class ResourceGuard:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        keys: Callable[[], KeySet],
        dpop: DPoPGuard,
        clock: Clock,
        session_lookup: SessionLookup,
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._keys = keys
        self._dpop = dpop
        self._clock = clock
        self._session_lookup = session_lookup

    async def authenticate(self, request: Request) -> Principal:
        token = read_dpop_credentials(request)
        try:
            proof = self._dpop.verify(request, path=request.url.path, access_token=token)
        except InvalidDPoPProof as exc:
            raise ResourceError(ErrorCode.INVALID_DPOP_PROOF, exc.description) from exc
        now = self._clock.now()
        try:
            verified = verify_access_token(
                token=token,
                keys=self._keys().verification_keys,
                issuer=self._issuer,
                audience=self._audience,
                now=now,
            )
        except InvalidToken as exc:
            raise ResourceError(ErrorCode.INVALID_TOKEN, exc.description) from exc
        if verified.jkt != proof.jkt:
            raise ResourceError(ErrorCode.INVALID_TOKEN, "the proof key is not the token's key")
        session = await self._session_lookup(verified, now)
        if session is None:
            raise ResourceError(ErrorCode.INVALID_TOKEN, "the session has ended")
        try:
            await self._dpop.record(proof)
        except InvalidDPoPProof as exc:
            raise ResourceError(ErrorCode.INVALID_DPOP_PROOF, exc.description) from exc
        return Principal(
            user_id=verified.subject,
            session_id=verified.session_id,
            jkt=verified.jkt,
            token=verified,
            session=session,
        )
