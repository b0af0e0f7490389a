"""create -> verify round trips for DPoP proofs (RFC 9449) and access tokens (RFC 9068)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol import (
    SUPPORTED_ALGORITHMS,
    InvalidDPoPProof,
    InvalidToken,
    MalformedInput,
    SigningKey,
    VerifiedDPoPProof,
    access_token_hash,
    create_dpop_proof,
    issue_access_token,
    normalize_htu,
    verify_access_token,
    verify_dpop_proof,
)
from protocol.encoding import b64url_decode, b64url_encode, compact_json
from protocol.keys import Algorithm

NOW = 1_700_000_000
TOKEN_URL = "https://auth.example.com/token"
API_URL = "https://api.example.com/me"


def fixed_random_bytes(n: int) -> bytes:
    return bytes((11 * i + 5) % 256 for i in range(n))


def other_random_bytes(n: int) -> bytes:
    return bytes((13 * i + 1) % 256 for i in range(n))


def _verify(proof: str, **overrides: Any) -> VerifiedDPoPProof:
    params: dict[str, Any] = {
        "proof": proof,
        "method": "POST",
        "url": TOKEN_URL,
        "now": NOW,
        "max_age": 60,
        "max_future": 60,
    }
    params.update(overrides)
    return verify_dpop_proof(**params)


@pytest.mark.parametrize("alg", SUPPORTED_ALGORITHMS)
def test_dpop_proof_round_trip(alg: Algorithm) -> None:
    key = SigningKey.generate(alg, random_bytes=fixed_random_bytes)
    proof = create_dpop_proof(
        key=key,
        method="GET",
        url=API_URL + "?page=2",
        iat=NOW,
        jti="jti-round-trip",
        access_token="at-1",
        nonce="n-1",
    )
    verified = verify_dpop_proof(
        proof=proof,
        method="GET",
        url=API_URL,
        now=NOW,
        max_age=60,
        max_future=60,
        access_token="at-1",
    )
    assert verified.key.alg == alg
    assert verified.jkt == key.public.thumbprint
    assert (verified.jti, verified.htm, verified.htu, verified.iat, verified.nonce) == (
        "jti-round-trip",
        "GET",
        API_URL,
        NOW,
        "n-1",
    )


@pytest.mark.parametrize("alg", SUPPORTED_ALGORITHMS)
def test_dpop_proof_is_deterministic_for_both_algorithms(alg: Algorithm) -> None:
    key = SigningKey.generate(alg, random_bytes=fixed_random_bytes)

    def make() -> str:
        return create_dpop_proof(key=key, method="POST", url=TOKEN_URL, iat=NOW, jti="j")

    assert make() == make()


@pytest.mark.parametrize("alg", SUPPORTED_ALGORITHMS)
def test_dpop_proof_for_another_access_token_is_refused(alg: Algorithm) -> None:
    key = SigningKey.generate(alg, random_bytes=fixed_random_bytes)
    proof = create_dpop_proof(
        key=key, method="GET", url=API_URL, iat=NOW, jti="j", access_token="at-1"
    )
    with pytest.raises(InvalidDPoPProof):
        _verify(proof, method="GET", url=API_URL, access_token="at-2")


def test_dpop_replay_key_is_the_same_for_cosmetic_htu_variants() -> None:
    """threats.md B5: a replay with a cosmetically different htu is still a replay."""
    key = SigningKey.generate("EdDSA", random_bytes=fixed_random_bytes)
    keys = set()
    for htu in (TOKEN_URL, "https://AUTH.example.com:443/token", TOKEN_URL + "?x=1"):
        proof = create_dpop_proof(key=key, method="POST", url=htu, iat=NOW, jti="same")
        keys.add(_verify(proof).replay_key)
    assert len(keys) == 1


def test_dpop_replay_key_is_scoped_to_the_proof_key() -> None:
    """threats.md B6: the replay key is (jkt, jti); another key may reuse a jti."""
    first = SigningKey.generate("EdDSA", random_bytes=fixed_random_bytes)
    second = SigningKey.generate("EdDSA", random_bytes=other_random_bytes)
    replay_keys = {
        _verify(
            create_dpop_proof(key=key, method="POST", url=TOKEN_URL, iat=NOW, jti="same")
        ).replay_key
        for key in (first, second)
    }
    assert len(replay_keys) == 2


def test_dpop_iat_window_is_inclusive_at_both_ends() -> None:
    """RFC 9449 §11.1, threats.md B7: now - max_age and now + max_future pass, one more fails."""
    key = SigningKey.generate("EdDSA", random_bytes=fixed_random_bytes)
    for iat in (NOW - 60, NOW + 60):
        _verify(create_dpop_proof(key=key, method="POST", url=TOKEN_URL, iat=iat, jti="j"))
    for iat in (NOW - 61, NOW + 61):
        with pytest.raises(InvalidDPoPProof):
            _verify(create_dpop_proof(key=key, method="POST", url=TOKEN_URL, iat=iat, jti="j"))


def test_dpop_algorithm_allow_list_is_enforced() -> None:
    key = SigningKey.generate("ES256", random_bytes=fixed_random_bytes)
    proof = create_dpop_proof(key=key, method="POST", url=TOKEN_URL, iat=NOW, jti="j")
    with pytest.raises(InvalidDPoPProof):
        _verify(proof, algorithms=("EdDSA",))


def test_dpop_non_ascii_access_token_is_refused_with_a_protocol_error() -> None:
    """A presented token is attacker-controlled (Starlette decodes headers as latin-1); the
    verifier must answer with its own error, never an unexpected exception (threats.md A10)."""
    key = SigningKey.generate("EdDSA", random_bytes=fixed_random_bytes)
    proof = create_dpop_proof(
        key=key, method="GET", url=API_URL, iat=NOW, jti="j", access_token="at-1"
    )
    with pytest.raises(InvalidDPoPProof):
        _verify(proof, method="GET", url=API_URL, access_token="\u00e4t-1")


def test_access_token_hash_is_rfc9449_example() -> None:
    token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
    assert access_token_hash(token) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


def _issue(key: SigningKey, **overrides: Any) -> str:
    params: dict[str, Any] = {
        "key": key,
        "kid": "k1",
        "issuer": "https://auth.example.com",
        "audience": "https://api.example.com",
        "subject": "usr_1",
        "client_id": "splitlink-mobile",
        "session_id": "ses_1",
        "jkt": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
        "jti": "at_1",
        "issued_at": NOW,
        "lifetime": 300,
        "auth_time": NOW - 5,
    }
    params.update(overrides)
    return issue_access_token(**params)


@pytest.mark.parametrize("alg", SUPPORTED_ALGORITHMS)
def test_access_token_round_trip(alg: Algorithm) -> None:
    key = SigningKey.generate(alg, random_bytes=fixed_random_bytes)
    verified = verify_access_token(
        token=_issue(key),
        keys={"k1": key.public},
        issuer="https://auth.example.com",
        audience="https://api.example.com",
        now=NOW + 299,
    )
    assert verified.subject == "usr_1"
    assert verified.session_id == "ses_1"
    assert verified.jkt == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    assert (verified.issued_at, verified.expires_at, verified.auth_time) == (
        NOW,
        NOW + 300,
        NOW - 5,
    )
    assert (verified.kid, verified.client_id, verified.jti) == ("k1", "splitlink-mobile", "at_1")


@pytest.mark.parametrize("alg", SUPPORTED_ALGORITHMS)
def test_access_token_expires_at_exp(alg: Algorithm) -> None:
    """RFC 7519 §4.1.4: the current time must be before exp."""
    key = SigningKey.generate(alg, random_bytes=fixed_random_bytes)
    with pytest.raises(InvalidToken):
        verify_access_token(
            token=_issue(key),
            keys={"k1": key.public},
            issuer="https://auth.example.com",
            audience="https://api.example.com",
            now=NOW + 300,
        )


def test_access_token_from_a_retired_key_is_refused() -> None:
    """threats.md A11: once a kid leaves the key set its tokens stop verifying."""
    old = SigningKey.generate("EdDSA", random_bytes=fixed_random_bytes)
    new = SigningKey.generate("EdDSA", random_bytes=other_random_bytes)
    token = _issue(old, kid="old")
    issuer, audience = "https://auth.example.com", "https://api.example.com"
    both = {"old": old.public, "new": new.public}
    verify_access_token(token=token, keys=both, issuer=issuer, audience=audience, now=NOW)
    with pytest.raises(InvalidToken):
        verify_access_token(
            token=token, keys={"new": new.public}, issuer=issuer, audience=audience, now=NOW
        )


def test_access_token_kid_naming_another_key_does_not_verify() -> None:
    old = SigningKey.generate("EdDSA", random_bytes=fixed_random_bytes)
    new = SigningKey.generate("EdDSA", random_bytes=other_random_bytes)
    with pytest.raises(InvalidToken):
        verify_access_token(
            token=_issue(old, kid="new"),
            keys={"new": new.public},
            issuer="https://auth.example.com",
            audience="https://api.example.com",
            now=NOW,
        )


def _signed(key: SigningKey, header: dict[str, Any], payload_text: str) -> str:
    """A compact JWS over a payload given as JSON text, to write literals json.dumps cannot."""
    signing_input = b64url_encode(compact_json(header)) + "." + b64url_encode(payload_text.encode())
    return signing_input + "." + b64url_encode(key.sign(signing_input.encode("ascii")))


OUT_OF_RANGE_LITERALS = [
    pytest.param("1" + "0" * 400, id="ten-to-the-400"),
    pytest.param("-1" + "0" * 400, id="minus-ten-to-the-400"),
    pytest.param("1e309", id="float-overflow"),
    pytest.param("-10e308", id="negative-float-overflow"),
    pytest.param("9007199254740992", id="two-to-the-53"),
]


@pytest.mark.parametrize("literal", OUT_OF_RANGE_LITERALS)
def test_a_proof_iat_beyond_the_number_range_is_an_invalid_proof(literal: str) -> None:
    """SPEC.md §3.2, §4.1: the proof's own error, never an arithmetic overflow."""
    key = SigningKey.generate("EdDSA", random_bytes=fixed_random_bytes)
    header = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": dict(key.public.jwk)}
    payload = f'{{"jti":"j","htm":"POST","htu":"{TOKEN_URL}","iat":{literal}}}'
    with pytest.raises(InvalidDPoPProof):
        _verify(_signed(key, header, payload))


