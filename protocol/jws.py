"""JWS compact serialization (RFC 7515 §7.1), strictly parsed, for ES256 and EdDSA only.

Hand-written rather than PyJWT because the hot path (one proof and one access token per request)
needs what PyJWT does not give: canonical base64url, refusal of duplicate JSON members, libsodium
for Ed25519, and one signature check per token. tests/test_interop_pyjwt.py checks that PyJWT
accepts what we sign and that we accept what PyJWT signs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.encoding import b64url_decode, b64url_encode, compact_json, parse_json_object
from protocol.errors import MalformedInput
from protocol.keys import PublicKey, SigningKey

MAX_COMPACT_JWS_LENGTH = 8192


@dataclass(frozen=True, slots=True)
class CompactJws:
    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes

    def verify_with(self, key: PublicKey) -> None:
        key.verify(signature=self.signature, data=self.signing_input)


def parse_compact_jws(token: str, *, max_length: int = MAX_COMPACT_JWS_LENGTH) -> CompactJws:
    """Split and decode a compact JWS with a JSON payload. The signature is not checked here."""
    if not isinstance(token, str):
        raise MalformedInput("JWS must be a string")
    if len(token) > max_length:
        raise MalformedInput(f"JWS is longer than {max_length} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedInput("JWS must have exactly three segments")
    header_b64, payload_b64, signature_b64 = parts
    header = parse_json_object(b64url_decode(header_b64, field="JWS header"), field="JWS header")
    payload = parse_json_object(
        b64url_decode(payload_b64, field="JWS payload"), field="JWS payload"
    )
    signature = b64url_decode(signature_b64, field="JWS signature")
    if "crit" in header:
        # RFC 7515 §4.1.11: we understand no extensions, so any critical one must be refused.
        raise MalformedInput("JWS crit header is not supported")
    return CompactJws(
        header=header,
        payload=payload,
        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
        signature=signature,
    )


def sign_compact_jws(*, header: dict[str, Any], payload: dict[str, Any], key: SigningKey) -> str:
    if header.get("alg") != key.alg:
        raise MalformedInput("JWS alg must match the signing key")
    signing_input = b64url_encode(compact_json(header)) + "." + b64url_encode(compact_json(payload))
    signature = key.sign(signing_input.encode("ascii"))
    return signing_input + "." + b64url_encode(signature)
