"""The proof checks of RFC 9449 §4.3 at the HTTP edge (SPEC.md §4.1): one `DPoP` header, verified
against the configured URL and, when nonces are on, a fresh server nonce. Shared by the start and
token endpoints and by the resource guard; recording the proof is left to each caller, which
knows when its request is well-formed (step 12)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from starlette.datastructures import Headers

from protocol.dpop import VerifiedDPoPProof, normalize_htu, verify_dpop_proof
from protocol.errors import InvalidDPoPProof, MalformedInput
from protocol.keys import PublicKey, parse_public_jwk
from protocol.nonce import issue_nonce, nonce_is_fresh
from server.clock import Clock
from server.errors import UseDPoPNonce
from server.replay import ReplayStore

# Nonces minted for the authorization server are not accepted by the resource endpoints and
# the other way round (RFC 9449 §9).
AS_NONCES = "authorization-server"
RS_NONCES = "resource-server"


class KeyCache:
    """Parsed device keys by their exact JWK and algorithm. Parsing checks the point, which costs as
    much as a signature check, and a device sends the same key with every proof. Bounded: the least
    recently used entries go first."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._max_entries = max_entries
        self._keys: OrderedDict[tuple[Any, ...], PublicKey] = OrderedDict()

    def resolve(self, jwk: Any, alg: str) -> PublicKey:
        if not isinstance(jwk, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in jwk.items()
        ):
            return parse_public_jwk(jwk, alg=alg)
        # Every member is part of the key, so a JWK with a private member never matches a
        # cached public one: it is parsed, and refused.
        cache_key = (alg, *sorted(jwk.items()))
        key = self._keys.get(cache_key)
        if key is not None:
            self._keys.move_to_end(cache_key)
            return key
        key = parse_public_jwk(jwk, alg=alg)
        if self._max_entries > 0:
            self._keys[cache_key] = key
            if len(self._keys) > self._max_entries:
                self._keys.popitem(last=False)
        return key


class DPoPGuard:
    """Args:
    public_url: the origin clients use; `htu` must name it (never the Host header).
    nonce_key: when given, every proof must carry a fresh server nonce (RFC 9449 §8).
    """

    def __init__(
        self,
        *,
        public_url: str,
        max_age: int,
        max_future: int,
        replay: ReplayStore,
        clock: Clock,
        nonce_key: bytes | None = None,
        nonce_step: int = 60,
        key_cache_size: int = 4096,
    ) -> None:
        try:
            normalize_htu(public_url)
        except MalformedInput as exc:
            raise ValueError(f"public_url: {exc.description}") from exc
        self._public_url = public_url.rstrip("/")
        self._max_age = max_age
        self._max_future = max_future
        self._replay = replay
        self._clock = clock
        self._nonce_key = nonce_key
        self._nonce_step = nonce_step
        self._keys = KeyCache(max_entries=key_cache_size)

    def fresh_nonce(self, audience: str) -> str | None:
        if self._nonce_key is None:
            return None
        return issue_nonce(
            key=self._nonce_key,
            audience=audience,
            now=self._clock.now(),
            step_seconds=self._nonce_step,
        )

    def nonce_headers(self, audience: str) -> dict[str, str]:
        nonce = self.fresh_nonce(audience)
        return {} if nonce is None else {"DPoP-Nonce": nonce}

    def verify(
        self,
        headers: Headers,
        *,
        method: str,
        path: str,
        access_token: str | None = None,
        nonce_audience: str = AS_NONCES,
    ) -> VerifiedDPoPProof:
        """All checks of RFC 9449 §4.3 but replay (see `record`)."""
        values = headers.getlist("dpop")
        if not values:
            raise InvalidDPoPProof("a DPoP proof is required")
        if len(values) > 1:
            raise InvalidDPoPProof("exactly one DPoP header is allowed")
        now = self._clock.now()
        proof = verify_dpop_proof(
            proof=values[0],
            method=method,
            # htu is compared with the configured public URL, never the Host header.
            url=self._public_url + path,
            now=now,
            max_age=self._max_age,
            max_future=self._max_future,
            access_token=access_token,
            resolve_key=self._keys.resolve,
        )
        if self._nonce_key is not None and not (
            proof.nonce is not None
            and nonce_is_fresh(
                nonce=proof.nonce,
                key=self._nonce_key,
                audience=nonce_audience,
                now=now,
                step_seconds=self._nonce_step,
            )
        ):
            fresh = self.fresh_nonce(nonce_audience)
            raise UseDPoPNonce(fresh or "")
        return proof

    async def record(self, proof: VerifiedDPoPProof) -> None:
        await self._replay.record(proof, now=self._clock.now())
