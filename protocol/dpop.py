"""DPoP proofs (RFC 9449): creation for clients, verification for servers (SPEC.md §4).

The verifier is a pure function of its arguments: the caller passes the clock reading and the
request's method and configured URL, and records the returned `replay_key` in its replay store
after every other check has passed.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from protocol.encoding import b64url_encode
from protocol.errors import InvalidDPoPProof, InvalidSignature, MalformedInput
from protocol.jws import parse_compact_jws, sign_compact_jws
from protocol.keys import SUPPORTED_ALGORITHMS, PublicKey, SigningKey, parse_public_jwk

DPOP_TYP = "dpop+jwt"
MAX_PROOF_LENGTH = 4096
MAX_JTI_LENGTH = 256
_DEFAULT_PORTS = {"http": 80, "https": 443}
# urlsplit removes TAB, CR and LF wherever they are and strips leading controls and spaces (the
# WHATWG URL rules), so "https://a.example/lo\tgin" would name "https://a.example/login". No URI
# holds a control character or a space (RFC 3986 §2), so a URL with one is refused unparsed.
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f-\x9f]|\s")


@dataclass(frozen=True, slots=True)
class VerifiedDPoPProof:
    """The facts a valid proof establishes."""

    key: PublicKey
    jkt: str
    jti: str
    iat: int
    htm: str
    htu: str
    nonce: str | None
    replay_key: str
    # With an access token: base64url(SHA-256(token)), checked against the proof's `ath`.
    ath: str | None = None


def access_token_hash(access_token: str) -> str:
    """The `ath` claim: base64url(SHA-256(ASCII(access token))) (RFC 9449 §4.2)."""
    if not access_token.isascii():
        raise MalformedInput("an access token is ASCII")
    return b64url_encode(hashlib.sha256(access_token.encode("ascii")).digest())


def normalize_htu(url: str) -> str:
    """RFC 9449 §4.3 step 9 with RFC 3986 §6.2.2-6.2.3: no query or fragment, lowercase scheme
    and host, no default port, empty path as "/". Raises MalformedInput for non-HTTP URLs and
    for any URL with a control character or whitespace."""
    if _CONTROL_OR_SPACE.search(url) is not None:
        raise MalformedInput("a URL must not contain control characters or whitespace")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise MalformedInput("htu is not a URL") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise MalformedInput("htu must be an absolute http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise MalformedInput("htu must not carry user information")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", "", ""))


def _number(payload: dict[str, Any], name: str) -> int:
    value = payload.get(name)
    # The decoder has bounded every number to ±MAX_JSON_NUMBER (SPEC.md §3.2), so flooring
    # cannot overflow. bool is an int in Python; JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidDPoPProof(f"proof claim {name!r} must be a number")
    return math.floor(value)


def _string(payload: dict[str, Any], name: str, *, max_length: int = 2048) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidDPoPProof(f"proof claim {name!r} must be a non-empty string")
    if len(value) > max_length:
        raise InvalidDPoPProof(f"proof claim {name!r} is too long")
    return value


def verify_dpop_proof(
    *,
    proof: str,
    method: str,
    url: str,
    now: int,
    max_age: int,
    max_future: int,
    access_token: str | None = None,
    algorithms: tuple[str, ...] = SUPPORTED_ALGORITHMS,
    resolve_key: Callable[[Any, str], PublicKey] | None = None,
) -> VerifiedDPoPProof:
    """Check one DPoP proof as RFC 9449 §4.3 lists, in that order.

    Args:
        proof: the value of the single `DPoP` header.
        method: the request method, uppercase.
        url: the request URL built from configuration, never from the Host header.
        now: the server clock, seconds since the epoch.
        max_age / max_future: accepted `iat` window in seconds (RFC 9449 §11.1).
        access_token: the presented access token, which makes `ath` required.
        resolve_key: parses the header's `jwk` for an algorithm; defaults to parse_public_jwk.
            A caller may memoize it (the result depends on the JWK and algorithm only).
    Raises:
        InvalidDPoPProof (or its subclass InvalidKey) for every failed check.
    """
    # §4.3 step 2: one well-formed JWT.
    try:
        jws = parse_compact_jws(proof, max_length=MAX_PROOF_LENGTH)
    except MalformedInput as exc:
        raise InvalidDPoPProof(f"proof is not a well-formed JWT: {exc.description}") from exc
    header, payload = jws.header, jws.payload
    # Step 4: typ (also refuses other JWT types presented as proofs, §11.5).
    if header.get("typ") != DPOP_TYP:
        raise InvalidDPoPProof("proof typ must be dpop+jwt")
    # Step 5: an allowed asymmetric algorithm.
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise InvalidDPoPProof(f"proof alg must be one of {' '.join(algorithms)}")
    # Step 7: a public key of a type bound to that algorithm.
    if "jwk" not in header:
        raise InvalidDPoPProof("proof header must carry the public key as jwk")
    key = (
        resolve_key(header["jwk"], alg)
        if resolve_key is not None
        else parse_public_jwk(header["jwk"], alg=alg)
    )
    # Step 6: the signature.
    try:
        jws.verify_with(key)
    except InvalidSignature as exc:
        raise InvalidDPoPProof("proof signature does not verify") from exc
    # Step 3: required claims with their JSON types.
    jti = _string(payload, "jti", max_length=MAX_JTI_LENGTH)
    htm = _string(payload, "htm", max_length=16)
    htu = _string(payload, "htu")
    if _CONTROL_OR_SPACE.search(htu) is not None:
        raise InvalidDPoPProof(
            "proof claim 'htu' must not contain control characters or whitespace"
        )
    iat = _number(payload, "iat")
    nonce = payload.get("nonce")
    if nonce is not None and not isinstance(nonce, str):
        raise InvalidDPoPProof("proof claim 'nonce' must be a string")
    # Step 8: method.
    if htm != method:
        raise InvalidDPoPProof("proof htm does not match the request method")
    # Step 9: target URI, both sides normalized (an identical string needs no normalizing).
    try:
        htu_matches = htu == url or normalize_htu(htu) == normalize_htu(url)
    except MalformedInput as exc:
        raise InvalidDPoPProof("proof htu is not an http(s) URL") from exc
    if not htu_matches:
        raise InvalidDPoPProof("proof htu does not match the request URL")
    # Step 11: freshness.
    if iat < now - max_age:
        raise InvalidDPoPProof("proof iat is too old")
    if iat > now + max_future:
        raise InvalidDPoPProof("proof iat is in the future")
    # Step 12: bound to the presented access token.
    expected_ath = None
    if access_token is not None:
        ath = payload.get("ath")
        if not isinstance(ath, str):
            raise InvalidDPoPProof("proof must carry ath with an access token")
        try:
            expected_ath = access_token_hash(access_token)
        except MalformedInput as exc:
            raise InvalidDPoPProof("the access token is not ASCII") from exc
        if ath != expected_ath:
            raise InvalidDPoPProof("proof ath does not match the access token")
    replay_key = hashlib.sha256(f"{key.thumbprint}\n{jti}".encode()).hexdigest()
    return VerifiedDPoPProof(
        key=key,
        jkt=key.thumbprint,
        jti=jti,
        iat=iat,
        htm=htm,
        htu=htu,
        nonce=nonce,
        replay_key=replay_key,
        ath=expected_ath,
    )


def create_dpop_proof(
    *,
    key: SigningKey,
    method: str,
    url: str,
    iat: int,
    jti: str,
    access_token: str | None = None,
    nonce: str | None = None,
) -> str:
    """Build a proof as RFC 9449 §4.2 describes. `jti` should hold at least 96 random bits."""
    parts = urlsplit(url)
    payload: dict[str, Any] = {
        "jti": jti,
        "htm": method,
        "htu": urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", "")),
        "iat": iat,
    }
    if access_token is not None:
        payload["ath"] = access_token_hash(access_token)
    if nonce is not None:
        payload["nonce"] = nonce
    header = {"typ": DPOP_TYP, "alg": key.alg, "jwk": dict(key.public.jwk)}
    return sign_compact_jws(header=header, payload=payload, key=key)