@pytest.mark.parametrize("claim", ["exp", "iat", "auth_time"])
@pytest.mark.parametrize("literal", OUT_OF_RANGE_LITERALS)
def test_an_access_token_time_beyond_the_number_range_is_an_invalid_token(
    claim: str, literal: str
) -> None:
    key = SigningKey.generate("EdDSA", random_bytes=fixed_random_bytes)
    claims = json.loads(b64url_decode(_issue(key).split(".")[1]))
    claims[claim] = "LITERAL"
    payload = json.dumps(claims, separators=(",", ":")).replace('"LITERAL"', literal)
    token = _signed(key, {"typ": "at+jwt", "alg": "EdDSA", "kid": "k1"}, payload)
    with pytest.raises(InvalidToken):
        verify_access_token(
            token=token,
            keys={"k1": key.public},
            issuer="https://auth.example.com",
            audience="https://api.example.com",
            now=NOW,
        )


# urlsplit drops TAB, CR and LF anywhere and strips leading controls and spaces; the others are
# controls and whitespace that no URI holds (RFC 3986 §2).
URLS_WITH_CONTROLS_OR_SPACES = [
    pytest.param("https://auth.example.com/to\tken", id="tab"),
    pytest.param("https://auth.example.com/to\r\nken", id="crlf"),
    pytest.param("https://auth.example.com/token\n", id="trailing-lf"),
    pytest.param("https://auth.exa\tmple.com/token", id="tab-in-host"),
    pytest.param("htt\nps://auth.example.com/token", id="lf-in-scheme"),
    pytest.param(" https://auth.example.com/token", id="leading-space"),
    pytest.param("\x00https://auth.example.com/token", id="leading-nul"),
    pytest.param("https://auth.example.com/token ", id="trailing-space"),
    pytest.param("https://auth.example.com/to\x7fken", id="del"),
    pytest.param("https://auth.example.com/to\x85ken", id="next-line"),
    pytest.param("https://auth.example.com/to\u00a0ken", id="no-break-space"),
    pytest.param("https://auth.example.com/to\u3000ken", id="ideographic-space"),
]


