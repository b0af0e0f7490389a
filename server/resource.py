"""Authenticating a request that presents a DPoP-bound access token (RFC 9449 §7; SPEC.md §6.5).

One component serves the server's own `/v1` endpoints and any other API (through
`DPoPAuthMiddleware`). Order: credentials syntax, the proof (with `ath` and, when enabled, the
nonce), the token's signature and claims against the issuer's keys, the key binding (`cnf.jkt`),
the optional session check, and last the replay record, so that a refused request does not burn
its proof's `jti` (threats.md B6). A recording session check (the server's own endpoints) writes
the replay entry in the same round trip as the session lookup, so there a request refused because
its session has ended has used up its proof.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.datastructures import Headers

from protocol.access_token import VerifiedAccessToken, verify_access_token
from protocol.dpop import VerifiedDPoPProof, access_token_hash
from protocol.errors import ErrorCode, InvalidDPoPProof, InvalidToken, UnknownSigningKey
from protocol.keys import PublicKey
from server.clock import Clock
from server.dpop_guard import RS_NONCES, DPoPGuard
from server.errors import ResourceError, UseDPoPNonce

_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

# Called after the token verified: returns facts about a live session, or None when it has ended.
SessionCheck = Callable[[VerifiedAccessToken, int], Awaitable[dict[str, Any] | None]]
# The same, given the proof as well: it records the proof in the replay store itself, in the same
# step as the session lookup, and raises InvalidDPoPProof for a replay.
RecordingSessionCheck = Callable[
    [VerifiedAccessToken, VerifiedDPoPProof, int], Awaitable[dict[str, Any] | None]
]


class VerificationKeys(Protocol):
    def verification_keys(self) -> Mapping[str, PublicKey]: ...

    async def refresh_if_stale(self) -> None:
        """Fetch keys again if the copy held is older than its source allows."""
        ...

    async def reload(self, *, force: bool = False) -> bool:
        """Fetch keys again; False when skipped (too soon since the last reload)."""
        ...


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    session_id: str
    jkt: str
    token: VerifiedAccessToken
    session: dict[str, Any] = field(default_factory=dict)


def read_dpop_credentials(headers: Headers) -> str:
    values = headers.getlist("authorization")
    if not values:
        raise ResourceError(None, "an access token is required")
    if len(values) > 1:
        raise ResourceError(ErrorCode.INVALID_REQUEST, "only one Authorization header is allowed")
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


class VerifiedTokenCache:
    """Access tokens already verified, by the token's SHA-256 in base64url (the `ath` that the
    proof check has computed and compared already), so a token used for many requests pays for
    one signature check and is hashed once per request. Expiry is checked again on every hit,
    and a token whose key has left the verification set is verified again (and refused).
    Bounded, least recently used out."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._max_entries = max_entries
        self._tokens: OrderedDict[str, VerifiedAccessToken] = OrderedDict()

    def get(
        self, token_hash: str, *, now: int, keys: Mapping[str, PublicKey]
    ) -> VerifiedAccessToken | None:
        verified = self._tokens.get(token_hash)
        if verified is None:
            return None
        if now >= verified.expires_at or verified.kid not in keys:
            del self._tokens[token_hash]
            return None
        self._tokens.move_to_end(token_hash)
        return verified

    def put(self, token_hash: str, verified: VerifiedAccessToken) -> None:
        if self._max_entries <= 0:
            return
        self._tokens[token_hash] = verified
        if len(self._tokens) > self._max_entries:
            self._tokens.popitem(last=False)


class ResourceGuard:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        keys: VerificationKeys,
        dpop: DPoPGuard,
        clock: Clock,
        session_check: SessionCheck | None = None,
        recording_session_check: RecordingSessionCheck | None = None,
        token_cache_size: int = 4096,
    ) -> None:
        """`recording_session_check`, when given, replaces both `session_check` and the replay
        record of `dpop`: the server's own endpoints look the session up and record the proof
        in one round trip to the database."""
        self._issuer = issuer
        self._audience = audience
        self._keys = keys
        self.dpop = dpop
        self._clock = clock
        if session_check is not None and recording_session_check is not None:
            raise ValueError("give session_check or recording_session_check, not both")
        self._session_check = session_check
        self._recording_session_check = recording_session_check
        self._verified = VerifiedTokenCache(max_entries=token_cache_size)

    async def _verify_token(self, token: str, token_hash: str, now: int) -> VerifiedAccessToken:
        await self._keys.refresh_if_stale()
        cached = self._verified.get(token_hash, now=now, keys=self._keys.verification_keys())
        if cached is not None:
            return cached
        for attempt in range(2):
            try:
                verified = verify_access_token(
                    token=token,
                    keys=self._keys.verification_keys(),
                    issuer=self._issuer,
                    audience=self._audience,
                    now=now,
                )
                self._verified.put(token_hash, verified)
                return verified
            except UnknownSigningKey as exc:
                # A key created since the last reload (rotation on another host): look once.
                if attempt == 0 and await self._keys.reload():
                    continue
                raise ResourceError(ErrorCode.INVALID_TOKEN, exc.description) from exc
            except InvalidToken as exc:
                raise ResourceError(ErrorCode.INVALID_TOKEN, exc.description) from exc
        raise ResourceError(ErrorCode.INVALID_TOKEN, "access token is signed by an unknown key")

    async def authenticate(self, headers: Headers, *, method: str, path: str) -> Principal:
        token = read_dpop_credentials(headers)
        try:
            proof = self.dpop.verify(
                headers, method=method, path=path, access_token=token, nonce_audience=RS_NONCES
            )
        except UseDPoPNonce as exc:
            raise ResourceError(ErrorCode.USE_DPOP_NONCE, exc.description, nonce=exc.nonce) from exc
        except InvalidDPoPProof as exc:
            raise ResourceError(ErrorCode.INVALID_DPOP_PROOF, exc.description) from exc
        now = self._clock.now()
        # The proof check has hashed this very token for `ath`; the cache reuses that hash.
        token_hash = proof.ath if proof.ath is not None else access_token_hash(token)
        verified = await self._verify_token(token, token_hash, now)
        if verified.jkt != proof.jkt:
            raise ResourceError(ErrorCode.INVALID_TOKEN, "the proof key is not the token's key")
        session: dict[str, Any] | None
        try:
            if self._recording_session_check is not None:
                session = await self._recording_session_check(verified, proof, now)
            else:
                session = (
                    {} if self._session_check is None else await self._session_check(verified, now)
                )
                if session is not None:
                    await self.dpop.record(proof)
        except InvalidDPoPProof as exc:
            raise ResourceError(ErrorCode.INVALID_DPOP_PROOF, exc.description) from exc
        if session is None:
            raise ResourceError(ErrorCode.INVALID_TOKEN, "the session has ended")
        return Principal(
            user_id=verified.subject,
            session_id=verified.session_id,
            jkt=verified.jkt,
            token=verified,
            session=session,
        )
