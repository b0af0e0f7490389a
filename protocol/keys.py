"""Device and server keys: JWK parsing, RFC 7638 thumbprints, signing and verification.

Only two key types exist (SPEC.md §4.2): EC P-256 with ES256 and OKP Ed25519 with EdDSA. The
algorithm is bound to the key type (RFC 8037 §4); a key never verifies under another algorithm.
Ed25519 goes through libsodium (PyNaCl), about twice as fast as OpenSSL here, and its
`crypto_core_ed25519_is_valid_point` refuses small-order and mixed-order points.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidSignature as _CryptographyInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from protocol.encoding import b64url_decode, b64url_decode_exact, b64url_encode, canonical_json
from protocol.errors import InvalidKey, InvalidSignature, MalformedInput

Algorithm = Literal["ES256", "EdDSA"]
SUPPORTED_ALGORITHMS: tuple[Algorithm, ...] = ("ES256", "EdDSA")

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_P256_PRIME = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_P256_COORDINATE_BYTES = 32
_ED25519_KEY_BYTES = 32
_SIGNATURE_BYTES = 64
# Members that only a private or symmetric JWK carries (RFC 7517 §9.3, RFC 7518 §6).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
RandomBytes = Callable[[int], bytes]


def jwk_thumbprint(required_members: Mapping[str, str]) -> str:
    """RFC 7638 §3: SHA-256 over the required members, sorted, without whitespace."""
    return b64url_encode(hashlib.sha256(canonical_json(dict(required_members))).digest())


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A validated public key. `jwk` holds exactly the RFC 7638 required members."""

    alg: Algorithm
    jwk: Mapping[str, str]
    thumbprint: str
    _verify: Callable[[bytes, bytes], None] = field(repr=False, compare=False)

    def verify(self, *, signature: bytes, data: bytes) -> None:
        """Raise InvalidSignature unless `signature` is this key's JWS signature over `data`."""
        if len(signature) != _SIGNATURE_BYTES:
            raise InvalidSignature("signature has the wrong length")
        self._verify(signature, data)


def _ed25519_public_key(x: bytes) -> PublicKey:
    # libsodium's check refuses non-canonical encodings, the identity, the 8 small-order points and
    # points outside the prime-order subgroup: keys for which signatures can be forged or are
    # not unique (threats.md A9).
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(x):
        raise InvalidKey("Ed25519 key is not a valid prime-order point")
    members = {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(x)}

    def verify(signature: bytes, data: bytes) -> None:
        try:
            nacl.bindings.crypto_sign_open(signature + data, x)
        except nacl.exceptions.BadSignatureError as exc:
            raise InvalidSignature("Ed25519 signature does not verify") from exc

    return PublicKey("EdDSA", members, jwk_thumbprint(members), verify)


_ES256 = ec.ECDSA(hashes.SHA256())  # stateless: one object for every key


def _p256_public_key(x: bytes, y: bytes) -> PublicKey:
    x_int, y_int = int.from_bytes(x, "big"), int.from_bytes(y, "big")
    # OpenSSL reduces coordinates modulo p; an unreduced one would give the point a second
    # encoding and so a second thumbprint (RFC 7638 §3.3).
    if x_int >= _P256_PRIME or y_int >= _P256_PRIME:
        raise InvalidKey("P-256 coordinate is not reduced modulo p")
    try:
        key = ec.EllipticCurvePublicNumbers(x_int, y_int, ec.SECP256R1()).public_key()
    except ValueError as exc:
        raise InvalidKey("P-256 point is not on the curve") from exc
    members = {"crv": "P-256", "kty": "EC", "x": b64url_encode(x), "y": b64url_encode(y)}
    algorithm = _ES256

    def verify(signature: bytes, data: bytes) -> None:
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        if not (0 < r < _P256_ORDER and 0 < s < _P256_ORDER):
            raise InvalidSignature("ES256 signature scalar out of range")
        try:
            key.verify(encode_dss_signature(r, s), data, algorithm)
        except _CryptographyInvalidSignature as exc:
            raise InvalidSignature("ES256 signature does not verify") from exc

    return PublicKey("ES256", members, jwk_thumbprint(members), verify)


