"""Strict, canonical encodings (SPEC.md §3).

Only one byte string maps to a given base64url text and back, so a value can never have two
spellings that compare unequal (a second thumbprint for one key, a second cache key for one token).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from protocol.errors import MalformedInput

_BASE64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_SIX_BITS = {character: value for value, character in enumerate(_BASE64URL_ALPHABET)}
# By the text's length modulo 4: the bits of its last character that encode no data (RFC 4648
# §3.5). A canonical text has them all zero.
_UNUSED_LAST_BITS = (0, 0, 0b1111, 0b11)
_TO_STANDARD_ALPHABET = bytes.maketrans(b"-_", b"+/")


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: object, *, field: str = "value") -> bytes:
    """Decode canonical unpadded base64url; refuse padding, other alphabets and stray bits."""
    if not isinstance(text, str):
        raise MalformedInput(f"{field} must be a base64url string")
    if _BASE64URL.fullmatch(text) is None:
        raise MalformedInput(f"{field} is not unpadded base64url")
    remainder = len(text) % 4
    if remainder == 1:
        raise MalformedInput(f"{field} has an impossible base64url length")
    # Non-zero unused bits in the last character decode to the same bytes; refuse them. Checked
    # on that character alone: encoding the decoded bytes again to compare cost as much as the
    # decoding, three times for every proof.
    if remainder and _SIX_BITS[text[-1]] & _UNUSED_LAST_BITS[remainder]:
        raise MalformedInput(f"{field} is not canonical base64url")
    try:
        return binascii.a2b_base64(
            text.encode("ascii").translate(_TO_STANDARD_ALPHABET) + b"=" * (-remainder % 4),
            strict_mode=True,
        )
    except binascii.Error as exc:
        raise MalformedInput(f"{field} is not base64url") from exc


def b64url_decode_exact(text: object, *, length: int, field: str) -> bytes:
    data = b64url_decode(text, field=field)
    if len(data) != length:
        raise MalformedInput(f"{field} must encode exactly {length} bytes")
    return data


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MalformedInput(f"duplicate JSON member {key!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise MalformedInput(f"JSON constant {name} is not allowed")


# Every number a parsed document holds is within I-JSON's interoperable range (RFC 7493 §2.2):
# the integers an IEEE 754 double holds exactly. Beyond it a value means different things to
# different parsers, and a larger integer only overflows where it meets float arithmetic.
MAX_JSON_NUMBER = 2**53 - 1
# Sign and 16 digits. A longer literal is refused before int() converts it, which takes time
# quadratic in its length.
_MAX_INTEGER_LITERAL = len(str(-MAX_JSON_NUMBER))


def _bounded_int(text: str) -> int:
    if len(text) > _MAX_INTEGER_LITERAL:
        raise MalformedInput("JSON number out of range")
    value = int(text)
    if not -MAX_JSON_NUMBER <= value <= MAX_JSON_NUMBER:
        raise MalformedInput("JSON number out of range")
    return value


def _bounded_float(text: str) -> float:
    # A literal that overflows (1e400) reads as infinity, which fails the comparison too.
    value = float(text)
    if not -MAX_JSON_NUMBER <= value <= MAX_JSON_NUMBER:
        raise MalformedInput("JSON number out of range")
    return value


# Built once: json.loads with hooks would build a new decoder for every document.
_STRICT_DECODER = json.JSONDecoder(
    object_pairs_hook=_refuse_duplicates,
    parse_constant=_refuse_constant,
    parse_float=_bounded_float,
    parse_int=_bounded_int,
)


def parse_json_object(data: bytes, *, field: str = "JSON") -> dict[str, Any]:
    """Parse UTF-8 JSON that must be one object, with no duplicate members, no NaN/Infinity and
    no number beyond ±MAX_JSON_NUMBER."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedInput(f"{field} is not UTF-8") from exc
    try:
        value = _STRICT_DECODER.decode(text)
    except MalformedInput:
        raise
    except (ValueError, RecursionError) as exc:
        raise MalformedInput(f"{field} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise MalformedInput(f"{field} must be a JSON object")
    return value


def canonical_json(value: Any) -> bytes:
    """Members sorted by code point, no whitespace, UTF-8 (RFC 7638 §3 ordering)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compact_json(value: Any) -> bytes:
    """No whitespace, members in the given order."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def require_str(obj: dict[str, Any], name: str, *, max_length: int = 2048) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise MalformedInput(f"{name!r} must be a non-empty string")
    if len(value) > max_length:
        raise MalformedInput(f"{name!r} is longer than {max_length} characters")
    return value


def require_int(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name)
    # bool is an int in Python; JSON true is not a number.
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedInput(f"{name!r} must be an integer")
    return value