@pytest.mark.parametrize("url", URLS_WITH_CONTROLS_OR_SPACES)
def test_normalize_htu_refuses_control_characters_and_whitespace(url: str) -> None:
    with pytest.raises(MalformedInput):
        normalize_htu(url)


@pytest.mark.parametrize("htu", URLS_WITH_CONTROLS_OR_SPACES)
def test_a_proof_htu_with_control_characters_or_whitespace_is_refused(htu: str) -> None:
    """SPEC.md §4.1: even where the configured URL is the same string."""
    key = SigningKey.generate("EdDSA", random_bytes=fixed_random_bytes)
    header = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": dict(key.public.jwk)}
    payload = json.dumps({"jti": "j", "htm": "POST", "htu": htu, "iat": NOW})
    proof = _signed(key, header, payload)
    for url in (TOKEN_URL, htu):
        with pytest.raises(InvalidDPoPProof):
            _verify(proof, url=url)


@pytest.mark.parametrize("typ", ["DPoP+JWT", "DPOP+JWT", "dpop+JWT", "Dpop+jwt"])
def test_a_proof_typ_is_compared_case_sensitively(typ: str) -> None:
    """SPEC.md §4.1 step 2: RFC 9449 §4.2 names the exact value `dpop+jwt`."""
    key = SigningKey.generate("EdDSA", random_bytes=fixed_random_bytes)
    header = {"typ": typ, "alg": "EdDSA", "jwk": dict(key.public.jwk)}
    payload = json.dumps({"jti": "j", "htm": "POST", "htu": TOKEN_URL, "iat": NOW})
    with pytest.raises(InvalidDPoPProof):
        _verify(_signed(key, header, payload))
