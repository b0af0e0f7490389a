"""A standard JOSE library and ours agree, both ways: PyJWT verifies what splitlink signs
(access tokens, DPoP proofs), and splitlink verifies DPoP proofs PyJWT signs (RFC 7515, 9068,
9449; the brief's "any standard client library must work")."""

from __future__ import annotations

import os

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from protocol.access_token import issue_access_token
from protocol.dpop import access_token_hash, create_dpop_proof, verify_dpop_proof
from protocol.keys import SigningKey

NOW = 1_800_000_000
URL = "https://auth.example.test/oauth2/token"


def _pyjwt_key(key: SigningKey) -> object:
    jwk = dict(key.public.jwk)
    if key.alg == "EdDSA":
        return OKPAlgorithm.from_jwk(jwk)
    return ECAlgorithm.from_jwk(jwk)


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_pyjwt_verifies_our_dpop_proofs(alg: str) -> None:
    key = SigningKey.generate(alg, random_bytes=os.urandom)  # type: ignore[arg-type]
    proof = create_dpop_proof(key=key, method="POST", url=URL, iat=NOW, jti="j-1")
    header = jwt.get_unverified_header(proof)
    assert header["typ"] == "dpop+jwt"
    claims = jwt.decode(
        proof,
        key=_pyjwt_key(key),  # type: ignore[arg-type]
        algorithms=[alg],
        options={"verify_iat": False},
    )
    assert claims == {"jti": "j-1", "htm": "POST", "htu": URL, "iat": NOW}


def test_pyjwt_verifies_our_access_tokens() -> None:
    server_key = SigningKey.generate("EdDSA", random_bytes=os.urandom)
    token = issue_access_token(
        key=server_key,
        kid=server_key.public.thumbprint,
        issuer="https://auth.example.test",
        audience="https://auth.example.test",
        subject="user-1",
        client_id="app",
        session_id="s-1",
        jkt="0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I",
        jti="t-1",
        issued_at=NOW,
        lifetime=600,
        auth_time=NOW,
    )
    assert jwt.get_unverified_header(token) == {
        "typ": "at+jwt",
        "alg": "EdDSA",
        "kid": server_key.public.thumbprint,
    }
    claims = jwt.decode(
        token,
        key=_pyjwt_key(server_key),  # type: ignore[arg-type]
        algorithms=["EdDSA"],
        audience="https://auth.example.test",
        issuer="https://auth.example.test",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["cnf"] == {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}
    assert claims["exp"] == NOW + 600


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_we_verify_dpop_proofs_signed_by_pyjwt(alg: str) -> None:
    if alg == "EdDSA":
        private: object = ed25519.Ed25519PrivateKey.generate()
        public_jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)  # type: ignore[attr-defined]
    else:
        private = ec.generate_private_key(ec.SECP256R1())
        public_jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)  # type: ignore[attr-defined]
    token = "opaque-access-token"
    proof = jwt.encode(
        {"jti": "p-1", "htm": "GET", "htu": URL, "iat": NOW, "ath": access_token_hash(token)},
        private,  # type: ignore[arg-type]
        algorithm=alg,
        headers={"typ": "dpop+jwt", "jwk": public_jwk},
    )
    verified = verify_dpop_proof(
        proof=proof,
        method="GET",
        url=URL,
        now=NOW,
        max_age=60,
        max_future=60,
        access_token=token,
    )
    assert verified.key.alg == alg
    assert verified.jti == "p-1"
