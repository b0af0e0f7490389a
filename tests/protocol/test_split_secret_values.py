"""Split-secret values (SPEC.md §5.3): sizes, independent draws, keyed hashes, the login link."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    MalformedInput,
    b64url_decode,
    build_login_link,
    keyed_hash,
    new_login_secrets,
    new_opaque_token,
    parse_attempt_id,
    parse_half,
    parse_login_link,
)
from protocol.encoding import b64url_encode
from protocol.split_secret import ATTEMPT_ID_BYTES, HALF_BYTES, OPAQUE_TOKEN_BYTES

KEY = bytes(range(32))


class CountingRandom:
    """Fake random_bytes: records every draw and never returns the same bytes twice."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.returned: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        self.calls.append(n)
        seed = len(self.calls).to_bytes(4, "big")
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + len(out).to_bytes(4, "big")).digest()
        self.returned.append(out[:n])
        return out[:n]


def test_documented_sizes() -> None:
    assert (ATTEMPT_ID_BYTES, HALF_BYTES, OPAQUE_TOKEN_BYTES) == (16, 32, 32)


def test_new_login_secrets_draws_three_independent_values_of_the_documented_sizes() -> None:
    random_bytes = CountingRandom()
    secrets = new_login_secrets(random_bytes)
    assert random_bytes.calls == [ATTEMPT_ID_BYTES, HALF_BYTES, HALF_BYTES]
    attempt_id, device_half, email_half = (
        b64url_decode(secrets.attempt_id),
        b64url_decode(secrets.device_half),
        b64url_decode(secrets.email_half),
    )
    # Each value is exactly one draw: no half is derived from the other or from the attempt id.
    assert [attempt_id, device_half, email_half] == random_bytes.returned
    assert len({attempt_id, device_half, email_half}) == 3


def test_login_secrets_repr_hides_both_halves() -> None:
    secrets = new_login_secrets(CountingRandom())
    text = repr(secrets)
    assert secrets.attempt_id in text
    assert secrets.device_half not in text
    assert secrets.email_half not in text


def test_new_opaque_token_draws_32_bytes_once() -> None:
    random_bytes = CountingRandom()
    token = new_opaque_token(random_bytes)
    assert random_bytes.calls == [OPAQUE_TOKEN_BYTES]
    assert b64url_decode(token) == random_bytes.returned[0]


def test_keyed_hash_is_hmac_sha256_of_length_prefixed_purpose_context_value() -> None:
    message = b"".join(
        len(p).to_bytes(4, "big") + p for p in (b"email_half", b"attempt-1", b"value")
    )
    expected = hmac.new(KEY, message, hashlib.sha256).digest()
    digest = keyed_hash(key=KEY, purpose="email_half", context="attempt-1", value="value")
    assert digest == expected
    assert len(digest) == 32


def test_keyed_hash_domain_separation() -> None:
    """A value matches only where it was issued: purpose, context and key all change the MAC."""
    base = keyed_hash(key=KEY, purpose="email_half", context="attempt-1", value="v")
    assert base == keyed_hash(key=KEY, purpose="email_half", context="attempt-1", value="v")
    variants = [
        keyed_hash(key=KEY, purpose="device_half", context="attempt-1", value="v"),
        keyed_hash(key=KEY, purpose="email_half", context="attempt-2", value="v"),
        keyed_hash(key=KEY, purpose="email_half", context="", value="v"),
        keyed_hash(key=KEY, purpose="email_half", context="attempt-1", value="w"),
        keyed_hash(key=bytes(32), purpose="email_half", context="attempt-1", value="v"),
        # Moving bytes across the separator must not collide.
        keyed_hash(key=KEY, purpose="email_hal", context="fattempt-1", value="v"),
        keyed_hash(key=KEY, purpose="email_half", context="attempt-", value="1v"),
        # A separator character inside a part cannot forge another split.
        keyed_hash(key=KEY, purpose="email_half", context="attempt-1\0", value="v"),
    ]
    assert keyed_hash(key=KEY, purpose="p", context="a\0b", value="") != keyed_hash(
        key=KEY, purpose="p", context="a", value="b\0"
    )
    assert base not in variants
    assert len(set(variants)) == len(variants)


@pytest.mark.parametrize("size", [15, 17, 0])
def test_parse_attempt_id_refuses_other_sizes(size: int) -> None:
    with pytest.raises(MalformedInput):
        parse_attempt_id(b64url_encode(bytes(size)))


@pytest.mark.parametrize("size", [31, 33, 16])
def test_parse_half_refuses_other_sizes(size: int) -> None:
    with pytest.raises(MalformedInput):
        parse_half(b64url_encode(bytes(size)), field="device_half")


@pytest.mark.parametrize("value", [None, 16, b"x" * 22])
def test_parse_attempt_id_refuses_non_strings(value: object) -> None:
    with pytest.raises(MalformedInput):
        parse_attempt_id(value)


@settings(database=None)
@given(
    attempt=st.binary(min_size=16, max_size=16),
    half=st.binary(min_size=32, max_size=32),
    public_url=st.sampled_from(
        ["https://auth.example.com", "https://auth.example.com/", "https://example.com/auth"]
    ),
)
def test_login_link_round_trips_and_keeps_the_half_in_the_fragment(
    attempt: bytes, half: bytes, public_url: str
) -> None:
    attempt_id, email_half = b64url_encode(attempt), b64url_encode(half)
    link = build_login_link(public_url=public_url, attempt_id=attempt_id, email_half=email_half)
    before_fragment, _, fragment = link.partition("#")
    assert email_half not in before_fragment
    assert email_half in fragment
    parsed = parse_login_link(link)
    assert (parsed.attempt_id, parsed.email_half) == (attempt_id, email_half)
    assert email_half not in repr(parsed)
