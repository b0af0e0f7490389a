"""Run every case of every shared vector file in tests/vectors/ against `protocol`.

The files are language-neutral (tests/vectors/README.md); this module is the Python runner. It
fails on a file, a case type or a case shape it does not know, so a vector cannot be skipped
silently. The vectors are only read here, never regenerated.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from protocol import (
    ErrorCode,
    SigningKey,
    SplitlinkError,
    access_token_hash,
    b64url_decode,
    b64url_encode,
    build_login_link,
    create_dpop_proof,
    issue_access_token,
    jwk_thumbprint,
    normalize_htu,
    parse_email_address,
    parse_login_link,
    parse_public_jwk,
    verify_access_token,
    verify_dpop_proof,
)
from protocol.check_phrase import WORDS, check_phrase
from protocol.encoding import canonical_json

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
NON_VECTOR_FILES = frozenset({"README.md", "generate.py"})
CASE_KEYS = frozenset({"id", "type", "spec", "description", "input", "output", "error"})

# Vectors that state the intended behaviour where protocol/ currently deviates. Each entry is a
# strict xfail: once protocol/ is fixed the case passes, the xfail turns red, and the entry goes.
KNOWN_PROTOCOL_BUGS: dict[str, str] = {}

Runner = Callable[[dict[str, Any]], dict[str, Any]]

# RFC 7638 §3.2 required members per key type (thumbprint-only cases include RSA).
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "oct": ("k", "kty"),
    "OKP": ("crv", "kty", "x"),
}


def _b64url_encode(i: dict[str, Any]) -> dict[str, Any]:
    return {"text": b64url_encode(bytes.fromhex(i["hex"]))}


def _b64url_decode(i: dict[str, Any]) -> dict[str, Any]:
    return {"hex": b64url_decode(i["text"]).hex()}


def _jwk_thumbprint(i: dict[str, Any]) -> dict[str, Any]:
    jwk = i["jwk"]
    required = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    return {
        "thumbprint_input": canonical_json(required).decode("utf-8"),
        "thumbprint": jwk_thumbprint(required),
    }


def _parse_public_jwk(i: dict[str, Any]) -> dict[str, Any]:
    key = parse_public_jwk(i["jwk"], alg=i.get("alg"))
    return {"alg": key.alg, "jwk": dict(key.jwk), "thumbprint": key.thumbprint}


def _ed25519_public_key(i: dict[str, Any]) -> dict[str, Any]:
    key = SigningKey.from_private_bytes("EdDSA", b64url_decode(i["d"]))
    return {"x": key.public.jwk["x"]}


def _eddsa_sign(i: dict[str, Any]) -> dict[str, Any]:
    key = SigningKey.from_private_jwk(i["private_jwk"])
    signing_input = i["signing_input"]
    signature = b64url_encode(key.sign(signing_input.encode("ascii")))
    return {"signature": signature, "jws": f"{signing_input}.{signature}"}


def _eddsa_verify(i: dict[str, Any]) -> dict[str, Any]:
    # The RFC 8037 A.4 payload is not JSON, so the JWS is split here rather than by protocol.jws.
    key = parse_public_jwk(i["jwk"], alg="EdDSA")
    header, payload, signature = i["jws"].split(".")
    key.verify(signature=b64url_decode(signature), data=f"{header}.{payload}".encode("ascii"))
    return {"verified": True}


def _verify_dpop_proof(i: dict[str, Any]) -> dict[str, Any]:
    verified = verify_dpop_proof(**i)
    return {
        "jkt": verified.jkt,
        "jti": verified.jti,
        "htm": verified.htm,
        "htu": verified.htu,
        "iat": verified.iat,
        "nonce": verified.nonce,
    }


def _create_dpop_proof(i: dict[str, Any]) -> dict[str, Any]:
    params = dict(i)
    key = SigningKey.from_private_jwk(params.pop("private_jwk"))
    return {"proof": create_dpop_proof(key=key, **params)}


def _access_token_hash(i: dict[str, Any]) -> dict[str, Any]:
    return {"ath": access_token_hash(i["access_token"])}


def _normalize_htu(i: dict[str, Any]) -> dict[str, Any]:
    return {"htu": normalize_htu(i["url"])}


def _issue_access_token(i: dict[str, Any]) -> dict[str, Any]:
    params = dict(i)
    key = SigningKey.from_private_jwk(params.pop("private_jwk"))
    return {"token": issue_access_token(key=key, **params)}


def _verify_access_token(i: dict[str, Any]) -> dict[str, Any]:
    params = dict(i)
    keys = {kid: parse_public_jwk(jwk) for kid, jwk in params.pop("keys").items()}
    return dataclasses.asdict(verify_access_token(keys=keys, **params))


def _parse_email_address(i: dict[str, Any]) -> dict[str, Any]:
    email = parse_email_address(i["email"])
    return {"address": email.address, "canonical": email.canonical}


def _build_login_link(i: dict[str, Any]) -> dict[str, Any]:
    return {"link": build_login_link(**i)}


def _parse_login_link(i: dict[str, Any]) -> dict[str, Any]:
    link = parse_login_link(i["link"])
    return {"attempt_id": link.attempt_id, "email_half": link.email_half}


def _check_phrase_words(i: dict[str, Any]) -> dict[str, Any]:
    return {"count": len(WORDS), "words": list(WORDS)}


def _check_phrase(i: dict[str, Any]) -> dict[str, Any]:
    return {"phrase": check_phrase(i["jkt"])}


RUNNERS: dict[str, dict[str, Runner]] = {
    "base64url.json": {"b64url_encode": _b64url_encode, "b64url_decode": _b64url_decode},
    "jwk.json": {"jwk_thumbprint": _jwk_thumbprint, "parse_public_jwk": _parse_public_jwk},
    "eddsa.json": {
        "ed25519_public_key": _ed25519_public_key,
        "eddsa_sign": _eddsa_sign,
        "eddsa_verify": _eddsa_verify,
    },
    "dpop.json": {
        "verify_dpop_proof": _verify_dpop_proof,
        "create_dpop_proof": _create_dpop_proof,
        "access_token_hash": _access_token_hash,
        "normalize_htu": _normalize_htu,
    },
    "access_token.json": {
        "issue_access_token": _issue_access_token,
        "verify_access_token": _verify_access_token,
    },
    "email.json": {"parse_email_address": _parse_email_address},
    "login_link.json": {
        "build_login_link": _build_login_link,
        "parse_login_link": _parse_login_link,
    },
    "check_phrase.json": {"check_phrase": _check_phrase},
    "check_phrase_words.json": {"check_phrase_words": _check_phrase_words},
}


def _vector_files() -> list[Path]:
    return sorted(VECTORS.glob("*.json"))


def _cases(path: Path) -> list[dict[str, Any]]:
    document = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), path.name
    cases = document["cases"]
    assert isinstance(cases, list), path.name
    return cases


def _all_cases() -> list[Any]:
    params = []
    for path in _vector_files():
        for case in _cases(path):
            reason = KNOWN_PROTOCOL_BUGS.get(case.get("id", ""))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(pytest.param(path.name, case, id=case.get("id"), marks=marks))
    return params


def test_vector_directory_holds_only_known_files() -> None:
    names = {p.name for p in VECTORS.iterdir() if p.name != "__pycache__"}
    unknown = names - set(RUNNERS) - NON_VECTOR_FILES
    assert not unknown, f"vector files without a runner: {sorted(unknown)}"
    missing = set(RUNNERS) - names
    assert not missing, f"vector files missing: {sorted(missing)}"


def test_vector_cases_follow_the_schema() -> None:
    seen: set[str] = set()
    codes = {code.value for code in ErrorCode}
    for path in _vector_files():
        runners = RUNNERS.get(path.name)
        assert runners is not None, f"unknown vector file {path.name}"
        cases = _cases(path)
        assert cases, f"{path.name} has no cases"
        for case in cases:
            assert set(case) <= CASE_KEYS, (path.name, case.get("id"), set(case) - CASE_KEYS)
            case_id = case["id"]
            assert case_id.startswith(path.stem + "/"), case_id
            assert case_id not in seen, f"duplicate id {case_id}"
            seen.add(case_id)
            assert case["type"] in runners, f"{case_id}: unknown case type {case['type']!r}"
            assert isinstance(case["spec"], str) and case["spec"], case_id
            assert isinstance(case["input"], dict), case_id
            assert ("output" in case) != ("error" in case), f"{case_id}: output xor error"
            if "output" in case:
                assert isinstance(case["output"], dict), case_id
            else:
                assert case["error"] in codes, f"{case_id}: unknown error code {case['error']!r}"
    assert set(KNOWN_PROTOCOL_BUGS) <= seen, "KNOWN_PROTOCOL_BUGS names a case that is gone"


@pytest.mark.parametrize(("file_name", "case"), _all_cases())
def test_vector(file_name: str, case: dict[str, Any]) -> None:
    runners = RUNNERS.get(file_name)
    if runners is None:
        pytest.fail(f"unknown vector file {file_name}")
    runner = runners.get(case.get("type", ""))
    if runner is None:
        pytest.fail(f"{case.get('id')}: unknown case type {case.get('type')!r} in {file_name}")
    if "error" in case:
        with pytest.raises(SplitlinkError) as raised:
            runner(case["input"])
        assert raised.value.code == case["error"], raised.value.description
    else:
        assert runner(case["input"]) == case["output"]


def test_the_published_check_phrase_words_are_the_protocols_list() -> None:
    # SPEC.md §7.5 names this file as the list every implementation copies.
    [case] = _cases(VECTORS / "check_phrase_words.json")
    assert case["output"] == {"count": 256, "words": list(WORDS)}
