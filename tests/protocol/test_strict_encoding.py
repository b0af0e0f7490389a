"""Strict canonical encodings (SPEC.md §3): one spelling per value, no lenient JSON."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import ErrorCode, MalformedInput, b64url_decode, b64url_encode, parse_json_object
from protocol.encoding import b64url_decode_exact, canonical_json


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("QR", id="stray-bits"),
        pytest.param("Q!Q", id="invalid-character"),
        pytest.param("Q", id="impossible-length"),
        pytest.param("+/8", id="standard-alphabet"),
    ],
)
def test_b64url_refuses_non_canonical_or_foreign_text(text: str) -> None:
    with pytest.raises(MalformedInput) as raised:
        b64url_decode(text)
    assert raised.value.code == ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize("text", ["QQ==", "QQ=", "Zm8=", "Zm9v=", "="])
def test_b64url_refuses_padding(text: str) -> None:
    with pytest.raises(MalformedInput):
        b64url_decode(text)


def test_b64url_canonical_spelling_of_qr_is_qq() -> None:
    assert b64url_decode("QQ") == b"A"
    assert b64url_encode(b"A") == "QQ"


@settings(database=None)
@given(st.binary(max_size=80))
def test_b64url_round_trips_and_has_no_padding(data: bytes) -> None:
    text = b64url_encode(data)
    assert "=" not in text
    assert b64url_decode(text) == data


@settings(database=None)
@given(
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=12
    )
)
def test_b64url_accepts_a_text_only_if_it_is_the_canonical_encoding(text: str) -> None:
    try:
        data = b64url_decode(text)
    except MalformedInput:
        return
    assert b64url_encode(data) == text


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _is_canonical(text: str) -> bool:
    """The definition: the text is what encoding its (leniently decoded) bytes gives."""
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return b64url_encode(data) == text


@pytest.mark.parametrize("prefix", ["", "Zm9v", "____"])
@pytest.mark.parametrize("middle", ["A", "Zm", "-_"])
def test_b64url_accepts_exactly_the_canonical_last_characters(prefix: str, middle: str) -> None:
    """Every possible last character, at both lengths that leave bits of it unused: 4 of 64
    are canonical when 4 bits are unused, 16 when 2 are, and exactly those decode."""
    accepted = []
    for last in _ALPHABET:
        text = prefix + middle + last
        try:
            data = b64url_decode(text)
        except MalformedInput:
            assert not _is_canonical(text)
            continue
        assert _is_canonical(text)
        assert b64url_encode(data) == text
        accepted.append(last)
    assert len(accepted) == (4 if len(middle) == 1 else 16)


def test_b64url_decode_exact_refuses_other_lengths() -> None:
    assert b64url_decode_exact(b64url_encode(bytes(32)), length=32, field="x") == bytes(32)
    for size in (31, 33):
        with pytest.raises(MalformedInput):
            b64url_decode_exact(b64url_encode(bytes(size)), length=32, field="x")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(b'{"a":1,"a":2}', id="top-level"),
        pytest.param(b'{"a":1,"b":{"c":1,"c":1}}', id="nested-same-value"),
        pytest.param(b'{"alg":"EdDSA","alg":"none"}', id="alg-twice"),
    ],
)
def test_json_duplicate_members_are_refused(text: bytes) -> None:
    with pytest.raises(MalformedInput):
        parse_json_object(text)


@pytest.mark.parametrize("text", [b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}'])
def test_json_nan_and_infinity_are_refused(text: bytes) -> None:
    with pytest.raises(MalformedInput):
        parse_json_object(text)


@pytest.mark.parametrize(
    "literal",
    [
        pytest.param(b"1" + b"0" * 400, id="ten-to-the-400"),
        pytest.param(b"-1" + b"0" * 400, id="minus-ten-to-the-400"),
        pytest.param(b"9" * 5000, id="beyond-the-int-conversion-limit"),
        pytest.param(b"1e309", id="float-overflow"),
        pytest.param(b"-10e308", id="negative-float-overflow"),
        pytest.param(b"9007199254740992", id="two-to-the-53"),
        pytest.param(b"-9007199254740992", id="minus-two-to-the-53"),
        pytest.param(b"9007199254740992.0", id="two-to-the-53-as-float"),
        pytest.param(b"1e16", id="large-exponent"),
        pytest.param(b"1e308", id="largest-double-range"),
    ],
)
def test_json_numbers_beyond_the_interoperable_range_are_refused(literal: bytes) -> None:
    """SPEC.md §3.2: every parsed number is within ±(2^53 - 1), wherever it sits."""
    for document in (b'{"a":%s}' % literal, b'{"a":[{"b":%s}]}' % literal):
        with pytest.raises(MalformedInput) as raised:
            parse_json_object(document)
        assert raised.value.code == ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        pytest.param(b"9007199254740991", 2**53 - 1, id="largest"),
        pytest.param(b"-9007199254740991", -(2**53) + 1, id="smallest"),
        pytest.param(b"-0", 0, id="minus-zero"),
        pytest.param(b"1700000000.75", 1700000000.75, id="fraction"),
        pytest.param(b"1e-400", 0.0, id="underflow-to-zero"),
        pytest.param(b"9.007199254740991e15", 2**53 - 1, id="largest-with-exponent"),
    ],
)
def test_json_numbers_within_the_interoperable_range_are_kept(literal: bytes, value: float) -> None:
    assert parse_json_object(b'{"a":%s}' % literal) == {"a": value}


@pytest.mark.parametrize(
    "text",
    [b"[]", b"null", b'"x"', b"1", b"{", b"", b'{"a":1} x', b'{"a":"\xff"}'],
    ids=["array", "null", "string", "number", "truncated", "empty", "trailing", "not-utf8"],
)
def test_json_must_be_one_well_formed_utf8_object(text: bytes) -> None:
    with pytest.raises(MalformedInput):
        parse_json_object(text)


def test_json_deep_nesting_is_malformed_input_not_a_crash() -> None:
    with pytest.raises(MalformedInput):
        parse_json_object(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")


def test_rfc7638_canonical_json_sorts_by_code_point_without_whitespace() -> None:
    assert canonical_json({"b": 1, "a": "x", "B": 2}) == b'{"B":2,"a":"x","b":1}'
