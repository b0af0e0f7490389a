"""The resource guard: authenticates a request that presents a DPoP-bound access token (RFC 9449
§7; SPEC.md §6.5), for the server's own `/v1/` endpoints and for APIs under `protect()`.

Order: credentials syntax, the proof (with `ath` and, when enabled, the nonce), the token's
signature and claims against the issuer's keys, the key binding (`cnf.jkt`), then the session
lookup and the replay record, in the order the lookup calls for (server/dpop/lookup.py), so that
a request refused before them does not burn its proof's `jti` (threats.md B6).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from starlette.datastructures import Headers

from protocol.access_token import VerifiedAccessToken, verify_access_token
from protocol.dpop import VerifiedDPoPProof, access_token_hash
from protocol.errors import ErrorCode, InvalidDPoPProof, InvalidToken, UnknownSigningKey
from protocol.keys import PublicKey
from server.clock import Clock
from server.dpop.lookup import SessionLookup
from server.dpop.proof import RS_NONCES, DPoPGuard
from server.errors import ResourceError, UseDPoPNonce

_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

SessionT = TypeVar("SessionT")


class VerificationKeys(Protocol):
    def verification_keys(self) -> Mapping[str, PublicKey]: ...

    async def refresh_if_stale(self) -> None:
        """Fetch keys again if the copy held is older than its source allows."""
        ...

    async def reload(self, *, force: bool = False) -> bool:
        """Fetch keys again; False when skipped (too soon since the last reload)."""
        ...


@dataclass(frozen=True, slots=True)
class Principal(Generic[SessionT]):
    """Who made an authenticated request; `session` is what the guard's lookup returned."""

    user_id: str
    session_id: str
    jkt: str
    token: VerifiedAccessToken
    session: SessionT


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


class ResourceGuard(Generic[SessionT]):
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        keys: VerificationKeys,
        dpop: DPoPGuard,
        clock: Clock,
        sessions: SessionLookup[SessionT],
        token_cache_size: int = 4096,
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._keys = keys
        self.dpop = dpop
        self._clock = clock
        self._sessions = sessions
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

    async def authenticate(
        self, headers: Headers, *, method: str, path: str
    ) -> Principal[SessionT]:
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
        session = await self._live_session(verified, proof, now)
        return Principal(
            user_id=verified.subject,
            session_id=verified.session_id,
            jkt=verified.jkt,
            token=verified,
            session=session,
        )

    async def _live_session(
        self, token: VerifiedAccessToken, proof: VerifiedDPoPProof, now: int
    ) -> SessionT:
        """The one place where a guarded request's proof is recorded (SPEC.md §4.1 step 12):
        by the lookup with its read, or here once the session was found live."""
        try:
            session = await self._sessions.live_session(token, proof=proof, now=now)
            if session is not None and not self._sessions.records_proof:
                await self.dpop.record(proof)
        except InvalidDPoPProof as exc:
            raise ResourceError(ErrorCode.INVALID_DPOP_PROOF, exc.description) from exc
        if session is None:
            raise ResourceError(ErrorCode.INVALID_TOKEN, "the session has ended")
        return session
