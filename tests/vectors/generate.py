"""Write the shared JSON test vectors in tests/vectors/ (see README.md there).

    .venv/bin/python tests/vectors/generate.py          # rewrite the *.json files
    .venv/bin/python tests/vectors/generate.py --check  # exit 1 if a file would change

Deterministic: every key, time and identifier is a constant below and both signature schemes used
to sign are deterministic (Ed25519, RFC 8032; no ES256 signing happens here). The test run never
calls this script; it only reads the JSON it wrote.

This script deliberately does not import `protocol`: expected outputs come from the RFCs, from
hand-written literals, or from independent code (`cryptography`/OpenSSL for Ed25519, hashlib and
json for thumbprints and hashes), so a bug in `protocol` cannot write itself into the vectors.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

HERE = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------------------------
# Encoding helpers (independent of protocol.encoding)


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compact(value: Any) -> str:
    """JSON as protocol.encoding.compact_json writes it: no whitespace, members in given order."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def thumbprint(required: dict[str, str]) -> str:
    """RFC 7638 §3: SHA-256 over the required members sorted by code point, no whitespace."""
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return b64u(hashlib.sha256(canonical.encode()).digest())


def ath(access_token: str) -> str:
    return b64u(hashlib.sha256(access_token.encode("ascii")).digest())


# ---------------------------------------------------------------------------------------------
# Ed25519 arithmetic, used only to check the small-order list and to find a y >= p encoding.

ED_P = 2**255 - 19
ED_D = -121665 * pow(121666, -1, ED_P) % ED_P
ED_L = 2**252 + 27742317777372353535851937790883648493
ED_SQRT_M1 = pow(2, (ED_P - 1) // 4, ED_P)
Point = tuple[int, int]


def ed_decode(encoded: bytes, *, reduce: bool = False) -> Point | None:
    """Affine point of a 32-byte encoding, or None if it is not on the curve."""
    value = int.from_bytes(encoded, "little")
    y, sign = value & (2**255 - 1), value >> 255
    if y >= ED_P and not reduce:
        return None
    y %= ED_P
    u, v = (y * y - 1) % ED_P, (ED_D * y * y + 1) % ED_P
    x2 = u * pow(v, -1, ED_P) % ED_P
    x = pow(x2, (ED_P + 3) // 8, ED_P)
    if (x * x - x2) % ED_P:
        x = x * ED_SQRT_M1 % ED_P
    if (x * x - x2) % ED_P:
        return None
    if x & 1 != sign:
        x = (-x) % ED_P
    return (x, y)


def ed_add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = ED_D * x1 * x2 * y1 * y2 % ED_P
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, -1, ED_P) % ED_P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, -1, ED_P) % ED_P
    return (x3, y3)


def ed_mul(k: int, point: Point) -> Point:
    result, addend = (0, 1), point
    while k:
        if k & 1:
            result = ed_add(result, addend)
        addend = ed_add(addend, addend)
        k >>= 1
    return result


