"""RFC 9068 JWT access tokens, bound to a device key by `cnf.jkt` (RFC 9449 §6.1).

SPEC.md §6.3 lists the claims. Verification follows RFC 9068 §4 in order; every failure is
InvalidToken, so a resource server answers `invalid_token` whatever the cause.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol.errors import InvalidSignature, InvalidToken, MalformedInput, UnknownSigningKey
from protocol.jws import parse_compact_jws, sign_compact_jws
from protocol.keys import PublicKey, SigningKey

ACCESS_TOKEN_TYP = "at+jwt"
_ACCEPTED_TYP = frozenset({"at+jwt", "application/at+jwt"})


@dataclass(frozen=True, slots=True)
class VerifiedAccessToken:
    subject: str
    session_id: str
    jkt: str
    jti: str
    client_id: str
    issued_at: int
    expires_at: int
    auth_time: int
    kid: str


def issue_access_token(
    *,
    key: SigningKey,
    kid: str,
    issuer: str,
    audience: str,
    subject: str,
    client_id: str,
    session_id: str,
    jkt: str,
    jti: str,
    issued_at: int,
    lifetime: int,
    auth_time: int,
) -> str:
    header = {"typ": ACCESS_TOKEN_TYP, "alg": key.alg, "kid": kid}
    payload = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "exp": issued_at + lifetime,
        "iat": issued_at,
        "jti": jti,
        "client_id": client_id,
        "sid": session_id,
        "auth_time": auth_time,
        "cnf": {"jkt": jkt},
    }
    return sign_compact_jws(header=header, payload=payload, key=key)


def _claim_str(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidToken(f"access token claim {name!r} is missing")
    return value


def _claim_int(payload: Mapping[str, Any], name: str) -> int:
    value = payload.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidToken(f"access token claim {name!r} is missing")
    return value


def verify_access_token(
    *,
    token: str,
    keys: Mapping[str, PublicKey],
    issuer: str,
    audience: str,
    now: int,
    leeway: int = 0,
) -> VerifiedAccessToken:
    """Verify an access token against the server's published keys (RFC 9068 §4).

    `keys` maps `kid` to key; a key named in the token itself (`jwk`, `jku`, `x5u`) is never used.
    """
    try:
        jws = parse_compact_jws(token)
    except MalformedInput as exc:
        raise InvalidToken("access token is not a well-formed JWT") from exc
    header, payload = jws.header, jws.payload
    if header.get("typ") not in _ACCEPTED_TYP:
        raise InvalidToken("access token typ must be at+jwt")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("access token names no signing key")
    if kid not in keys:
        raise UnknownSigningKey("access token is signed by an unknown key")
    key = keys[kid]
    if header.get("alg") != key.alg:
        raise InvalidToken("access token alg does not match its key")
    try:
        jws.verify_with(key)
    except InvalidSignature as exc:
        raise InvalidToken("access token signature does not verify") from exc
    if payload.get("iss") != issuer:
        raise InvalidToken("access token issuer is not this server")
    aud = payload.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        raise InvalidToken("access token audience does not include this resource")
    expires_at = _claim_int(payload, "exp")
    if now >= expires_at + leeway:
        raise InvalidToken("access token has expired")
    issued_at = _claim_int(payload, "iat")
    if issued_at > now + leeway:
        raise InvalidToken("access token is issued in the future")
    cnf = payload.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if not isinstance(jkt, str) or not jkt:
        raise InvalidToken("access token is not bound to a key")
    return VerifiedAccessToken(
        subject=_claim_str(payload, "sub"),
        session_id=_claim_str(payload, "sid"),
        jkt=jkt,
        jti=_claim_str(payload, "jti"),
        client_id=_claim_str(payload, "client_id"),
        issued_at=issued_at,
        expires_at=expires_at,
        auth_time=_claim_int(payload, "auth_time"),
        kid=kid,
    )
