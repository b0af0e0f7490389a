"""DPoP proofs at the start, token and resource endpoints, row by row (SPEC.md §4;
threats.md A9, B1-B7, B9, B11)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from support.backends import database_url_for
from support.device import Device
from support.harness import PUBLIC_URL, Harness, running_server
from support.harness import test_settings as settings_for

from protocol.encoding import b64url_decode, b64url_encode
from protocol.keys import SigningKey
from server.dpop import protect

pytestmark = pytest.mark.anyio

START = "/v1/login/start"
SMALL_ORDER_ED25519 = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
]


def _jwk(device: Device, **changes: Any) -> dict[str, Any]:
    jwk = dict(device.key.public.jwk)
    jwk.update(changes)
    return {k: v for k, v in jwk.items() if v is not None}


def _p256_y_plus_one(device: Device) -> str:
    y = int.from_bytes(b64url_decode(device.key.public.jwk["y"]), "big")
    return b64url_encode(((y + 1) % 2**256).to_bytes(32, "big"))


REFUSED_PROOFS: list[Any] = [
    pytest.param({"header": {"typ": "JWT"}}, id="B4-typ-JWT"),
    pytest.param({"header": {"typ": "secevent+jwt"}}, id="B4-typ-secevent"),
    pytest.param({"header": {"typ": "DPoP+JWT"}}, id="B4-typ-other-case"),
    pytest.param({"drop": ("typ",)}, id="B4-typ-missing"),
    pytest.param({"header": {"alg": "none"}}, id="B4-alg-none"),
    pytest.param({"header": {"alg": "HS256"}}, id="B4-alg-HS256"),
    pytest.param({"header": {"alg": "ES256"}}, id="B4-alg-not-the-key-type"),
    pytest.param({"header": {"alg": True}}, id="B4-alg-true"),
    pytest.param({"drop": ("jwk",)}, id="B4-jwk-missing"),
    pytest.param({"header": {"jwk": "foo"}}, id="B4-jwk-string"),
    pytest.param({"header": {"jwk": []}}, id="B4-jwk-array"),
    pytest.param({"header": {"jwk": None}}, id="B4-jwk-null"),
    pytest.param({"drop": ("jti",)}, id="B4-jti-missing"),
    pytest.param({"claims": {"jti": ""}}, id="B4-jti-empty"),
    pytest.param({"claims": {"jti": "x" * 257}}, id="B4-jti-too-long"),
    pytest.param({"drop": ("htm",)}, id="B4-htm-missing"),
    pytest.param({"drop": ("htu",)}, id="B4-htu-missing"),
    pytest.param({"drop": ("iat",)}, id="B4-iat-missing"),
    pytest.param({"claims": {"iat": "1800000000"}}, id="B4-iat-string"),
    pytest.param({"claims": {"nonce": 123}}, id="B4-nonce-not-a-string"),
    pytest.param({"claims": {"htm": "GET"}}, id="B5-htm-mismatch"),
    pytest.param({"claims": {"htm": "post"}}, id="B5-htm-lowercase"),
    pytest.param({"claims": {"htu": "https://evil.example/v1/login/start"}}, id="B5-htu-host"),
    pytest.param({"claims": {"htu": "http://testserver/v1/login/start"}}, id="B5-htu-from-Host"),
    pytest.param({"claims": {"htu": PUBLIC_URL + "/v1/login/start/"}}, id="B5-htu-trailing-slash"),
    pytest.param({"claims": {"htu": "http://auth.example.test/v1/login/start"}}, id="B5-htu-http"),
    pytest.param({"claims": {"htu": ":::*;"}}, id="B5-htu-malformed"),
    # urlsplit would drop these characters and find the configured URL (SPEC.md §4.1).
    pytest.param({"claims": {"htu": PUBLIC_URL + "/v1/login/\tstart"}}, id="B5-htu-tab"),
    pytest.param({"claims": {"htu": PUBLIC_URL + "/v1/login/\r\nstart"}}, id="B5-htu-crlf"),
    pytest.param({"claims": {"htu": PUBLIC_URL + "/v1/login/start\n"}}, id="B5-htu-trailing-lf"),
    pytest.param({"claims": {"htu": " " + PUBLIC_URL + "/v1/login/start"}}, id="B5-htu-leading-sp"),
    pytest.param({"claims": {"htu": "\x00" + PUBLIC_URL + "/v1/login/start"}}, id="B5-htu-nul"),
    pytest.param({"claims": {"iat": -61}}, id="B7-iat-61s-old"),
    pytest.param({"claims": {"iat": +61}}, id="B7-iat-61s-ahead"),
]


async def _start_with(server: Harness, **spec: Any) -> Any:
    device = server.device()
    claims = dict(spec.pop("claims", {}))
    if "iat" in claims and isinstance(claims["iat"], int) and abs(claims["iat"]) < 1000:
        claims["iat"] = server.clock.now() + claims["iat"]
    proof = device.proof("POST", START, claims=claims, **spec)
    return await server.start(device, "a@example.com", proof=proof)


@pytest.mark.parametrize("spec", REFUSED_PROOFS)
async def test_start_refuses_a_bad_proof(server: Harness, spec: dict[str, Any]) -> None:
    response = await _start_with(server, **spec)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_dpop_proof"
    assert server.query("SELECT COUNT(*) FROM login_attempts") == [(0,)]


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"htu": PUBLIC_URL + "/v1/login/start?x=1#y"}, id="B5-query-fragment"),
        pytest.param({"htu": "HTTPS://AUTH.EXAMPLE.TEST:443/v1/login/start"}, id="B5-case-port"),
        pytest.param({"iat": -59}, id="B7-iat-59s-old"),
        pytest.param({"iat": +59}, id="B7-iat-59s-ahead"),
    ],
)
async def test_start_accepts_equivalent_proofs(server: Harness, claims: dict[str, Any]) -> None:
    response = await _start_with(server, claims=claims)
    assert response.status_code == 202, response.text


async def test_start_requires_a_proof(server: Harness) -> None:
    response = await server.client.post(START, json={"email": "a@example.com"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_dpop_proof"


async def test_two_dpop_headers_are_refused(server: Harness) -> None:
    device = server.device()
    response = await server.client.post(
        START,
        json={"email": "a@example.com"},
        headers=[("DPoP", device.proof("POST", START)), ("DPoP", device.proof("POST", START))],
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_dpop_proof"


async def test_a_bad_signature_is_refused(server: Harness) -> None:
    device = server.device()
    other = SigningKey.generate("EdDSA", random_bytes=os.urandom)
    response = await server.start(
        device, "a@example.com", proof=device.proof("POST", START, sign_with=other)
    )
    assert response.json()["error"] == "invalid_dpop_proof"


async def test_a_replayed_proof_is_refused_and_its_start_writes_nothing(server: Harness) -> None:
    # SPEC.md §6.1 step 7: the entry, the attempt and its mail are one atomic unit.
    device = server.device()
    proof = device.proof("POST", START)
    assert (await server.start(device, "a@example.com", proof=proof)).status_code == 202
    replay = await server.start(device, "a@example.com", proof=proof)
    assert replay.status_code == 400
    assert "used before" in replay.json()["error_description"]
    for table in ("login_attempts", "outbox", "dpop_replay"):
        assert server.query(f"SELECT COUNT(*) FROM {table}") == [(1,)], table  # noqa: S608


async def test_replay_store_survives_a_restart(tmp_path: Path, backend: str) -> None:
    with database_url_for(backend, tmp_path) as url:
        async with running_server(tmp_path, database_url=url) as server:
            device = server.device()
            proof = device.proof("POST", START)
            assert (await server.start(device, "a@example.com", proof=proof)).status_code == 202
            clock = server.clock
        async with running_server(tmp_path, clock=clock, database_url=url) as restarted:
            replay = await restarted.start(device, "a@example.com", proof=proof)
            assert replay.json()["error"] == "invalid_dpop_proof"


BAD_KEYS: list[Any] = [
    *[
        pytest.param(
            {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(bytes.fromhex(h))},
            id=f"A9-small-order-{i}",
        )
        for i, h in enumerate(SMALL_ORDER_ED25519)
    ],
    pytest.param(
        {"kty": "OKP", "crv": "X25519", "x": b64url_encode(os.urandom(32))}, id="A9-X25519"
    ),
    pytest.param({"kty": "oct", "k": b64url_encode(os.urandom(32))}, id="A9-oct"),
    pytest.param(
        {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(os.urandom(31))}, id="A9-short"
    ),
]


@pytest.mark.parametrize("jwk", BAD_KEYS)
async def test_start_refuses_weak_or_foreign_keys(server: Harness, jwk: dict[str, str]) -> None:
    response = await _start_with(server, header={"jwk": jwk})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_dpop_proof"
    assert server.query("SELECT COUNT(*) FROM login_attempts") == [(0,)]


async def test_start_refuses_a_private_jwk(server: Harness) -> None:
    device = server.device()
    proof = device.proof("POST", START, header={"jwk": device.key.private_jwk()})
    response = await server.start(device, "a@example.com", proof=proof)
    assert response.json()["error"] == "invalid_dpop_proof"


async def test_start_refuses_a_p256_point_off_the_curve(server: Harness) -> None:
    device = server.device("ES256")
    proof = device.proof("POST", START, header={"jwk": _jwk(device, y=_p256_y_plus_one(device))})
    response = await server.start(device, "a@example.com", proof=proof)
    assert response.json()["error"] == "invalid_dpop_proof"


async def test_completion_requires_a_proof_by_the_starting_key(server: Harness) -> None:
    """B11: a proof by another key fails like a wrong half; the right key still works after."""
    device = server.device()
    started, email_half = await server.start_and_read_link(device, "a@example.com")
    halves = {
        "attempt_id": started["attempt_id"],
        "device_half": started["device_half"],
        "email_half": email_half,
    }
    no_proof = await server.client.post(
        "/oauth2/token",
        data={"grant_type": "urn:splitlink:params:oauth:grant-type:magic-link", **halves},
    )
    assert no_proof.json()["error"] == "invalid_dpop_proof"
    other = await server.complete(server.device(), **halves)
    assert other.json()["error"] == "invalid_grant"
    assert (await server.complete(device, **halves)).status_code == 200


async def test_a_refused_completion_has_used_up_its_proof(server: Harness) -> None:
    # SPEC.md §4.4, §6.2 step 7: the entry commits with the completion's transaction, which
    # commits on every outcome it reports, so a wrong guess cannot be tried again with its proof.
    device = server.device()
    started, email_half = await server.start_and_read_link(device, "a@example.com")
    proof = device.proof("POST", "/oauth2/token")
    wrong_half = b64url_encode(bytes(32))
    tries = [
        (wrong_half, proof, 400, "invalid_grant"),
        (email_half, proof, 400, "used before"),
        (email_half, device.proof("POST", "/oauth2/token"), 200, "access_token"),
    ]
    for email_half_sent, proof_sent, status, expected in tries:
        response = await server.complete(
            device,
            attempt_id=started["attempt_id"],
            device_half=started["device_half"],
            email_half=email_half_sent,
            proof=proof_sent,
        )
        assert response.status_code == status
        assert expected in response.text


async def test_a_refused_refresh_has_used_up_its_proof(server: Harness) -> None:
    device = server.device()
    tokens = await server.login(device, "a@example.com")
    proof = device.proof("POST", "/oauth2/token")
    for refresh_token, expected in (
        ("not-a-token", "invalid_grant"),
        (tokens["refresh_token"], "used before"),
    ):
        response = await server.client.post(
            "/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            headers={"DPoP": proof},
        )
        assert response.status_code == 400
        assert expected in response.text


async def test_the_replay_entry_of_a_login_or_refresh_commits_in_the_transaction_it_admits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One statement and one commit fewer per request than an entry of its own; a transaction
    # that fails leaves no entry, and a replay is refused before any of the work.
    from server.storage import sqlite

    statements: list[str] = []
    opened = sqlite._open_in_loop

    def traced(path: str, *, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
        conn = opened(path, synchronous=synchronous, busy_timeout=busy_timeout)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite, "_open_in_loop", traced)
    async with running_server(tmp_path) as server:
        device = server.device()
        tokens = await server.login(device, "a@example.com")
        await server.client.post(
            "/oauth2/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
            },
            headers={"DPoP": device.proof("POST", "/oauth2/token")},
        )
    replay_entries = [
        i for i, s in enumerate(statements) if s.startswith("INSERT INTO dpop_replay")
    ]
    assert len(replay_entries) == 3
    for at in replay_entries:
        assert statements[at - 1] == "BEGIN IMMEDIATE", statements[at - 1 : at + 1]


@pytest.mark.parametrize(
    "htu",
    [
        pytest.param(PUBLIC_URL + "/v1/\tme", id="tab"),
        pytest.param(PUBLIC_URL + "/v1/me\r\n", id="trailing-crlf"),
        pytest.param("\n" + PUBLIC_URL + "/v1/me", id="leading-lf"),
    ],
)
async def test_a_resource_proof_htu_with_control_characters_is_refused(
    server: Harness, htu: str
) -> None:
    device = server.device()
    token = (await server.login(device, "a@example.com"))["access_token"]
    response = await server.client.get(
        "/v1/me",
        headers={
            "Authorization": f"DPoP {token}",
            "DPoP": device.proof("GET", "/v1/me", access_token=token, claims={"htu": htu}),
        },
    )
    assert response.status_code == 401
    assert 'error="invalid_dpop_proof"' in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    "public_url",
    [
        "https://auth.example.test\t",
        "https://auth.exa\nmple.test",
        " https://auth.example.test",
        "https://auth.example.test/\r\n",
    ],
)
def test_a_public_url_with_control_characters_or_spaces_is_refused(
    tmp_path: Path, public_url: str
) -> None:
    """SPEC.md §4.1, §4.3: the URL each htu is compared with is held to the same rule."""
    with pytest.raises(ValidationError):
        settings_for(tmp_path, public_url=public_url)
    with pytest.raises(ValueError, match="public_url"):
        protect(Starlette(), issuer=PUBLIC_URL, public_url=public_url)