def parse_public_jwk(jwk: Any, *, alg: str | None = None) -> PublicKey:
    """Validate a public JWK as a device key (SPEC.md §4.2) and bind it to its algorithm.

    Raises InvalidKey for anything but a well-formed public P-256 or Ed25519 key, and when `alg`
    is given but does not belong to the key type.
    """
    if not isinstance(jwk, dict):
        raise InvalidKey("jwk must be a JSON object")
    present_private = _PRIVATE_MEMBERS.intersection(jwk)
    if present_private:
        raise InvalidKey("jwk must not contain private or symmetric key members")
    kty = jwk.get("kty")
    crv = jwk.get("crv")
    try:
        if kty == "OKP" and crv == "Ed25519":
            key = _ed25519_public_key(
                b64url_decode_exact(jwk.get("x"), length=_ED25519_KEY_BYTES, field="jwk x")
            )
        elif kty == "EC" and crv == "P-256":
            key = _p256_public_key(
                b64url_decode_exact(jwk.get("x"), length=_P256_COORDINATE_BYTES, field="jwk x"),
                b64url_decode_exact(jwk.get("y"), length=_P256_COORDINATE_BYTES, field="jwk y"),
            )
        else:
            raise InvalidKey("only EC P-256 and OKP Ed25519 keys are accepted")
    except MalformedInput as exc:
        raise InvalidKey(exc.description) from exc
    declared = jwk.get("alg")
    if declared is not None and declared != key.alg:
        raise InvalidKey(f"jwk alg {declared!r} does not match the key type")
    if alg is not None and alg != key.alg:
        raise InvalidKey(f"algorithm {alg!r} does not match the key type")
    return key


class SigningKey:
    """A private key that signs JWS (device keys and the server's access-token keys).

    ES256 signatures are deterministic (RFC 6979), so signing needs no randomness: every random
    input of the protocol is an explicit argument.
    """

    def __init__(self, alg: Algorithm, private: bytes, public: PublicKey) -> None:
        self.alg = alg
        self._private = private
        self.public = public
        if alg == "EdDSA":
            # libsodium's secret key is the seed followed by the public key.
            self._secret_key = private + b64url_decode(public.jwk["x"])
        else:
            self._ec_key = ec.derive_private_key(int.from_bytes(private, "big"), ec.SECP256R1())

    def __repr__(self) -> str:
        return f"SigningKey(alg={self.alg!r}, thumbprint={self.public.thumbprint!r})"

    @classmethod
    def generate(cls, alg: Algorithm, *, random_bytes: RandomBytes) -> SigningKey:
        if alg == "EdDSA":
            return cls.from_private_bytes("EdDSA", random_bytes(32))
        # 48 bytes reduced modulo n-1 leave a bias below 2**-128 (FIPS 186-5 A.2.1).
        scalar = int.from_bytes(random_bytes(48), "big") % (_P256_ORDER - 1) + 1
        return cls.from_private_bytes("ES256", scalar.to_bytes(32, "big"))

    @classmethod
    def from_private_bytes(cls, alg: Algorithm, private: bytes) -> SigningKey:
        if len(private) != 32:
            raise InvalidKey("private key must be 32 bytes")
        if alg == "EdDSA":
            public_bytes, _ = nacl.bindings.crypto_sign_seed_keypair(private)
            return cls("EdDSA", private, _ed25519_public_key(public_bytes))
        if alg == "ES256":
            scalar = int.from_bytes(private, "big")
            if not 0 < scalar < _P256_ORDER:
                raise InvalidKey("P-256 private scalar out of range")
            numbers = ec.derive_private_key(scalar, ec.SECP256R1()).public_key().public_numbers()
            return cls(
                "ES256",
                private,
                _p256_public_key(numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")),
            )
        raise InvalidKey(f"unsupported algorithm {alg!r}")

    @classmethod
    def from_private_jwk(cls, jwk: Mapping[str, Any]) -> SigningKey:
        public_members = {k: v for k, v in jwk.items() if k not in _PRIVATE_MEMBERS}
        public = parse_public_jwk(public_members)
        private = b64url_decode_exact(jwk.get("d"), length=32, field="jwk d")
        key = cls.from_private_bytes(public.alg, private)
        if key.public.thumbprint != public.thumbprint:
            raise InvalidKey("private key does not match its public members")
        return key

    def private_jwk(self) -> dict[str, str]:
        return {**self.public.jwk, "d": b64url_encode(self._private)}

    def sign(self, data: bytes) -> bytes:
        if self.alg == "EdDSA":
            return nacl.bindings.crypto_sign(data, self._secret_key)[:_SIGNATURE_BYTES]
        der = self._ec_key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
