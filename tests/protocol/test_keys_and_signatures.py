"""Device and server keys: thumbprints, private JWKs, deterministic signatures, JWS round trips."""

from __future__ import annotations

import pytest

from protocol import (
    SUPPORTED_ALGORITHMS,
    InvalidKey,
    InvalidSignature,
    SigningKey,
    jwk_thumbprint,
    parse_public_jwk,
)
from protocol.encoding import b64url_encode
from protocol.keys import Algorithm

# RFC 8037 A.1 / A.3.
RFC8037_PRIVATE_JWK = {
    "kty": "OKP",
    "crv": "Ed25519",
    "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
    "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
}
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
# RFC 9449 §4.1 example key (standards.md §2.10).
RFC9449_JWK = {
    "kty": "EC",
    "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
    "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
    "crv": "P-256",
}
RFC9449_THUMBPRINT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
# RFC 6979 §A.2.5: P-256 key, SHA-256, message "sample".
RFC6979_PRIVATE = bytes.fromhex("C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721")
RFC6979_SAMPLE_R = "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
RFC6979_SAMPLE_S = "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def fixed_random_bytes(n: int) -> bytes:
    """Deterministic stand-in for a CSPRNG: the tests never draw real randomness."""
    return bytes((7 * i + 3) % 256 for i in range(n))


def test_rfc7638_thumbprint_ignores_non_required_members() -> None:
    bare = parse_public_jwk({k: RFC9449_JWK[k] for k in ("kty", "crv", "x", "y")})
    dressed = parse_public_jwk({**RFC9449_JWK, "kid": "device-1", "alg": "ES256", "use": "sig"})
    assert bare.thumbprint == dressed.thumbprint == RFC9449_THUMBPRINT
    assert dict(dressed.jwk) == {k: RFC9449_JWK[k] for k in ("crv", "kty", "x", "y")}


def test_rfc7638_thumbprint_does_not_depend_on_member_order() -> None:
    members = {"x": RFC8037_PRIVATE_JWK["x"], "kty": "OKP", "crv": "Ed25519"}
    assert jwk_thumbprint(members) == RFC8037_THUMBPRINT


def test_rfc7638_thumbprint_of_a_private_key_is_that_of_its_public_key() -> None:
    key = SigningKey.from_private_jwk(RFC8037_PRIVATE_JWK)
    assert key.public.thumbprint == RFC8037_THUMBPRINT


@pytest.mark.parametrize("alg", SUPPORTED_ALGORITHMS)
def test_signing_key_private_jwk_round_trip(alg: Algorithm) -> None:
    key = SigningKey.generate(alg, random_bytes=fixed_random_bytes)
    private_jwk = key.private_jwk()
    assert "d" in private_jwk
    again = SigningKey.from_private_jwk(private_jwk)
    assert again.alg == key.alg == alg
    assert again.public.thumbprint == key.public.thumbprint
    assert again.private_jwk() == private_jwk
    message = b"round trip"
    again.public.verify(signature=key.sign(message), data=message)
    key.public.verify(signature=again.sign(message), data=message)


def test_signing_key_public_jwk_never_carries_d() -> None:
    key = SigningKey.from_private_jwk(RFC8037_PRIVATE_JWK)
    assert "d" not in key.public.jwk
    assert "nWGxne" not in repr(key)


def test_from_private_jwk_refuses_public_members_of_another_key() -> None:
    other = SigningKey.generate("EdDSA", random_bytes=fixed_random_bytes)
    mismatched = {**RFC8037_PRIVATE_JWK, "x": other.public.jwk["x"]}
    with pytest.raises(InvalidKey):
        SigningKey.from_private_jwk(mismatched)


@pytest.mark.parametrize("scalar", [0, P256_ORDER, P256_ORDER + 1])
def test_es256_private_scalar_outside_1_to_n_minus_1_is_refused(scalar: int) -> None:
    with pytest.raises(InvalidKey):
        SigningKey.from_private_bytes("ES256", scalar.to_bytes(32, "big"))


@pytest.mark.parametrize(("alg", "drawn"), [("EdDSA", 32), ("ES256", 48)])
def test_key_generation_draws_only_from_the_injected_random_bytes(
    alg: Algorithm, drawn: int
) -> None:
    calls: list[int] = []

    def counting(n: int) -> bytes:
        calls.append(n)
        return fixed_random_bytes(n)

    first = SigningKey.generate(alg, random_bytes=counting)
    second = SigningKey.generate(alg, random_bytes=fixed_random_bytes)
    assert calls == [drawn]
    assert first.public.thumbprint == second.public.thumbprint


def test_es256_signatures_are_deterministic_rfc6979() -> None:
    key = SigningKey.from_private_bytes("ES256", RFC6979_PRIVATE)
    signature = key.sign(b"sample")
    assert signature == key.sign(b"sample")
    assert signature.hex().upper() == RFC6979_SAMPLE_R + RFC6979_SAMPLE_S
    key.public.verify(signature=signature, data=b"sample")


def test_eddsa_signatures_are_deterministic_rfc8037_a4() -> None:
    key = SigningKey.from_private_jwk(RFC8037_PRIVATE_JWK)
    signing_input = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
    assert b64url_encode(key.sign(signing_input)) == (
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
    )


@pytest.mark.parametrize("alg", SUPPORTED_ALGORITHMS)
@pytest.mark.parametrize("length", [0, 63, 65, 72])
def test_signature_of_wrong_length_is_refused(alg: Algorithm, length: int) -> None:
    key = SigningKey.generate(alg, random_bytes=fixed_random_bytes)
    with pytest.raises(InvalidSignature):
        key.public.verify(signature=bytes(length), data=b"x")


@pytest.mark.parametrize(
    ("r", "s"),
    [(0, 1), (1, 0), (0, 0), (P256_ORDER, 1), (1, P256_ORDER)],
    ids=["r-zero", "s-zero", "psychic", "r-is-n", "s-is-n"],
)
def test_es256_signature_scalars_outside_range_are_refused(r: int, s: int) -> None:
    """threats.md A8: CVE-2022-21449 accepted r = s = 0 for every message."""
    key = parse_public_jwk(RFC9449_JWK)
    with pytest.raises(InvalidSignature):
        key.verify(signature=r.to_bytes(32, "big") + s.to_bytes(32, "big"), data=b"x")


@pytest.mark.parametrize("alg", SUPPORTED_ALGORITHMS)
def test_signature_over_other_data_does_not_verify(alg: Algorithm) -> None:
    key = SigningKey.generate(alg, random_bytes=fixed_random_bytes)
    with pytest.raises(InvalidSignature):
        key.public.verify(signature=key.sign(b"a"), data=b"b")


def test_p256_coordinate_above_the_field_prime_is_refused() -> None:
    """RFC 7638 §3.3, standards.md §3: refuse non-canonical key encodings, or one key has two
    thumbprints. The point (0, y) is on P-256; spelling x = 0 as p (32 bytes) is the same point.
    Vector jwk/p256-x-plus-p-noncanonical-refused pins the same requirement."""
    p = 2**256 - 2**224 + 2**192 + 2**96 - 1
    b = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
    y = pow(b, (p + 1) // 4, p)
    canonical = {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url_encode(bytes(32)),
        "y": b64url_encode(y.to_bytes(32, "big")),
    }
    parse_public_jwk(canonical)
    with pytest.raises(InvalidKey):
        parse_public_jwk({**canonical, "x": b64url_encode(p.to_bytes(32, "big"))})
