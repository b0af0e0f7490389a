"""Fresh DPoP proofs (RFC 9449 §4.2) for each request, signed by the device key."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from protocol.dpop import create_dpop_proof
from protocol.encoding import b64url_encode
from protocol.keys import SigningKey

Clock = Callable[[], int]
RandomBytes = Callable[[int], bytes]
# 128 random bits, above RFC 9449 §11.1's 96.
JTI_BYTES = 16


def system_clock() -> int:
    return int(time.time())


def system_random(n: int) -> bytes:
    return secrets.token_bytes(n)


class ProofSigner:
    """Signs one proof per request: a new `jti` and the current `iat` every time."""

    def __init__(self, key: SigningKey, *, clock: Clock, random_bytes: RandomBytes) -> None:
        self._key = key
        self._clock = clock
        self._random_bytes = random_bytes

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
    ) -> str:
        jti_bytes = self._random_bytes(JTI_BYTES)
        if len(jti_bytes) != JTI_BYTES:
            raise ValueError(f"random_bytes returned {len(jti_bytes)} bytes, not {JTI_BYTES}")
        return create_dpop_proof(
            key=self._key,
            method=method.upper(),
            url=url,
            iat=self._clock(),
            jti=b64url_encode(jti_bytes),
            access_token=access_token,
            nonce=nonce,
        )
