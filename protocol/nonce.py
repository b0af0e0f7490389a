"""Stateless DPoP server nonces (RFC 9449 §8, §9; SPEC.md §4.5).

A nonce is a time step and a MAC over it: any worker or host holding the key can check it without
shared state, and it stops proofs being made ahead of time (RFC 9449 §11.2). The step is computed
from the clock on every call, so instances agree whatever their age.
"""

from __future__ import annotations

import hashlib
import hmac

from protocol.encoding import b64url_decode, b64url_encode
from protocol.errors import MalformedInput

_STEP_BYTES = 8
_MAC_BYTES = 16


def _mac(key: bytes, audience: str, step: int) -> bytes:
    message = b"dpop-nonce\0" + audience.encode() + b"\0" + step.to_bytes(_STEP_BYTES, "big")
    return hmac.new(key, message, hashlib.sha256).digest()[:_MAC_BYTES]


def issue_nonce(*, key: bytes, audience: str, now: int, step_seconds: int) -> str:
    """The nonce for the current time step. `audience` separates the AS from the RS (§9)."""
    step = now // step_seconds
    return b64url_encode(step.to_bytes(_STEP_BYTES, "big") + _mac(key, audience, step))


def nonce_is_fresh(*, nonce: str, key: bytes, audience: str, now: int, step_seconds: int) -> bool:
    """True for a nonce of the current or the previous step, minted with this key and audience."""
    try:
        raw = b64url_decode(nonce, field="nonce")
    except MalformedInput:
        return False
    if len(raw) != _STEP_BYTES + _MAC_BYTES:
        return False
    step = int.from_bytes(raw[:_STEP_BYTES], "big")
    current = now // step_seconds
    if step not in (current, current - 1):
        return False
    return hmac.compare_digest(raw[_STEP_BYTES:], _mac(key, audience, step))