# The 8 encodings of points of order 1, 2, 4 and 8 (threats.md A9; libsodium's blocklist).
SMALL_ORDER_ED25519 = [
    ("identity", "0100000000000000000000000000000000000000000000000000000000000000"),
    ("order-2", "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    ("order-4-x-positive", "0000000000000000000000000000000000000000000000000000000000000000"),
    ("order-4-x-negative", "0000000000000000000000000000000000000000000000000000000000000080"),
    ("order-8-a", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    ("order-8-b", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
    ("order-8-c", "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    ("order-8-d", "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
]


def _check_small_order_list() -> None:
    seen = set()
    for name, hex_encoding in SMALL_ORDER_ED25519:
        point = ed_decode(bytes.fromhex(hex_encoding))
        assert point is not None, name
        assert ed_mul(8, point) == (0, 1), name
        seen.add(point)
    assert len(seen) == 8


def ed_order_class(encoded: bytes) -> str:
    """'small', 'prime' or 'mixed' for the point an encoding denotes once y is reduced mod p."""
    point = ed_decode(encoded, reduce=True)
    assert point is not None
    if ed_mul(8, point) == (0, 1):
        return "small"
    return "prime" if ed_mul(ED_L, point) == (0, 1) else "mixed"


# Encodings with y >= p (none of y - p in 0..18 is a prime-order point: checked by
# ed_order_class) and one canonical point of mixed order (prime-order part plus 8-torsion).
ED25519_OUTSIDE_SUBGROUP = [
    ("noncanonical-y-eq-p", "ed" + "ff" * 30 + "7f", "small", "y = p, i.e. y = 0 spelled >= p"),
    ("noncanonical-y-eq-p-plus-1", "ee" + "ff" * 30 + "7f", "small", "the identity spelled >= p"),
    ("noncanonical-y-eq-p-plus-3", "f0" + "ff" * 30 + "7f", "mixed", "y = 3 spelled >= p"),
    ("mixed-order-y-3", "03" + "00" * 31, "mixed", "canonical, not in the prime-order subgroup"),
]


# ---------------------------------------------------------------------------------------------
# Fixed keys and constants

# RFC 8037 Appendix A.1 (= RFC 8032 §7.1 TEST 1): the device key of every generated proof.
DEVICE_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
DEVICE_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
DEVICE_JWK = {"crv": "Ed25519", "kty": "OKP", "x": DEVICE_X}
DEVICE_PRIVATE_JWK = {**DEVICE_JWK, "d": DEVICE_D}
DEVICE_JKT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"

# RFC 8032 §7.1 TEST 2: the server's access-token signing key.
SERVER_SEED_HEX = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"
SERVER_PUBLIC_HEX = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
SERVER_JWK = {"crv": "Ed25519", "kty": "OKP", "x": b64u(bytes.fromhex(SERVER_PUBLIC_HEX))}
SERVER_PRIVATE_JWK = {**SERVER_JWK, "d": b64u(bytes.fromhex(SERVER_SEED_HEX))}
SERVER_KID = "k1"

# RFC 9449 §4.1 / standards.md §2.10: the P-256 key of all RFC examples.
RFC9449_JWK = {
    "kty": "EC",
    "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
    "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
    "crv": "P-256",
}
RFC9449_REQUIRED = {k: RFC9449_JWK[k] for k in ("crv", "kty", "x", "y")}
RFC9449_JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
RFC9449_ACCESS_TOKEN = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
RFC9449_ATH = "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
RFC9449_PROOF_A = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0Vj"
    "NoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5"
    "VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVC"
    "IsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP"
    "4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
)
RFC9449_PROOF_B = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0Vj"
    "NoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5"
    "VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVC"
    "IsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjY1Mjk2fQ.pAqut2IRDm"
    "_De6PR93SYmGBPXpwrAk90e8cP2hjiaG5QsGSuKDYW7_X620BxqhvYC8ynrrvZLTk41mSRroapUA"
)
RFC9449_PROOF_C = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0Vj"
    "NoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5"
    "VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIi"
    "wiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2"
    "MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhr"
    "tNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA"
)
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B

# RFC 7638 §3.1.
RFC7638_RSA_JWK = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
        "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4v"
        "MQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

# RFC 8037 A.4.
RFC8037_SIGNING_INPUT = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
RFC8037_SIGNATURE = (
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)

# DPoP verification context of the generated proofs.
NOW = 1700000000
MAX_AGE = 60
MAX_FUTURE = 60
TOKEN_URL = "https://auth.example.com/token"
API_URL = "https://api.example.com/me"
API_ACCESS_TOKEN = "splitlink-vector-access-token"

# Access-token context.
ISSUER = "https://auth.example.com"
AUDIENCE = "https://api.example.com"
AT_IAT = 1700000000
AT_LIFETIME = 300
AT_CLAIMS: dict[str, Any] = {
    "iss": ISSUER,
    "sub": "usr_vector_0001",
    "aud": AUDIENCE,
    "exp": AT_IAT + AT_LIFETIME,
    "iat": AT_IAT,
    "jti": "at_vector_0001",
    "client_id": "splitlink-mobile",
    "sid": "ses_vector_0001",
    "auth_time": AT_IAT - 10,
    "cnf": {"jkt": DEVICE_JKT},
}
AT_OUTPUT = {
    "subject": AT_CLAIMS["sub"],
    "session_id": AT_CLAIMS["sid"],
    "jkt": DEVICE_JKT,
    "jti": AT_CLAIMS["jti"],
    "client_id": AT_CLAIMS["client_id"],
    "issued_at": AT_IAT,
    "expires_at": AT_IAT + AT_LIFETIME,
    "auth_time": AT_IAT - 10,
    "kid": SERVER_KID,
}

# Login-link values: fixed byte strings, not secrets.
ATTEMPT_ID = b64u(bytes(range(16)))
EMAIL_HALF = b64u(bytes(range(32, 64)))


def ed25519_key(seed_b64u: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(unb64u(seed_b64u))


DEVICE_KEY = ed25519_key(DEVICE_D)
SERVER_KEY = ed25519_key(SERVER_PRIVATE_JWK["d"])


def jws(header: Any, payload: Any, key: Ed25519PrivateKey | None = DEVICE_KEY) -> str:
    """Compact JWS; header/payload given as str are used verbatim (to write malformed JSON)."""
    header_text = header if isinstance(header, str) else compact(header)
    payload_text = payload if isinstance(payload, str) else compact(payload)
    signing_input = b64u(header_text.encode()) + "." + b64u(payload_text.encode())
    signature = key.sign(signing_input.encode("ascii")) if key is not None else b""
    return signing_input + "." + b64u(signature)


def with_literal(value: dict[str, Any], name: str, literal: str) -> str:
    """Compact JSON with one member written as raw JSON text, for numbers json cannot write."""
    return compact({**value, name: "LITERAL"}).replace('"LITERAL"', literal)


# Number literals beyond I-JSON's interoperable range, ±(2^53 - 1) (RFC 7493 §2.2; SPEC.md §3.2).
OUT_OF_RANGE_NUMBERS = [
    ("ten-to-the-400", "1" + "0" * 400),
    ("minus-ten-to-the-400", "-1" + "0" * 400),
    ("float-overflow", "1e309"),
    ("two-to-the-53", "9007199254740992"),
]
LARGEST_NUMBER = 2**53 - 1


def replace_signature(token: str, signature: bytes | str) -> str:
    head, payload, _ = token.split(".")
    text = signature if isinstance(signature, str) else b64u(signature)
    return f"{head}.{payload}.{text}"


def flip_bit(token: str, byte_index: int = 0) -> str:
    signature = bytearray(unb64u(token.split(".")[2]))
    signature[byte_index] ^= 0x01
    return replace_signature(token, bytes(signature))


def case(
    case_id: str,
    case_type: str,
    spec: str,
    input_: dict[str, Any],
    *,
    output: dict[str, Any] | None = None,
    error: str | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    assert (output is None) != (error is None), case_id
    result: dict[str, Any] = {"id": case_id, "type": case_type, "spec": spec}
    if description:
        result["description"] = description
    result["input"] = input_
    if output is not None:
        result["output"] = output
    else:
        result["error"] = error
    return result


# ---------------------------------------------------------------------------------------------
# base64url.json


def base64url_cases() -> list[dict[str, Any]]:
    cases = []
    rfc4648 = [b"", b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"]
    for data in rfc4648:
        name = data.decode() or "empty"
        text = b64u(data)
        cases.append(
            case(
                f"base64url/rfc4648-{name}-encode",
                "b64url_encode",
                "RFC 4648 §10; RFC 7515 §2 (no padding)",
                {"hex": data.hex()},
                output={"text": text},
            )
        )
        cases.append(
            case(
                f"base64url/rfc4648-{name}-decode",
                "b64url_decode",
                "RFC 4648 §10; RFC 7515 §2 (no padding)",
                {"text": text},
                output={"hex": data.hex()},
            )
        )
    url_alphabet = bytes.fromhex("fbff")
    assert b64u(url_alphabet) == "-_8"
    cases.append(
        case(
            "base64url/url-alphabet-encode",
            "b64url_encode",
            "RFC 4648 §5",
            {"hex": url_alphabet.hex()},
            output={"text": "-_8"},
        )
    )
    cases.append(
        case(
            "base64url/url-alphabet-decode",
            "b64url_decode",
            "RFC 4648 §5",
            {"text": "-_8"},
            output={"hex": url_alphabet.hex()},
        )
    )
    refused: list[tuple[str, Any, str, str]] = [
        ("padding-two", "Zg==", "RFC 7515 §2", "padding characters are not allowed"),
        ("padding-one", "Zm8=", "RFC 7515 §2", "padding characters are not allowed"),
        ("padding-partial", "Zg=", "RFC 7515 §2", "truncated padding"),
        ("standard-alphabet", "+/8", "RFC 4648 §5", "'+' and '/' belong to base64, not base64url"),
        ("invalid-character", "Q!Q", "RFC 4648 §5", "'!' is in no base64 alphabet"),
        ("stray-bits-one-byte", "QR", "RFC 4648 §3.5", "non-zero unused bits ('QQ' is canonical)"),
        (
            "stray-bits-two-bytes",
            "Zm9",
            "RFC 4648 §3.5",
            "non-zero unused bits ('Zm8' is canonical)",
        ),
        ("impossible-length-1", "Q", "RFC 4648 §4", "one character cannot encode a byte"),
        ("impossible-length-5", "Zm9vY", "RFC 4648 §4", "length 4n+1 cannot occur"),
        ("embedded-space", "Zm9 v", "RFC 4648 §3.3", "whitespace is not skipped"),
        ("trailing-newline", "Zm9v\n", "RFC 4648 §3.3", "whitespace is not skipped"),
        ("fullwidth-letter", "\uff3ag", "RFC 4648 §5", "only ASCII letters are in the alphabet"),
        ("not-a-string-number", 1234, "SPEC.md §3", "a JSON number is not base64url text"),
        ("not-a-string-null", None, "SPEC.md §3", "null is not base64url text"),
    ]
    for name, text, spec, description in refused:
        cases.append(
            case(
                f"base64url/{name}-refused",
                "b64url_decode",
                spec,
                {"text": text},
                error="invalid_request",
                description=description,
            )
        )
    return cases


# ---------------------------------------------------------------------------------------------
# jwk.json


def _okp(x_bytes: bytes, crv: str = "Ed25519") -> dict[str, str]:
    return {"kty": "OKP", "crv": crv, "x": b64u(x_bytes)}


def jwk_cases() -> list[dict[str, Any]]:
    device_required = {"crv": "Ed25519", "kty": "OKP", "x": DEVICE_X}
    assert thumbprint(device_required) == DEVICE_JKT
    assert thumbprint(RFC9449_REQUIRED) == RFC9449_JKT
    rsa_required = {k: RFC7638_RSA_JWK[k] for k in ("e", "kty", "n")}
    assert thumbprint(rsa_required) == RFC7638_THUMBPRINT

    cases = [
        case(
            "jwk/rfc7638-3.1-rsa-thumbprint-only",
            "jwk_thumbprint",
            "RFC 7638 §3.1",
            {"jwk": RFC7638_RSA_JWK},
            output={
                "thumbprint_input": json.dumps(rsa_required, sort_keys=True, separators=(",", ":")),
                "thumbprint": RFC7638_THUMBPRINT,
            },
            description="thumbprint only: RSA is not an accepted device key (see jwk/rsa-refused)",
        ),
        case(
            "jwk/rfc8037-a3-thumbprint",
            "jwk_thumbprint",
            "RFC 8037 §A.3",
            {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": DEVICE_X}},
            output={
                "thumbprint_input": json.dumps(device_required, separators=(",", ":")),
                "thumbprint": DEVICE_JKT,
            },
        ),
        case(
            "jwk/rfc9449-thumbprint",
            "jwk_thumbprint",
            "RFC 9449 §6.1; standards.md §2.10",
            {"jwk": RFC9449_JWK},
            output={
                "thumbprint_input": json.dumps(RFC9449_REQUIRED, separators=(",", ":")),
                "thumbprint": RFC9449_JKT,
            },
        ),
        case(
            "jwk/rfc8037-a2-ed25519",
            "parse_public_jwk",
            "RFC 8037 §A.2, §A.3",
            {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": DEVICE_X}},
            output={"alg": "EdDSA", "jwk": device_required, "thumbprint": DEVICE_JKT},
        ),
        case(
            "jwk/rfc8037-a2-with-kid-alg-use",
            "parse_public_jwk",
            "RFC 7638 §3.2",
            {
                "jwk": {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": DEVICE_X,
                    "kid": "device-1",
                    "alg": "EdDSA",
                    "use": "sig",
                }
            },
            output={"alg": "EdDSA", "jwk": device_required, "thumbprint": DEVICE_JKT},
            description="non-required members do not change the thumbprint",
        ),
        case(
            "jwk/rfc9449-p256",
            "parse_public_jwk",
            "RFC 9449 §4.1; standards.md §2.10",
            {"jwk": RFC9449_JWK},
            output={"alg": "ES256", "jwk": RFC9449_REQUIRED, "thumbprint": RFC9449_JKT},
        ),
        case(
            "jwk/rfc9449-p256-expected-alg",
            "parse_public_jwk",
            "RFC 8037 §4 (algorithm bound to key type)",
            {"jwk": RFC9449_JWK, "alg": "ES256"},
            output={"alg": "ES256", "jwk": RFC9449_REQUIRED, "thumbprint": RFC9449_JKT},
        ),
        case(
            "jwk/rfc8032-test2-server-key",
            "parse_public_jwk",
            "RFC 8032 §7.1 TEST 2",
            {"jwk": SERVER_JWK, "alg": "EdDSA"},
            output={"alg": "EdDSA", "jwk": SERVER_JWK, "thumbprint": thumbprint(SERVER_JWK)},
        ),
    ]

    _check_small_order_list()
    for name, hex_encoding in SMALL_ORDER_ED25519:
        cases.append(
            case(
                f"jwk/ed25519-small-order-{name}-refused",
                "parse_public_jwk",
                "threats.md A9",
                {"jwk": _okp(bytes.fromhex(hex_encoding))},
                error="invalid_dpop_proof",
                description=f"small-order Ed25519 point {hex_encoding}",
            )
        )
    for name, hex_encoding, order, description in ED25519_OUTSIDE_SUBGROUP:
        assert ed_order_class(bytes.fromhex(hex_encoding)) == order, name
        cases.append(
            case(
                f"jwk/ed25519-{name}-refused",
                "parse_public_jwk",
                "threats.md A9; RFC 8032 §5.1.3 step 1 (y < p)",
                {"jwk": _okp(bytes.fromhex(hex_encoding))},
                error="invalid_dpop_proof",
                description=f"{description} ({order} order)",
            )
        )
    negative_zero = bytes.fromhex("01" + "00" * 30 + "80")
    cases.append(
        case(
            "jwk/ed25519-identity-negative-zero-refused",
            "parse_public_jwk",
            "threats.md A9; RFC 8032 §5.1.3 step 4",
            {"jwk": _okp(negative_zero)},
            error="invalid_dpop_proof",
            description="x = 0 with the sign bit set: non-canonical encoding of the identity",
        )
    )

    x_int = int.from_bytes(unb64u(RFC9449_JWK["x"]), "big")
    y_int = int.from_bytes(unb64u(RFC9449_JWK["y"]), "big")
    off_curve = {**RFC9449_REQUIRED, "y": b64u((y_int + 1).to_bytes(32, "big"))}
    # P-256 point with x = 0 (on the curve), and its x re-encoded as x + p (same point).
    zero_y = pow(P256_B, (P256_P + 1) // 4, P256_P)
    assert zero_y * zero_y % P256_P == P256_B
    x_plus_p = {
        "kty": "EC",
        "crv": "P-256",
        "x": b64u(P256_P.to_bytes(32, "big")),
        "y": b64u(zero_y.to_bytes(32, "big")),
    }
    assert x_int < P256_P and y_int < P256_P

    ed_x = unb64u(DEVICE_X)
    # Same 32 bytes, last character with non-zero unused bits ('o' -> 'p').
    assert DEVICE_X.endswith("o")
    refused: list[tuple[str, Any, str, str]] = [
        (
            "x25519",
            {"kty": "OKP", "crv": "X25519", "x": "3p7bfXt9wbTTW2HC7OQ1Nz-DQ8hbeGdNrfx-FG-IK08"},
            "RFC 8037 §3.2 (A.6 key)",
            "X25519 keys MUST NOT be used for signing",
        ),
        (
            "ed448",
            _okp(
                bytes.fromhex(
                    "5fd7449b59b461fd2ce787ec616ad46a1da1342485a70e1f8a0ea75d80e96778edf124769b46c7"
                    "061bd6783df1e50f6cd1fa1abeafe8256180"
                ),
                "Ed448",
            ),
            "SPEC.md §4.2; RFC 8032 §7.4 (blank) key",
            "only Ed25519 is accepted among OKP curves",
        ),
        (
            "ec-crv-ed25519",
            {"kty": "EC", "crv": "Ed25519", "x": DEVICE_X},
            "RFC 8037 §4; standards.md §4",
            "kty and crv do not belong together",
        ),
        (
            "okp-crv-p256",
            {"kty": "OKP", "crv": "P-256", "x": RFC9449_JWK["x"], "y": RFC9449_JWK["y"]},
            "RFC 8037 §2",
            "kty and crv do not belong together",
        ),
        ("rsa", RFC7638_RSA_JWK, "SPEC.md §4.2", "RSA is not an accepted device key"),
        (
            "oct-with-k",
            {
                "kty": "oct",
                "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4",
            },
            "RFC 9449 §4.2; threats.md A9, B4",
            "a symmetric key is never a proof key",
        ),
        (
            "private-member-d",
            DEVICE_PRIVATE_JWK,
            "RFC 9449 §4.2; RFC 8037 §2; threats.md A9",
            "a public key must not carry d",
        ),
        (
            "p256-y-plus-1-off-curve",
            off_curve,
            "threats.md A9",
            "RFC 9449 key with y + 1: not on P-256",
        ),
        (
            "p256-x-plus-p-noncanonical",
            x_plus_p,
            "RFC 7638 §3.3; RFC 7518 §6.2.1.2; standards.md §3",
            "x = p encodes the coordinate 0 a second way: one key, two thumbprints",
        ),
        ("ed25519-x-31-bytes", _okp(ed_x[:31]), "RFC 8037 §2", "Ed25519 x is exactly 32 bytes"),
        ("ed25519-x-33-bytes", _okp(ed_x + b"\0"), "RFC 8037 §2", "Ed25519 x is exactly 32 bytes"),
        (
            "p256-x-31-bytes",
            {**RFC9449_REQUIRED, "x": b64u(unb64u(RFC9449_JWK["x"])[1:])},
            "RFC 7518 §6.2.1.2",
            "P-256 coordinates are full-size 32 bytes",
        ),
        (
            "p256-y-33-bytes",
            {**RFC9449_REQUIRED, "y": b64u(b"\0" + unb64u(RFC9449_JWK["y"]))},
            "RFC 7518 §6.2.1.3",
            "P-256 coordinates are full-size 32 bytes, no leading zero",
        ),
        (
            "ed25519-x-padded",
            {"kty": "OKP", "crv": "Ed25519", "x": DEVICE_X + "="},
            "RFC 7638 §3.3; standards.md §3",
            "base64url padding",
        ),
        (
            "ed25519-x-standard-alphabet",
            {"kty": "OKP", "crv": "Ed25519", "x": DEVICE_X.replace("_", "/")},
            "RFC 7638 §3.3; standards.md §3",
            "'/' is the standard alphabet",
        ),
        (
            "p256-x-standard-alphabet",
            {**RFC9449_REQUIRED, "x": RFC9449_JWK["x"].replace("-", "+")},
            "RFC 7638 §3.3; standards.md §3",
            "'+' is the standard alphabet",
        ),
        (
            "ed25519-x-stray-bits",
            {"kty": "OKP", "crv": "Ed25519", "x": DEVICE_X[:-1] + "p"},
            "RFC 7638 §3.3; RFC 4648 §3.5",
            "same 32 bytes as RFC 8037 A.2, spelled with non-zero unused bits",
        ),
        (
            "okp-alg-es256",
            {**DEVICE_JWK, "alg": "ES256"},
            "RFC 8037 §4",
            "declared alg does not match the key type",
        ),
        (
            "ec-alg-eddsa",
            {**RFC9449_JWK, "alg": "EdDSA"},
            "RFC 8037 §4",
            "declared alg does not match the key type",
        ),
        ("missing-x", {"kty": "OKP", "crv": "Ed25519"}, "RFC 8037 §2", "x is required"),
        (
            "missing-y",
            {k: RFC9449_JWK[k] for k in ("kty", "crv", "x")},
            "RFC 7518 §6.2.1",
            "EC keys need y",
        ),
        ("missing-kty", {"crv": "Ed25519", "x": DEVICE_X}, "RFC 7517 §4.1", "kty is required"),
        ("x-not-a-string", {"kty": "OKP", "crv": "Ed25519", "x": 1}, "RFC 8037 §2", "x is text"),
        ("not-an-object-string", "foo", "threats.md B4", "jwk must be an object"),
        ("not-an-object-array", [], "threats.md B4", "jwk must be an object"),
        ("not-an-object-null", None, "threats.md B4", "jwk must be an object"),
    ]
    for name, jwk, spec, description in refused:
        cases.append(
            case(
                f"jwk/{name}-refused",
                "parse_public_jwk",
                spec,
                {"jwk": jwk},
                error="invalid_dpop_proof",
                description=description,
            )
        )
    for name, jwk, alg in [
        ("okp-expected-es256", DEVICE_JWK, "ES256"),
        ("ec-expected-eddsa", RFC9449_JWK, "EdDSA"),
    ]:
        cases.append(
            case(
                f"jwk/{name}-refused",
                "parse_public_jwk",
                "RFC 8037 §4; standards.md §4",
                {"jwk": jwk, "alg": alg},
                error="invalid_dpop_proof",
                description="the JWS alg does not belong to the key type",
            )
        )
    return cases


# ---------------------------------------------------------------------------------------------
# eddsa.json


def eddsa_cases() -> list[dict[str, Any]]:
    a1_public = DEVICE_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert b64u(a1_public) == DEVICE_X
    server_public = SERVER_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert server_public.hex() == SERVER_PUBLIC_HEX
    signature = DEVICE_KEY.sign(RFC8037_SIGNING_INPUT.encode())
    assert b64u(signature) == RFC8037_SIGNATURE
    token = f"{RFC8037_SIGNING_INPUT}.{RFC8037_SIGNATURE}"
    # "Example of Ed25519 Signing" (capital S, as RFC 8037 A.5 prose says) is another payload.
    capital_payload = b64u(b"Example of Ed25519 Signing")
    s_int = int.from_bytes(signature[32:], "little")
    malleated = signature[:32] + (s_int + ED_L).to_bytes(32, "little")
    a2 = {"kty": "OKP", "crv": "Ed25519", "x": DEVICE_X}
    return [
        case(
            "eddsa/rfc8037-a1-public-from-private",
            "ed25519_public_key",
            "RFC 8037 §A.1; RFC 8032 §7.1 TEST 1",
            {"d": DEVICE_D},
            output={"x": DEVICE_X},
        ),
        case(
            "eddsa/rfc8032-test2-public-from-private",
            "ed25519_public_key",
            "RFC 8032 §7.1 TEST 2 (the access-token vectors' server key)",
            {"d": SERVER_PRIVATE_JWK["d"]},
            output={"x": SERVER_JWK["x"]},
        ),
        case(
            "eddsa/rfc8037-a4-sign",
            "eddsa_sign",
            "RFC 8037 §A.4",
            {"private_jwk": DEVICE_PRIVATE_JWK, "signing_input": RFC8037_SIGNING_INPUT},
            output={"signature": RFC8037_SIGNATURE, "jws": token},
        ),
        case(
            "eddsa/rfc8037-a5-verify",
            "eddsa_verify",
            "RFC 8037 §A.5",
            {"jwk": a2, "jws": token},
            output={"verified": True},
        ),
        case(
            "eddsa/rfc8037-a5-flipped-signature-bit",
            "eddsa_verify",
            "RFC 8037 §A.5",
            {"jwk": a2, "jws": flip_bit(token, 10)},
            error="invalid_request",
            description="InvalidSignature; callers map it to their context's error",
        ),
        case(
            "eddsa/rfc8037-a5-capital-s-payload",
            "eddsa_verify",
            "RFC 8037 §A.5 (prose spells the payload with a capital S)",
            {"jwk": a2, "jws": f"eyJhbGciOiJFZERTQSJ9.{capital_payload}.{RFC8037_SIGNATURE}"},
            error="invalid_request",
        ),
        case(
            "eddsa/s-plus-l-malleated",
            "eddsa_verify",
            "RFC 8032 §5.1.7 step 1 (S < L)",
            {"jwk": a2, "jws": f"{RFC8037_SIGNING_INPUT}.{b64u(malleated)}"},
            error="invalid_request",
            description="S + L verifies under a lax check; RFC 8032 requires S < L",
        ),
        case(
            "eddsa/signature-63-bytes",
            "eddsa_verify",
            "RFC 8037 §3.1",
            {"jwk": a2, "jws": f"{RFC8037_SIGNING_INPUT}.{b64u(signature[:63])}"},
            error="invalid_request",
        ),
        case(
            "eddsa/wrong-key",
            "eddsa_verify",
            "RFC 8037 §3.1.2",
            {"jwk": SERVER_JWK, "jws": token},
            error="invalid_request",
        ),
    ]


# ---------------------------------------------------------------------------------------------
# dpop.json


def dpop_header(**overrides: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": dict(DEVICE_JWK)}
    for name, value in overrides.items():
        if value is _DROP:
            header.pop(name, None)
        else:
            header[name] = value
    return header


def dpop_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "jti": "jti-vector-0001",
        "htm": "POST",
        "htu": TOKEN_URL,
        "iat": NOW,
    }
    for name, value in overrides.items():
        if value is _DROP:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


_DROP = object()


def _verify_input(proof: str, **overrides: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "proof": proof,
        "method": "POST",
        "url": TOKEN_URL,
        "now": NOW,
        "max_age": MAX_AGE,
        "max_future": MAX_FUTURE,
        "access_token": None,
    }
    result.update(overrides)
    return result


def _verified(payload: dict[str, Any], jkt: str = DEVICE_JKT) -> dict[str, Any]:
    return {
        "jkt": jkt,
        "jti": payload["jti"],
        "htm": payload["htm"],
        "htu": payload["htu"],
        "iat": payload["iat"],
        "nonce": payload.get("nonce"),
    }


def dpop_cases() -> list[dict[str, Any]]:
    assert ath(RFC9449_ACCESS_TOKEN) == RFC9449_ATH
    rfc_payloads: dict[str, dict[str, Any]] = {
        "a": {
            "jti": "-BwC3ESc6acc2lTc",
            "htm": "POST",
            "htu": "https://server.example.com/token",
            "iat": 1562262616,
        },
        "b": {
            "jti": "-BwC3ESc6acc2lTc",
            "htm": "POST",
            "htu": "https://server.example.com/token",
            "iat": 1562265296,
        },
        "c": {
            "jti": "e1j3V_bKic8-LAEB",
            "htm": "GET",
            "htu": "https://resource.example.org/protectedresource",
            "iat": 1562262618,
            "ath": RFC9449_ATH,
        },
    }
    for name, proof in zip("abc", (RFC9449_PROOF_A, RFC9449_PROOF_B, RFC9449_PROOF_C), strict=True):
        assert json.loads(unb64u(proof.split(".")[1])) == rfc_payloads[name]

    def rfc_input(name: str, proof: str, **overrides: Any) -> dict[str, Any]:
        payload = rfc_payloads[name]
        base = _verify_input(
            proof,
            method=payload["htm"],
            url=payload["htu"],
            now=payload["iat"] + 5,
            access_token=RFC9449_ACCESS_TOKEN if name == "c" else None,
        )
        base.update(overrides)
        return base

    cases = [
        case(
            "dpop/rfc9449-ath",
            "access_token_hash",
            "RFC 9449 §4.2, §7.1; standards.md §2.10",
            {"access_token": RFC9449_ACCESS_TOKEN},
            output={"ath": RFC9449_ATH},
        )
    ]
    for name, proof, spec in [
        ("a", RFC9449_PROOF_A, "RFC 9449 §4.1 (token request); standards.md §2.10 (a)"),
        ("b", RFC9449_PROOF_B, "RFC 9449 §5 (refresh request); standards.md §2.10 (b)"),
        ("c", RFC9449_PROOF_C, "RFC 9449 §7.1 (resource request); standards.md §2.10 (c)"),
    ]:
        cases.append(
            case(
                f"dpop/rfc9449-example-{name}-valid",
                "verify_dpop_proof",
                spec,
                rfc_input(name, proof),
                output=_verified(rfc_payloads[name], RFC9449_JKT),
            )
        )

    a_sig = unb64u(RFC9449_PROOF_A.split(".")[2])
    r_int, s_int = int.from_bytes(a_sig[:32], "big"), int.from_bytes(a_sig[32:], "big")
    high_low_s = a_sig[:32] + (P256_ORDER - s_int).to_bytes(32, "big")

    def der_int(value: int) -> bytes:
        body = value.to_bytes(33, "big").lstrip(b"\0")
        if body[0] & 0x80:
            body = b"\0" + body
        return b"\x02" + bytes([len(body)]) + body

    der_body = der_int(r_int) + der_int(s_int)
    der_signature = b"\x30" + bytes([len(der_body)]) + der_body
    ec_header_with_eddsa = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": RFC9449_JWK}
    rfc_a_head_swapped = (
        b64u(compact(ec_header_with_eddsa).encode()) + "." + RFC9449_PROOF_A.split(".", 1)[1]
    )
    cases += [
        case(
            "dpop/rfc9449-example-a-other-s-accepted",
            "verify_dpop_proof",
            "threats.md A8 (replay is keyed on jkt and jti, never on proof bytes)",
            rfc_input("a", replace_signature(RFC9449_PROOF_A, high_low_s)),
            output=_verified(rfc_payloads["a"], RFC9449_JKT),
            description="(r, n - s) of example (a): ECDSA accepts both; the jti is unchanged",
        ),
        case(
            "dpop/rfc9449-example-a-flipped-signature-bit",
            "verify_dpop_proof",
            "RFC 9449 §4.3 step 6; standards.md §2.10",
            rfc_input("a", flip_bit(RFC9449_PROOF_A, 5)),
            error="invalid_dpop_proof",
        ),
        case(
            "dpop/rfc9449-example-a-zero-signature",
            "verify_dpop_proof",
            "threats.md A8 (CVE-2022-21449, r = s = 0)",
            rfc_input("a", replace_signature(RFC9449_PROOF_A, bytes(64))),
            error="invalid_dpop_proof",
        ),
        case(
            "dpop/rfc9449-example-a-der-signature",
            "verify_dpop_proof",
            "RFC 7518 §3.4; threats.md A8",
            rfc_input("a", replace_signature(RFC9449_PROOF_A, der_signature)),
            error="invalid_dpop_proof",
            description="the same (r, s) DER-encoded instead of the 64-byte R || S",
        ),
        case(
            "dpop/rfc9449-example-a-alg-eddsa-with-ec-key",
            "verify_dpop_proof",
            "RFC 8037 §4; RFC 9449 §4.3 step 5",
            rfc_input("a", rfc_a_head_swapped),
            error="invalid_dpop_proof",
        ),
        case(
            "dpop/rfc9449-example-a-htm-get",
            "verify_dpop_proof",
            "RFC 9449 §4.3 step 8; standards.md §2.10",
            rfc_input("a", RFC9449_PROOF_A, method="GET"),
            error="invalid_dpop_proof",
        ),
        case(
            "dpop/rfc9449-example-a-other-host",
            "verify_dpop_proof",
            "RFC 9449 §4.3 step 9; standards.md §2.10",
            rfc_input("a", RFC9449_PROOF_A, url="https://other.example.com/token"),
            error="invalid_dpop_proof",
        ),
        case(
            "dpop/rfc9449-example-a-window-passed",
            "verify_dpop_proof",
            "RFC 9449 §4.3 step 11, §11.1; standards.md §2.10",
            rfc_input("a", RFC9449_PROOF_A, now=rfc_payloads["a"]["iat"] + MAX_AGE + 1),
            error="invalid_dpop_proof",
        ),
        case(
            "dpop/rfc9449-example-a-with-access-token-missing-ath",
            "verify_dpop_proof",
            "RFC 9449 §4.3 step 12; threats.md B3",
            rfc_input("a", RFC9449_PROOF_A, access_token=RFC9449_ACCESS_TOKEN),
            error="invalid_dpop_proof",
        ),
        case(
            "dpop/rfc9449-example-c-other-access-token",
            "verify_dpop_proof",
            "RFC 9449 §4.3 step 12; threats.md B3; standards.md §2.10",
            rfc_input("c", RFC9449_PROOF_C, access_token=RFC9449_ACCESS_TOKEN + "x"),
            error="invalid_dpop_proof",
        ),
    ]

    # -- Generated with the RFC 8037 A.1 key (Ed25519 is deterministic). --------------------
    base_payload = dpop_payload()
    base_proof = jws(dpop_header(), base_payload)
    cases.append(
        case(
            "dpop/eddsa-valid",
            "verify_dpop_proof",
            "RFC 9449 §4.2, §4.3",
            _verify_input(base_proof),
            output=_verified(base_payload),
        )
    )
    ath_payload = dpop_payload(htm="GET", htu=API_URL, ath=ath(API_ACCESS_TOKEN))
    ath_proof = jws(dpop_header(), ath_payload)
    api = {"method": "GET", "url": API_URL, "access_token": API_ACCESS_TOKEN}
    nonce_payload = dpop_payload(nonce="server-nonce-0001")

    accepted: list[tuple[str, str, dict[str, Any], dict[str, Any], str]] = [
        ("eddsa-with-ath-valid", ath_proof, api, ath_payload, "RFC 9449 §4.2, §7.1"),
        (
            "eddsa-with-nonce-valid",
            jws(dpop_header(), nonce_payload),
            {},
            nonce_payload,
            "RFC 9449 §8 (nonce returned, checked by the caller)",
        ),
    ]
    for name, htu, spec in [
        ("htu-query-stripped", TOKEN_URL + "?foo=bar", "RFC 9449 §4.2, §4.3 step 9; threats.md B5"),
        ("htu-fragment-stripped", TOKEN_URL + "#frag", "RFC 9449 §4.2, §4.3 step 9; threats.md B5"),
        (
            "htu-default-port-uppercase-host",
            "https://AUTH.Example.COM:443/token",
            "RFC 9449 §4.3 step 9 (RFC 3986 §6.2.2, §6.2.3); threats.md B5",
        ),
        (
            "htu-uppercase-scheme",
            "HTTPS://auth.example.com/token",
            "RFC 9449 §4.3 step 9 (RFC 3986 §6.2.2.1); threats.md B5",
        ),
    ]:
        payload = dpop_payload(htu=htu)
        accepted.append((name, jws(dpop_header(), payload), {}, payload, spec))
    for name, iat, spec in [
        ("iat-at-max-age", NOW - MAX_AGE, "RFC 9449 §11.1; threats.md B7"),
        ("iat-at-max-future", NOW + MAX_FUTURE, "RFC 9449 §11.1; threats.md B7"),
    ]:
        payload = dpop_payload(iat=iat)
        accepted.append((name, jws(dpop_header(), payload), {}, payload, spec))
    largest = dpop_payload(iat=LARGEST_NUMBER)
    cases.append(
        case(
            "dpop/iat-largest-number",
            "verify_dpop_proof",
            "SPEC.md §3.2, §3.5; RFC 7493 §2.2",
            _verify_input(jws(dpop_header(), largest), now=LARGEST_NUMBER),
            output=_verified(largest),
            description="2^53 - 1 is the largest number accepted",
        )
    )
    fractional = dpop_payload(iat=NOW + 0.75)
    accepted.append(
        (
            "iat-fractional-floored",
            jws(dpop_header(), fractional),
            {},
            {**fractional, "iat": NOW},
            "RFC 7519 §2 (NumericDate may be non-integer)",
        )
    )
    jwk_with_extras = {**DEVICE_JWK, "kid": "device-1", "alg": "EdDSA", "use": "sig"}
    accepted.append(
        (
            "jwk-extra-members-same-jkt",
            jws(dpop_header(jwk=jwk_with_extras), base_payload),
            {},
            base_payload,
            "RFC 7638 §3.2; threats.md B2",
        )
    )
    for name, proof, overrides, payload, spec in accepted:
        cases.append(
            case(
                f"dpop/{name}",
                "verify_dpop_proof",
                spec,
                _verify_input(proof, **overrides),
                output=_verified(payload),
            )
        )

    hs256_header = dpop_header(alg="HS256")
    hs256_input = b64u(compact(hs256_header).encode()) + "." + b64u(compact(base_payload).encode())
    hs256_proof = (
        hs256_input
        + "."
        + b64u(hmac.new(unb64u(DEVICE_X), hs256_input.encode(), hashlib.sha256).digest())
    )
    small_order_jwk = _okp(bytes.fromhex(SMALL_ORDER_ED25519[0][1]))
    small_order_proof = replace_signature(
        jws(dpop_header(jwk=small_order_jwk), base_payload),
        bytes.fromhex(SMALL_ORDER_ED25519[0][1]) + bytes(32),
    )
    base_head, base_body, base_sig = base_proof.split(".")
    assert base_sig[-1] in "AQgw"
    noncanonical_sig = base_sig[:-1] + chr(ord(base_sig[-1]) + 1)
    assert unb64u(noncanonical_sig) == unb64u(base_sig)
    header_text = compact(dpop_header())
    duplicate_payload = (
        f'{{"jti":"jti-vector-0001","htm":"POST","htu":"{TOKEN_URL}","iat":{NOW},"htm":"GET"}}'
    )
    duplicate_header = (
        '{"typ":"dpop+jwt","alg":"none","alg":"EdDSA","jwk":' + compact(DEVICE_JWK) + "}"
    )
    long_proof = jws(dpop_header(), dpop_payload(pad="x" * 3000))
    assert len(long_proof) > 4096

    refused: list[tuple[str, str, dict[str, Any], str, str]] = [
        ("typ-jwt", jws(dpop_header(typ="JWT"), base_payload), {}, "RFC 9449 §4.3 step 4", ""),
        ("typ-missing", jws(dpop_header(typ=_DROP), base_payload), {}, "RFC 9449 §4.3 step 4", ""),
        (
            "typ-at-jwt",
            jws(dpop_header(typ="at+jwt"), base_payload),
            {},
            "RFC 9449 §11.5; threats.md A3",
            "an access-token type is not a proof",
        ),
        (
            "typ-application-dpop-jwt",
            jws(dpop_header(typ="application/dpop+jwt"), base_payload),
            {},
            "RFC 9449 §4.2, §4.3 step 4 (the value is exactly dpop+jwt)",
            "",
        ),
        (
            "alg-none",
            jws(dpop_header(alg="none"), base_payload, key=None),
            {},
            "RFC 9449 §4.3 step 5, §11.6; threats.md A1",
            "unsigned: empty signature segment",
        ),
        (
            "alg-hs256",
            hs256_proof,
            {},
            "RFC 9449 §4.3 step 5; threats.md A2, B4",
            "HMAC keyed with the jwk's x bytes",
        ),
        (
            "alg-es256-with-okp-key",
            jws(dpop_header(alg="ES256"), base_payload),
            {},
            "RFC 8037 §4; RFC 9449 §4.3 step 5",
            "",
        ),
        ("alg-number", jws(dpop_header(alg=1), base_payload), {}, "threats.md B4", ""),
        ("alg-missing", jws(dpop_header(alg=_DROP), base_payload), {}, "RFC 7515 §4.1.1", ""),
        (
            "jwk-private-d",
            jws(dpop_header(jwk=DEVICE_PRIVATE_JWK), base_payload),
            {},
            "RFC 9449 §4.2, §4.3 step 7; threats.md B4",
            "",
        ),
        (
            "jwk-missing",
            jws(dpop_header(jwk=_DROP), base_payload),
            {},
            "RFC 9449 §4.3 step 7; threats.md B4",
            "",
        ),
        ("jwk-null", jws(dpop_header(jwk=None), base_payload), {}, "threats.md B4", ""),
        ("jwk-empty-string", jws(dpop_header(jwk=""), base_payload), {}, "threats.md B4", ""),
        ("jwk-array", jws(dpop_header(jwk=[]), base_payload), {}, "threats.md B4", ""),
        (
            "jwk-oct",
            jws(dpop_header(jwk={"kty": "oct", "k": DEVICE_X}), base_payload),
            {},
            "threats.md B4",
            "",
        ),
        (
            "jwk-small-order-identity",
            small_order_proof,
            {},
            "threats.md A9",
            "identity key with signature R = identity, S = 0 (verifies under lax checks)",
        ),
        (
            "jwk-other-key",
            jws(dpop_header(jwk=SERVER_JWK), base_payload),
            {},
            "RFC 9449 §4.3 step 6",
            "signed by the A.1 key, header names another key",
        ),
        (
            "crit-header",
            jws(dpop_header(crit=["x-ext"], **{"x-ext": 1}), base_payload),
            {},
            "RFC 7515 §4.1.11; threats.md A6",
            "",
        ),
        (
            "jti-missing",
            jws(dpop_header(), dpop_payload(jti=_DROP)),
            {},
            "RFC 9449 §4.3 step 3",
            "",
        ),
        (
            "jti-too-long",
            jws(dpop_header(), dpop_payload(jti="j" * 257)),
            {},
            "RFC 9449 §11.1 (reject unnecessarily large jti)",
            "",
        ),
        (
            "htm-missing",
            jws(dpop_header(), dpop_payload(htm=_DROP)),
            {},
            "RFC 9449 §4.3 step 3",
            "",
        ),
        (
            "htu-missing",
            jws(dpop_header(), dpop_payload(htu=_DROP)),
            {},
            "RFC 9449 §4.3 step 3",
            "",
        ),
        (
            "iat-missing",
            jws(dpop_header(), dpop_payload(iat=_DROP)),
            {},
            "RFC 9449 §4.3 step 3",
            "",
        ),
        (
            "iat-string",
            jws(dpop_header(), dpop_payload(iat=str(NOW))),
            {},
            "RFC 7519 §2 (NumericDate is a number)",
            "",
        ),
        ("iat-boolean", jws(dpop_header(), dpop_payload(iat=True)), {}, "RFC 7519 §2", ""),
        (
            "nonce-number",
            jws(dpop_header(), dpop_payload(nonce=123)),
            {},
            "RFC 9449 §8.1; threats.md B4, B8",
            "",
        ),
        (
            "htm-mismatch",
            base_proof,
            {"method": "GET"},
            "RFC 9449 §4.3 step 8; threats.md B5",
            "",
        ),
        (
            "htm-lowercase",
            jws(dpop_header(), dpop_payload(htm="post")),
            {},
            "RFC 9449 §4.3 step 8 (methods are case-sensitive, RFC 9110 §9.1)",
            "",
        ),
        (
            "htu-other-host",
            jws(dpop_header(), dpop_payload(htu="https://evil.example.com/token")),
            {},
            "RFC 9449 §4.3 step 9; threats.md B5",
            "",
        ),
        (
            "htu-other-path",
            jws(dpop_header(), dpop_payload(htu="https://auth.example.com/login/complete")),
            {},
            "RFC 9449 §4.3 step 9; threats.md B5",
            "",
        ),
        (
            "htu-trailing-slash",
            jws(dpop_header(), dpop_payload(htu=TOKEN_URL + "/")),
            {},
            "RFC 9449 §4.3 step 9; threats.md B5",
            "",
        ),
        (
            "htu-http-scheme",
            jws(dpop_header(), dpop_payload(htu="http://auth.example.com/token")),
            {},
            "RFC 9449 §4.3 step 9; threats.md B5",
            "",
        ),
        (
            "htu-other-port",
            jws(dpop_header(), dpop_payload(htu="https://auth.example.com:8443/token")),
            {},
            "RFC 9449 §4.3 step 9; threats.md B5",
            "",
        ),
        (
            "htu-internal-url",
            jws(dpop_header(), dpop_payload(htu="http://127.0.0.1:8000/token")),
            {},
            "RFC 9449 §4.3 step 9; threats.md B5, E1",
            "",
        ),
        (
            "htu-not-a-url",
            jws(dpop_header(), dpop_payload(htu=":::*;")),
            {},
            "RFC 9449 §4.3 step 9; threats.md B5",
            "",
        ),
        (
            "iat-too-old",
            jws(dpop_header(), dpop_payload(iat=NOW - MAX_AGE - 1)),
            {},
            "RFC 9449 §4.3 step 11, §11.1; threats.md B7",
            "",
        ),
        (
            "iat-too-far-future",
            jws(dpop_header(), dpop_payload(iat=NOW + MAX_FUTURE + 1)),
            {},
            "RFC 9449 §4.3 step 11, §11.1; threats.md B7",
            "",
        ),
        (
            "ath-missing",
            jws(dpop_header(), dpop_payload(htm="GET", htu=API_URL)),
            api,
            "RFC 9449 §4.3 step 12; threats.md B3",
            "",
        ),
        (
            "ath-wrong-token",
            jws(dpop_header(), dpop_payload(htm="GET", htu=API_URL, ath=ath("another-token"))),
            api,
            "RFC 9449 §4.3 step 12; threats.md B3",
            "",
        ),
        (
            "ath-hex",
            jws(
                dpop_header(),
                dpop_payload(
                    htm="GET",
                    htu=API_URL,
                    ath=hashlib.sha256(API_ACCESS_TOKEN.encode()).hexdigest(),
                ),
            ),
            api,
            "RFC 9449 §4.2; threats.md B3",
            "hex instead of base64url",
        ),
        ("bad-signature", flip_bit(base_proof, 3), {}, "RFC 9449 §4.3 step 6", ""),
        (
            "two-segments",
            f"{base_head}.{base_body}",
            {},
            "RFC 9449 §4.3 step 2; threats.md A10",
            "",
        ),
        (
            "four-segments",
            base_proof + "." + base_sig,
            {},
            "RFC 9449 §4.3 step 2; threats.md A10",
            "",
        ),
        (
            "noncanonical-signature-segment",
            f"{base_head}.{base_body}.{noncanonical_sig}",
            {},
            "RFC 9449 §4.3 step 2; SPEC.md §3 (canonical base64url)",
            "same signature bytes, last character with non-zero unused bits",
        ),
        (
            "padded-signature-segment",
            base_proof + "==",
            {},
            "RFC 7515 §2, §7.1",
            "",
        ),
        (
            "duplicate-payload-member",
            jws(header_text, duplicate_payload),
            {"method": "GET"},
            "RFC 7515 §5.2 step 4; RFC 8259 §4; threats.md A10",
            "htm twice: POST then GET; a last-wins parser would accept it for GET",
        ),
        (
            "duplicate-header-member",
            jws(duplicate_header, base_payload),
            {},
            "RFC 7515 §5.2 step 4; threats.md A1, A10",
            "",
        ),
        *[
            (
                f"iat-{name}",
                jws(dpop_header(), with_literal(dpop_payload(), "iat", literal)),
                {},
                "SPEC.md §3.2 (numbers within ±(2^53 - 1)); RFC 7493 §2.2",
                "refused when the JSON is decoded, before any arithmetic",
            )
            for name, literal in OUT_OF_RANGE_NUMBERS
        ],
        (
            "header-member-ten-to-the-400",
            jws(with_literal(dpop_header(), "x", "1" + "0" * 400), base_payload),
            {},
            "SPEC.md §3.2 (every parsed number, known member or not); RFC 7493 §2.2",
            "",
        ),
        (
            "typ-other-case",
            jws(dpop_header(typ="DPoP+JWT"), base_payload),
            {},
            "RFC 9449 §4.2, §4.3 step 4 (the exact value, compared case-sensitively)",
            "",
        ),
        *[
            (
                f"htu-{name}",
                jws(dpop_header(), dpop_payload(htu=htu)),
                overrides,
                "RFC 3986 §2 (no controls or spaces in a URI); SPEC.md §4.1",
                description,
            )
            for name, htu, overrides, description in [
                ("tab", "https://auth.example.com/to\tken", {}, "urlsplit drops TAB"),
                ("crlf", "https://auth.example.com/to\r\nken", {}, "urlsplit drops CR and LF"),
                ("trailing-lf", TOKEN_URL + "\n", {}, "urlsplit drops LF"),
                ("leading-space", " " + TOKEN_URL, {}, "urlsplit strips leading spaces"),
                ("leading-nul", "\x00" + TOKEN_URL, {}, "urlsplit strips leading controls"),
                (
                    "tab-same-as-url",
                    TOKEN_URL + "\t",
                    {"url": TOKEN_URL + "\t"},
                    "refused even where the compared URL is the same string",
                ),
            ]
        ],
        ("header-not-object", jws("[]", base_payload), {}, "RFC 7515 §5.2 step 4", ""),
        ("payload-not-object", jws(header_text, "null"), {}, "RFC 7519 §7.2 step 10", ""),
        ("too-long", long_proof, {}, "threats.md A10", "longer than 4096 characters"),
        ("empty", "", {}, "RFC 9449 §4.3 step 2", ""),
    ]
    for name, proof, overrides, spec, description in refused:
        cases.append(
            case(
                f"dpop/{name}",
                "verify_dpop_proof",
                spec,
                _verify_input(proof, **overrides),
                error="invalid_dpop_proof",
                description=description or None,
            )
        )

    # -- Known answers for the proof builder (header and claim order is part of the answer). --
    for name, params, payload in [
        (
            "create-token-request",
            {"method": "POST", "url": TOKEN_URL, "iat": NOW, "jti": "jti-vector-0001"},
            base_payload,
        ),
        (
            "create-strips-query-and-fragment",
            {"method": "POST", "url": TOKEN_URL + "?a=1#b", "iat": NOW, "jti": "jti-vector-0001"},
            base_payload,
        ),
        (
            "create-with-ath-and-nonce",
            {
                "method": "GET",
                "url": API_URL,
                "iat": NOW,
                "jti": "jti-vector-0001",
                "access_token": API_ACCESS_TOKEN,
                "nonce": "server-nonce-0001",
            },
            {**ath_payload, "nonce": "server-nonce-0001"},
        ),
    ]:
        cases.append(
            case(
                f"dpop/{name}",
                "create_dpop_proof",
                "RFC 9449 §4.2",
                {"private_jwk": DEVICE_PRIVATE_JWK, "access_token": None, "nonce": None, **params},
                output={"proof": jws(dpop_header(), payload)},
            )
        )

    for name, url, expected in [
        (
            "lowercase-scheme-and-host",
            "HTTPS://Auth.Example.COM/Token",
            "https://auth.example.com/Token",
        ),
        ("drop-https-default-port", "https://auth.example.com:443/token", TOKEN_URL),
        (
            "drop-http-default-port",
            "http://auth.example.com:80/token",
            "http://auth.example.com/token",
        ),
        (
            "keep-other-port",
            "https://auth.example.com:8443/token",
            "https://auth.example.com:8443/token",
        ),
        ("drop-query-and-fragment", TOKEN_URL + "?a=1&b=2#frag", TOKEN_URL),
        ("empty-path-is-slash", "https://auth.example.com", "https://auth.example.com/"),
        ("ipv6-host", "https://[2001:DB8::1]:443/token", "https://[2001:db8::1]/token"),
    ]:
        cases.append(
            case(
                f"dpop/htu-normalize-{name}",
                "normalize_htu",
                "RFC 9449 §4.3 step 9; RFC 3986 §6.2.2, §6.2.3",
                {"url": url},
                output={"htu": expected},
            )
        )
    for name, url in [
        ("userinfo", "https://user:pass@auth.example.com/token"),
        ("ftp-scheme", "ftp://auth.example.com/token"),
        ("relative", "/token"),
        ("no-host", "https:///token"),
        ("bad-port", "https://auth.example.com:99999/token"),
        ("tab", "https://auth.example.com/to\tken"),
        ("crlf", "https://auth.example.com/to\r\nken"),
        ("trailing-lf", TOKEN_URL + "\n"),
        ("leading-space", " " + TOKEN_URL),
        ("leading-nul", "\x00" + TOKEN_URL),
        ("no-break-space", "https://auth.example.com/to\u00a0ken"),
    ]:
        cases.append(
            case(
                f"dpop/htu-normalize-{name}-refused",
                "normalize_htu",
                "RFC 9449 §4.2 (htu is an HTTP URI); threats.md B5",
                {"url": url},
                error="invalid_request",
            )
        )
    return cases


# ---------------------------------------------------------------------------------------------
# access_token.json


def at_header(**overrides: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"typ": "at+jwt", "alg": "EdDSA", "kid": SERVER_KID}
    for name, value in overrides.items():
        if value is _DROP:
            header.pop(name, None)
        else:
            header[name] = value
    return header


def at_claims(**overrides: Any) -> dict[str, Any]:
    claims = dict(AT_CLAIMS)
    for name, value in overrides.items():
        if value is _DROP:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def access_token_cases() -> list[dict[str, Any]]:
    token = jws(at_header(), at_claims(), key=SERVER_KEY)
    keys = {SERVER_KID: SERVER_JWK}

    def verify_input(token_: str, **overrides: Any) -> dict[str, Any]:
        result: dict[str, Any] = {
            "token": token_,
            "keys": keys,
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "now": AT_IAT,
            "leeway": 0,
        }
        result.update(overrides)
        return result

    exp = AT_IAT + AT_LIFETIME
    cases = [
        case(
            "access_token/issue",
            "issue_access_token",
            "RFC 9068 §2; RFC 9449 §6.1; SPEC.md §6.3",
            {
                "private_jwk": SERVER_PRIVATE_JWK,
                "kid": SERVER_KID,
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "subject": AT_CLAIMS["sub"],
                "client_id": AT_CLAIMS["client_id"],
                "session_id": AT_CLAIMS["sid"],
                "jkt": DEVICE_JKT,
                "jti": AT_CLAIMS["jti"],
                "issued_at": AT_IAT,
                "lifetime": AT_LIFETIME,
                "auth_time": AT_CLAIMS["auth_time"],
            },
            output={"token": token},
            description="header and claim order are part of the known answer",
        )
    ]
    accepted: list[tuple[str, dict[str, Any], str]] = [
        ("valid-at-iat", verify_input(token), "RFC 9068 §4"),
        ("valid-one-second-before-exp", verify_input(token, now=exp - 1), "RFC 7519 §4.1.4"),
        ("valid-at-exp-within-leeway", verify_input(token, now=exp, leeway=5), "RFC 7519 §4.1.4"),
        (
            "valid-typ-application-at-jwt",
            verify_input(jws(at_header(typ="application/at+jwt"), at_claims(), key=SERVER_KEY)),
            "RFC 9068 §4 step 3",
        ),
        (
            "valid-aud-array",
            verify_input(
                jws(at_header(), at_claims(aud=["https://other.example", AUDIENCE]), key=SERVER_KEY)
            ),
            "RFC 7519 §4.1.3",
        ),
        (
            "valid-ignores-header-jwk",
            verify_input(jws(at_header(jwk=DEVICE_JWK), at_claims(), key=SERVER_KEY)),
            "threats.md A5 (only the server's keys verify)",
        ),
    ]
    for name, input_, spec in accepted:
        cases.append(
            case(f"access_token/{name}", "verify_access_token", spec, input_, output=AT_OUTPUT)
        )
    hs256_input = (
        b64u(compact(at_header(alg="HS256")).encode()) + "." + b64u(compact(at_claims()).encode())
    )
    hs256 = (
        hs256_input
        + "."
        + b64u(hmac.new(unb64u(SERVER_JWK["x"]), hs256_input.encode(), hashlib.sha256).digest())
    )
    dpop_proof = jws(dpop_header(), dpop_payload())
    refused: list[tuple[str, dict[str, Any], str, str]] = [
        ("expired-at-exp", verify_input(token, now=exp), "RFC 7519 §4.1.4; RFC 9068 §4", ""),
        ("expired-after-leeway", verify_input(token, now=exp + 5, leeway=5), "RFC 7519 §4.1.4", ""),
        ("iat-in-future", verify_input(token, now=AT_IAT - 1), "RFC 9068 §4; threats.md A7", ""),
        ("wrong-iss", verify_input(token, issuer="https://other.example.com"), "RFC 9068 §4", ""),
        (
            "iss-prefix-of-expected",
            verify_input(jws(at_header(), at_claims(iss="https"), key=SERVER_KEY)),
            "threats.md A7 (CVE-2024-53861)",
            "",
        ),
        (
            "iss-trailing-slash",
            verify_input(jws(at_header(), at_claims(iss=ISSUER + "/"), key=SERVER_KEY)),
            "threats.md A7",
            "",
        ),
        ("wrong-aud", verify_input(token, audience="https://other.example.com"), "RFC 9068 §4", ""),
        (
            "aud-array-without-audience",
            verify_input(jws(at_header(), at_claims(aud=["https://x.example"]), key=SERVER_KEY)),
            "RFC 7519 §4.1.3",
            "",
        ),
        *[
            (
                f"{claim}-{name}",
                verify_input(
                    jws(at_header(), with_literal(at_claims(), claim, literal), SERVER_KEY)
                ),
                "SPEC.md §3.2 (numbers within ±(2^53 - 1)); RFC 7493 §2.2",
                "signed by the server's key, and still refused when the JSON is decoded",
            )
            for claim, name, literal in [
                ("exp", *OUT_OF_RANGE_NUMBERS[0]),
                ("exp", *OUT_OF_RANGE_NUMBERS[3]),
                ("iat", *OUT_OF_RANGE_NUMBERS[1]),
                ("auth_time", *OUT_OF_RANGE_NUMBERS[2]),
            ]
        ],
        (
            "typ-jwt",
            verify_input(jws(at_header(typ="JWT"), at_claims(), key=SERVER_KEY)),
            "RFC 9068 §4 step 3; threats.md A3",
            "",
        ),
        (
            "typ-missing",
            verify_input(jws(at_header(typ=_DROP), at_claims(), key=SERVER_KEY)),
            "RFC 9068 §4 step 3",
            "",
        ),
        (
            "dpop-proof-as-access-token",
            verify_input(dpop_proof, keys={SERVER_KID: SERVER_JWK, "device": DEVICE_JWK}),
            "RFC 9449 §11.5; threats.md A3",
            "",
        ),
        (
            "unknown-kid",
            verify_input(jws(at_header(kid="k2"), at_claims(), key=SERVER_KEY)),
            "RFC 9068 §4; threats.md A4",
            "",
        ),
        (
            "kid-missing",
            verify_input(jws(at_header(kid=_DROP), at_claims(), key=SERVER_KEY)),
            "RFC 9068 §4",
            "",
        ),
        (
            "kid-not-a-string",
            verify_input(jws(at_header(kid={"$ne": None}), at_claims(), key=SERVER_KEY)),
            "threats.md A4",
            "",
        ),
        (
            "kid-path-traversal",
            verify_input(jws(at_header(kid="../../../../dev/null"), at_claims(), key=SERVER_KEY)),
            "threats.md A4",
            "",
        ),
        (
            "alg-mismatch-es256",
            verify_input(jws(at_header(alg="ES256"), at_claims(), key=SERVER_KEY)),
            "RFC 8725 §3.1; RFC 8037 §4",
            "header alg does not belong to the key named by kid",
        ),
        ("alg-hs256-public-key-secret", verify_input(hs256), "threats.md A2", ""),
        (
            "alg-none",
            verify_input(jws(at_header(alg="none"), at_claims(), key=None)),
            "threats.md A1",
            "",
        ),
        ("bad-signature", verify_input(flip_bit(token, 7)), "RFC 9068 §4", ""),
        (
            "signed-by-other-key",
            verify_input(jws(at_header(), at_claims(), key=DEVICE_KEY)),
            "RFC 9068 §4; threats.md A5",
            "",
        ),
        (
            "crit-header",
            verify_input(jws(at_header(crit=["x-ext"]), at_claims(), key=SERVER_KEY)),
            "RFC 7515 §4.1.11; threats.md A6",
            "",
        ),
        (
            "cnf-missing",
            verify_input(jws(at_header(), at_claims(cnf=_DROP), key=SERVER_KEY)),
            "RFC 9449 §6.1",
            "",
        ),
        (
            "cnf-jkt-missing",
            verify_input(jws(at_header(), at_claims(cnf={}), key=SERVER_KEY)),
            "RFC 9449 §6.1",
            "",
        ),
        (
            "cnf-not-object",
            verify_input(jws(at_header(), at_claims(cnf=DEVICE_JKT), key=SERVER_KEY)),
            "RFC 9449 §6.1",
            "",
        ),
        (
            "exp-missing",
            verify_input(jws(at_header(), at_claims(exp=_DROP), key=SERVER_KEY)),
            "RFC 9068 §2.2; threats.md A7",
            "",
        ),
        (
            "exp-string",
            verify_input(jws(at_header(), at_claims(exp=str(exp)), key=SERVER_KEY)),
            "RFC 7519 §2 (NumericDate is a number)",
            "",
        ),
        (
            "sub-missing",
            verify_input(jws(at_header(), at_claims(sub=_DROP), key=SERVER_KEY)),
            "RFC 9068 §2.2",
            "",
        ),
        ("two-segments", verify_input(token.rsplit(".", 1)[0]), "RFC 7515 §7.1", ""),
    ]
    for name, input_, spec, description in refused:
        cases.append(
            case(
                f"access_token/{name}",
                "verify_access_token",
                spec,
                input_,
                error="invalid_token",
                description=description or None,
            )
        )
    return cases


# ---------------------------------------------------------------------------------------------
# email.json


def email_cases() -> list[dict[str, Any]]:
    long_domain = "a" * 63 + "." + "b" * 63 + "." + "c" * 57 + ".com"
    assert len(long_domain) == 189
    local_64 = "l" * 64
    assert len(f"{local_64}@{long_domain}") == 254
    idn_long = ".".join(["\u00fc" * 57] * 3) + ".de"
    idn_long_input = f"{local_64}@{idn_long}"
    assert len(idn_long_input) <= 254
    accepted: list[tuple[str, str, str, str, str]] = [
        ("plain", "alice@example.org", "alice@example.org", "alice@example.org", "SPEC.md §5.1"),
        (
            "mixed-case",
            "Alice.Smith@Example.ORG",
            "Alice.Smith@example.org",
            "alice.smith@example.org",
            "SPEC.md §5.1 (canonical = lowercase); threats.md D2",
        ),
        (
            "idn-u-label-mixed-case",
            "Mike@M\u00fcnchen.DE",
            "Mike@xn--mnchen-3ya.de",
            "mike@xn--mnchen-3ya.de",
            "threats.md D1, D9",
        ),
        (
            "idn-u-label",
            "user@m\u00fcnchen.de",
            "user@xn--mnchen-3ya.de",
            "user@xn--mnchen-3ya.de",
            "threats.md D9 (same account as the A-label spelling)",
        ),
        (
            "idn-a-label",
            "user@xn--mnchen-3ya.de",
            "user@xn--mnchen-3ya.de",
            "user@xn--mnchen-3ya.de",
            "threats.md D9",
        ),
        (
            "cyrillic-a-domain-distinct",
            "mike@ex\u0430mple.org",
            "mike@xn--exmple-4nf.org",
            "mike@xn--exmple-4nf.org",
            "threats.md D9 (a confusable domain stays a different account)",
        ),
        (
            "sharp-s-domain-nontransitional",
            "a@stra\u00dfe.de",
            "a@xn--strae-oqa.de",
            "a@xn--strae-oqa.de",
            "UTS #46 nontransitional (IDNA 2008): not strasse.de",
        ),
        (
            "fullwidth-domain-letter-mapped",
            "mike@\uff45xample.org",
            "mike@example.org",
            "mike@example.org",
            "threats.md D3 (mapped, then validated; mail goes to the validated form)",
        ),
        (
            "ideographic-full-stop-mapped",
            "a@example\u3002org",
            "a@example.org",
            "a@example.org",
            "UTS #46 §4 (label separators); threats.md D3",
        ),
        (
            "atext-specials",
            "!#$%&'*+/=?^_`{|}~-@example.org",
            "!#$%&'*+/=?^_`{|}~-@example.org",
            "!#$%&'*+/=?^_`{|}~-@example.org",
            "RFC 5322 §3.2.3 (atext)",
        ),
        (
            "plus-tag-and-dots",
            "first.last+tag@mail-1.example.co.uk",
            "first.last+tag@mail-1.example.co.uk",
            "first.last+tag@mail-1.example.co.uk",
            "RFC 5322 §3.4.1 (dot-atom)",
        ),
        (
            "equals-question-without-closing",
            "a=?b@example.org",
            "a=?b@example.org",
            "a=?b@example.org",
            "SPEC.md §5.1 (no ?= after the =?: no encoded-word)",
        ),
        (
            "closing-before-opening",
            "a?=b=?c@example.org",
            "a?=b=?c@example.org",
            "a?=b=?c@example.org",
            "SPEC.md §5.1 (no ?= after the =?: no encoded-word)",
        ),
        (
            "local-part-64",
            f"{local_64}@example.org",
            f"{local_64}@example.org",
            f"{local_64}@example.org",
            "RFC 5321 §4.5.3.1.1",
        ),
        (
            "length-254",
            f"{local_64}@{long_domain}",
            f"{local_64}@{long_domain}",
            f"{local_64}@{long_domain}",
            "RFC 5321 §4.5.3.1.3; threats.md D5",
        ),
    ]
    cases = [
        case(
            f"email/{name}",
            "parse_email_address",
            spec,
            {"email": value},
            output={"address": address, "canonical": canonical},
        )
        for name, value, address, canonical, spec in accepted
    ]
    refused: list[tuple[str, Any, str]] = [
        ("dotless-i", "m\u0131ke@example.org", "threats.md D1"),
        ("kelvin-sign", "\u212aate@example.org", "threats.md D1"),
        ("long-s", "\u017fam@example.org", "threats.md D1"),
        ("non-ascii-local", "jos\u00e9@example.org", "SPEC.md §5.1 (ASCII local part)"),
        ("fullwidth-at", "mike\uff20example.org", "threats.md D3"),
        ("fullwidth-m-local", "\uff4dike@example.org", "threats.md D3"),
        ("fullwidth-at-in-domain", "a@b\uff20c.example", "threats.md D3, D5"),
        ("crlf-bcc", "mike@example.org\r\nBcc: evil@attacker.example", "threats.md D6"),
        ("crlf-bcc-kratos-seed", "foo@ory.sh\r\nBcc: evil@x", "threats.md D6"),
        ("cr-in-local", "mi\rke@example.org", "threats.md D6"),
        ("trailing-newline", "mike@example.org\n", "threats.md D6"),
        ("nul", "mike\x00@example.org", "threats.md D8"),
        ("rlo-local", "mike\u202e@example.org", "threats.md D8"),
        ("rlo-domain", "mike@exa\u202emple.org", "threats.md D8"),
        ("zero-width-joiner-domain", "mike@exa\u200dmple.org", "threats.md D3, D8"),
        ("no-break-space", "mike\u00a0@example.org", "threats.md D5"),
        ("tab", "mike\t@example.org", "threats.md D5"),
        ("leading-space", " mike@example.org", "threats.md D5"),
        ("two-addresses-comma", "v@x.example,a@y.example", "threats.md D4"),
        ("two-addresses-semicolon", "v@x.example;a@y.example", "threats.md D4"),
        ("two-addresses-newline", "v@x.example\na@y.example", "threats.md D4"),
        ("two-addresses-display-name", "V <v@x.example>, a@y.example", "threats.md D4"),
        ("array-of-addresses", ["v@x.example", "a@y.example"], "threats.md D4 (CVE-2023-7028)"),
        ("number", 42, "SPEC.md §5.1"),
        ("null", None, "SPEC.md §5.1"),
        ("display-name", "V <v@x.example>", "threats.md D4, D5"),
        ("angle-brackets", "<v@x.example>", "threats.md D5"),
        ("quoted-local", '"john"@example.org', "SPEC.md §5.1 (dot-atom only); threats.md D5"),
        ("quoted-local-space", '"john doe"@example.org', "threats.md D5"),
        (
            "quoted-at-in-local",
            '"e@attacker.com"@victim.com',
            "threats.md D5 (GHSA-5jpx-9hw9-2fx4)",
        ),
        (
            "comment-address",
            "alice@example.org(<bob@example.org>",
            "threats.md D5 (CVE-2023-27043)",
        ),
        ("comment-local", "alice(comment)@example.org", "threats.md D5"),
        ("backslash-local", "a\\b@example.org", "threats.md D5"),
        ("address-literal", "alice@[127.0.0.1]", "SPEC.md §5.1 (domain names only)"),
        ("numeric-domain", "alice@127.0.0.1", "SPEC.md §5.1; RFC 3696 §2 (no all-numeric TLD)"),
        ("two-at", "a@b@example.org", "threats.md D5 (CVE-2019-16056)"),
        ("no-at", "alice.example.org", "threats.md D5"),
        ("length-255", f"{local_64}@{long_domain}x", "RFC 5321 §4.5.3.1.3; threats.md D8"),
        ("length-300", "a" * 64 + "@" + "b" * 231 + ".com", "threats.md D8"),
        (
            "idn-exceeds-254-after-a-label",
            idn_long_input,
            "RFC 5321 §4.5.3.1.3 (checked on A-labels)",
        ),
        ("local-part-65", "l" * 65 + "@example.org", "RFC 5321 §4.5.3.1.1"),
        ("leading-dot", ".alice@example.org", "RFC 5322 §3.4.1 (dot-atom)"),
        ("trailing-dot", "alice.@example.org", "RFC 5322 §3.4.1 (dot-atom)"),
        ("double-dot", "al..ice@example.org", "RFC 5322 §3.4.1 (dot-atom)"),
        ("no-dot-in-domain", "alice@localhost", "SPEC.md §5.1"),
        ("empty-local", "@example.org", "threats.md D5"),
        ("empty-domain", "alice@", "threats.md D5"),
        ("empty", "", "threats.md D5"),
        ("domain-trailing-dot", "alice@example.org.", "SPEC.md §5.1"),
        ("domain-double-dot", "alice@example..org", "RFC 1035 §2.3.1"),
        ("domain-leading-hyphen", "alice@-example.org", "RFC 5891 §4.2.3.1; RFC 1035 §2.3.1"),
        ("domain-underscore", "alice@ex_ample.org", "RFC 1035 §2.3.1 (LDH)"),
        ("domain-label-64", "alice@" + "a" * 64 + ".org", "RFC 1035 §2.3.4"),
        ("domain-space", "alice@exa mple.org", "threats.md D5"),
        ("encoded-word-q", "=?utf-8?q?victim?=@example.org", "RFC 2047 §5; SPEC.md §5.1"),
        ("encoded-word-b", "=?UTF-8?B?dmljdGlt?=@example.org", "RFC 2047 §5; SPEC.md §5.1"),
        ("encoded-word-mixed-case", "=?uTf-8?Q?victim?=@example.org", "RFC 2047 §5"),
        ("encoded-word-with-language", "=?utf-8*en?q?victim?=@example.org", "RFC 2231 §5"),
        (
            "encoded-word-decoding-to-an-address",
            "=?x?q?e=40attacker.example=3e=00?=@victim.example",
            "RFC 2047 §5; SPEC.md §5.1 (decodes to e@attacker.example>, then NUL)",
        ),
        ("encoded-word-inside", "pre.=?utf-8?q?x?=.post@example.org", "SPEC.md §5.1"),
        ("encoded-word-empty-parts", "=??=@example.org", "SPEC.md §5.1 (any =? then ?=)"),
        ("encoded-word-quoted", '"=?utf-8?q?victim?="@example.org', "SPEC.md §5.1"),
    ]
    for name, value, spec in refused:
        cases.append(
            case(
                f"email/{name}",
                "parse_email_address",
                spec,
                {"email": value},
                error="invalid_email",
            )
        )
    return cases


# ---------------------------------------------------------------------------------------------
# login_link.json


def login_link_cases() -> list[dict[str, Any]]:
    fragment = f"attempt_id={ATTEMPT_ID}&email_half={EMAIL_HALF}"
    link = f"https://auth.example.com/l#{fragment}"
    ok = {"attempt_id": ATTEMPT_ID, "email_half": EMAIL_HALF}
    cases = [
        case(
            "login_link/build",
            "build_login_link",
            "SPEC.md §5.4",
            {"public_url": "https://auth.example.com", **ok},
            output={"link": link},
        ),
        case(
            "login_link/build-strips-trailing-slash",
            "build_login_link",
            "SPEC.md §5.4",
            {"public_url": "https://auth.example.com/", **ok},
            output={"link": link},
        ),
        case(
            "login_link/build-under-path-prefix",
            "build_login_link",
            "SPEC.md §5.4",
            {"public_url": "https://example.com/auth/", **ok},
            output={"link": f"https://example.com/auth/l#{fragment}"},
        ),
    ]
    accepted = [
        ("parse-round-trip", link, "SPEC.md §5.4"),
        (
            "parse-members-reordered",
            f"https://auth.example.com/l#email_half={EMAIL_HALF}&attempt_id={ATTEMPT_ID}",
            "SPEC.md §5.4",
        ),
        (
            "parse-ignores-query",
            f"https://auth.example.com/l?utm_source=mail#{fragment}",
            "SPEC.md §5.4 (only the fragment is read; mail trackers add queries)",
        ),
        ("parse-surrounding-whitespace", f"  {link}\n", "SPEC.md §5.4 (pasted links)"),
        (
            "parse-ignores-extra-names",
            f"https://auth.example.com/l#{fragment}&v=2&utm_source=",
            "SPEC.md §5.4 (names other than attempt_id and email_half are ignored)",
        ),
        (
            "parse-ignores-extra-name-first",
            f"https://auth.example.com/l#lang=en&{fragment}",
            "SPEC.md §5.4 (names other than attempt_id and email_half are ignored)",
        ),
    ]
    for name, value, spec in accepted:
        cases.append(
            case(f"login_link/{name}", "parse_login_link", spec, {"link": value}, output=ok)
        )
    short_half = b64u(bytes(31))
    refused = [
        (
            "half-in-query-fails",
            f"https://auth.example.com/l?{fragment}",
            "SPEC.md §5.4 (the half travels in the fragment, never to a server)",
        ),
        (
            "half-in-query-attempt-in-fragment-fails",
            f"https://auth.example.com/l?email_half={EMAIL_HALF}#attempt_id={ATTEMPT_ID}",
            "SPEC.md §5.4",
        ),
        (
            "repeated-attempt-id-fails",
            f"https://auth.example.com/l#{fragment}&attempt_id={ATTEMPT_ID}",
            "SPEC.md §5.4 (one value per member)",
        ),
        (
            "repeated-email-half-fails",
            f"https://auth.example.com/l#{fragment}&email_half={EMAIL_HALF}",
            "SPEC.md §5.4 (one value per member)",
        ),
        (
            "repeated-extra-name-fails",
            f"https://auth.example.com/l#{fragment}&v=2&v=2",
            "SPEC.md §5.4 (no name may repeat, known or not)",
        ),
        (
            "missing-email-half-fails",
            f"https://auth.example.com/l#attempt_id={ATTEMPT_ID}",
            "SPEC.md §5.4",
        ),
        (
            "missing-attempt-id-fails",
            f"https://auth.example.com/l#email_half={EMAIL_HALF}",
            "SPEC.md §5.4",
        ),
        ("no-fragment-fails", "https://auth.example.com/l", "SPEC.md §5.4"),
        ("fragment-not-pairs-fails", "https://auth.example.com/l#garbage", "SPEC.md §5.4"),
        (
            "short-half-fails",
            f"https://auth.example.com/l#attempt_id={ATTEMPT_ID}&email_half={short_half}",
            "SPEC.md §5.3 (a half is 32 bytes)",
        ),
        (
            "padded-half-fails",
            f"https://auth.example.com/l#attempt_id={ATTEMPT_ID}&email_half={EMAIL_HALF}=",
            "SPEC.md §3 (canonical base64url)",
        ),
        (
            "long-attempt-id-fails",
            f"https://auth.example.com/l#attempt_id={b64u(bytes(17))}&email_half={EMAIL_HALF}",
            "SPEC.md §5.3 (an attempt id is 16 bytes)",
        ),
    ]
    for name, value, spec in refused:
        cases.append(
            case(
                f"login_link/{name}",
                "parse_login_link",
                spec,
                {"link": value},
                error="invalid_request",
            )
        )
    return cases


# ---------------------------------------------------------------------------------------------
# check_phrase.json

# An independent copy of the word list (protocol/check_phrase.py): the vector pins it, so a
# client in another language can check its own copy against the same file.
CHECK_PHRASE_WORDS = """
acorn anchor apple apron arrow attic autumn badge bagel bamboo banjo basket beach beacon beaver
bell berry bison boat book bottle bread brick bridge brook broom brush bucket butter button
cabin cactus camel camera candle canoe canyon carpet castle cedar chair chalk cherry chess
circus cliff clock cloud clover coast cocoa coffee comet cookie copper coral cotton crane crayon
crown daisy desert donkey dragon drum duck dune eagle easel echo elm ember engine falcon fern
fiddle field fig finch flag flute forest fossil fox frog galaxy garden garlic gecko ginger globe
goat grape gravel guitar hammer harbor harp hazel hedge helmet heron hill honey horse igloo
island ivory ivy jacket jade jaguar jam jelly jigsaw jungle kayak kettle kite kiwi koala ladder
lagoon lake lamp lemon lentil lily lime lion lizard llama locket lotus magnet mango maple marble
meadow melon mint mirror mitten monkey moon mosaic moss muffin napkin needle nest nickel noodle
nutmeg oak oasis ocean olive onion orange orbit orchid otter owl paddle panda paper parrot pasta
peach peanut pearl pebble pencil piano pickle pigeon pillow pine planet plum pocket pony poppy
potato puppet quail quartz quilt rabbit radish raisin raven reef ribbon river robin rocket ruby
saddle salmon sandal scarf seal shell silver sketch sled snail spoon spruce squid stamp star
stone straw sugar summit swan table taco teapot tiger timber tomato topaz torch towel tower
tulip tuna tunnel turnip turtle twig valley vase velvet violin waffle wagon walnut walrus wand
wave whale wheat willow window wolf yacht yak yarn yogurt zebra zipper
""".split()  # noqa: SIM905 (256 words read better as text)
CHECK_PHRASE_CONTEXT = b"splitlink/v1/check-phrase:"


def expected_check_phrase(jkt: str) -> str:
    digest = hashlib.sha256(CHECK_PHRASE_CONTEXT + jkt.encode("ascii")).digest()
    return " ".join(CHECK_PHRASE_WORDS[b] for b in digest[:4])


def check_phrase_words_cases() -> list[dict[str, Any]]:
    assert len(CHECK_PHRASE_WORDS) == len(set(CHECK_PHRASE_WORDS)) == 256
    assert sorted(CHECK_PHRASE_WORDS) == CHECK_PHRASE_WORDS
    return [
        case(
            "check_phrase_words/list",
            "check_phrase_words",
            "SPEC.md §7.5",
            {},
            output={"count": len(CHECK_PHRASE_WORDS), "words": CHECK_PHRASE_WORDS},
            description=(
                "A digest byte of value b (0 to 255) selects words[b], the list counted from 0: "
                "0 is acorn, 255 is zipper."
            ),
        )
    ]


def check_phrase_cases() -> list[dict[str, Any]]:
    spec = "SPEC.md §7.5"
    cases = []
    for name, jkt in [
        ("rfc8037-a1-key", DEVICE_JKT),
        ("rfc9449-example-key", RFC9449_JKT),
        ("all-zero-thumbprint", b64u(bytes(32))),
        ("all-ones-thumbprint", b64u(b"\xff" * 32)),
        ("counting-thumbprint", b64u(bytes(range(32)))),
    ]:
        cases.append(
            case(
                f"check_phrase/{name}",
                "check_phrase",
                spec,
                {"jkt": jkt},
                output={"phrase": expected_check_phrase(jkt)},
            )
        )
    refused = [
        ("padded", DEVICE_JKT + "="),
        ("too-short", DEVICE_JKT[:-1]),
        ("too-long", DEVICE_JKT + "AAAA"),
        ("standard-alphabet", "+" + DEVICE_JKT[1:]),
        ("non-canonical-last-character", DEVICE_JKT[:-1] + "l"),
        ("surrounding-space", " " + DEVICE_JKT),
        ("not-a-string", 42),
        ("null", None),
    ]
    for name, value in refused:
        cases.append(
            case(
                f"check_phrase/refuses-{name}",
                "check_phrase",
                spec,
                {"jkt": value},
                error="invalid_request",
            )
        )
    return cases


# ---------------------------------------------------------------------------------------------

FILES = {
    "base64url.json": (
        "Strict unpadded base64url (RFC 7515 §2, SPEC.md §3): one spelling per byte string.",
        base64url_cases,
    ),
    "jwk.json": (
        "Device public keys (SPEC.md §4.2): EC P-256/ES256 and OKP Ed25519/EdDSA only, with RFC "
        "7638 thumbprints. Refused keys raise InvalidKey, whose code is invalid_dpop_proof.",
        jwk_cases,
    ),
    "eddsa.json": ("Ed25519 JWS signing and verification (RFC 8037 Appendix A).", eddsa_cases),
    "dpop.json": (
        "DPoP proofs (RFC 9449): the RFC's three examples and proofs signed with the RFC 8037 A.1 "
        "key; htu normalization; the proof builder's known answers.",
        dpop_cases,
    ),
    "access_token.json": (
        "RFC 9068 access tokens signed with the RFC 8032 TEST 2 key as kid k1, bound by cnf.jkt "
        "to the RFC 8037 A.1 device key.",
        access_token_cases,
    ),
    "email.json": (
        "Email addresses (SPEC.md §5.1, threats.md D1-D9): address is where mail goes, "
        "canonical keys the account.",
        email_cases,
    ),
    "login_link.json": (
        "The emailed login link (SPEC.md §5.4): attempt id and email half in the fragment.",
        login_link_cases,
    ),
    "check_phrase.json": (
        "The check phrase (SPEC.md §7.5): four words from a device key's JWK thumbprint, shown "
        "by the app and in the login mail.",
        check_phrase_cases,
    ),
    "check_phrase_words.json": (
        "The check phrase's word list (SPEC.md §7.5): 256 lower-case English words in "
        "alphabetical order; a digest byte's value is its word's index.",
        check_phrase_words_cases,
    ),
}


def render(name: str) -> str:
    description, build = FILES[name]
    cases = build()
    ids = [c["id"] for c in cases]
    assert len(ids) == len(set(ids)), f"duplicate ids in {name}"
    document = {"description": description, "generated_by": "tests/vectors/generate.py"}
    document["cases"] = cases  # type: ignore[assignment]
    # ASCII-only files, so confusables and invisible characters (U+202E, U+200D, Kelvin sign,
    # full-width letters) stay visible as JSON escapes; only the section sign is written as itself.
    text = json.dumps(document, indent=2, ensure_ascii=True)
    assert "\\\\u00a7" not in text
    return text.replace("\\u00a7", "\u00a7") + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    stale = []
    for name in FILES:
        path = HERE / name
        text = render(name)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print("out of date:", " ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
