"""The split-secret grant's values: attempt ids, the two halves, opaque tokens, keyed hashes.

SPEC.md §5.3: each half holds 256 bits from the caller's CSPRNG, drawn independently, so one half
leaking leaves 2**256 work. The server stores only HMAC-SHA-256 under a server key, with a purpose
label and the attempt id in the MAC input so that a value can match only where it was issued.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from protocol.encoding import b64url_decode_exact, b64url_encode
from protocol.errors import MalformedInput

HALF_BYTES = 32
ATTEMPT_ID_BYTES = 16
OPAQUE_TOKEN_BYTES = 32
RandomBytes = Callable[[int], bytes]


@dataclass(frozen=True)
class LoginSecrets:
    attempt_id: str
    device_half: str
    email_half: str

    def __repr__(self) -> str:
        return f"LoginSecrets(attempt_id={self.attempt_id!r}, device_half=..., email_half=...)"


def new_login_secrets(random_bytes: RandomBytes) -> LoginSecrets:
    return LoginSecrets(
        attempt_id=b64url_encode(random_bytes(ATTEMPT_ID_BYTES)),
        device_half=b64url_encode(random_bytes(HALF_BYTES)),
        email_half=b64url_encode(random_bytes(HALF_BYTES)),
    )


def new_opaque_token(random_bytes: RandomBytes) -> str:
    """A 256-bit bearer-free secret such as a refresh token (RFC 6749 §10.10)."""
    return b64url_encode(random_bytes(OPAQUE_TOKEN_BYTES))


def parse_attempt_id(value: object) -> str:
    if not isinstance(value, str):
        raise MalformedInput("attempt_id must be a string")
    b64url_decode_exact(value, length=ATTEMPT_ID_BYTES, field="attempt_id")
    return value


def parse_half(value: object, *, field: str) -> str:
    if not isinstance(value, str):
        raise MalformedInput(f"{field} must be a string")
    b64url_decode_exact(value, length=HALF_BYTES, field=field)
    return value


def keyed_hash(*, key: bytes, purpose: str, value: str, context: str = "") -> bytes:
    """HMAC-SHA-256 over length-prefixed purpose, context and value: the only form in which
    secrets rest. Each part is preceded by its UTF-8 length (4 bytes, big-endian), so no two
    different triples share an input."""
    message = b"".join(
        len(part).to_bytes(4, "big") + part
        for part in (purpose.encode(), context.encode(), value.encode())
    )
    return hmac.new(key, message, hashlib.sha256).digest()


def digests_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
