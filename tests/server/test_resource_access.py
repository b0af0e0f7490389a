"""`/v1/me` accepts only a DPoP-bound token with a fresh proof by its key (SPEC.md §6.5;
RFC 9449 §7; threats.md B1-B3, B6, B9)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.device import Device
from support.harness import Harness, running_server

pytestmark = pytest.mark.anyio


@pytest.fixture
async def signed_in(server: Harness) -> tuple[Device, str]:
    device = server.device()
    tokens = await server.login(device, "a@example.com")
    return device, tokens["access_token"]


def _challenge(response: Any) -> str:
    value: str = response.headers["www-authenticate"]
    assert value.startswith("DPoP ")
    assert 'algs="ES256 EdDSA"' in value
    return value


async def test_no_credentials_get_a_plain_dpop_challenge(server: Harness) -> None:
    response = await server.client.get("/v1/me")
    assert response.status_code == 401
    assert _challenge(response) == 'DPoP algs="ES256 EdDSA"'


async def test_b1_missing_proof_is_refused(server: Harness, signed_in: tuple[Device, str]) -> None:
    _, token = signed_in
    response = await server.client.get("/v1/me", headers={"Authorization": f"DPoP {token}"})
    assert response.status_code == 401
    assert 'error="invalid_dpop_proof"' in _challenge(response)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BeArEr"])
async def test_b1_bound_token_presented_as_bearer_is_refused(
    server: Harness, signed_in: tuple[Device, str], scheme: str
) -> None:
    device, token = signed_in
    response = await server.client.get(
        "/v1/me",
        headers={
            "Authorization": f"{scheme} {token}",
            "DPoP": device.proof("GET", "/v1/me", access_token=token),
        },
    )
    assert response.status_code == 401
    assert 'error="invalid_token"' in _challenge(response)


async def test_b2_proof_by_another_key_is_refused(
    server: Harness, signed_in: tuple[Device, str]
) -> None:
    _, token = signed_in
    thief = server.device()
    response = await server.me(thief, token)
    assert response.status_code == 401
    assert 'error="invalid_token"' in _challenge(response)


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"ath": "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"}, id="ath-other-token"),
        pytest.param({"ath": "7d41f23b6af66770d9e7712c36b5816f"}, id="ath-hex"),
    ],
)
async def test_b3_wrong_ath_is_refused(
    server: Harness, signed_in: tuple[Device, str], claims: dict[str, str]
) -> None:
    device, token = signed_in
    response = await server.client.get(
        "/v1/me",
        headers={
            "Authorization": f"DPoP {token}",
            "DPoP": device.proof("GET", "/v1/me", access_token=token, claims=claims),
        },
    )
    assert response.status_code == 401
    assert 'error="invalid_dpop_proof"' in _challenge(response)


async def test_b3_missing_ath_is_refused(server: Harness, signed_in: tuple[Device, str]) -> None:
    device, token = signed_in
    response = await server.client.get(
        "/v1/me",
        headers={"Authorization": f"DPoP {token}", "DPoP": device.proof("GET", "/v1/me")},
    )
    assert response.status_code == 401


async def test_b6_replayed_proof_is_refused_and_a_refused_proof_keeps_its_jti(
    server: Harness, signed_in: tuple[Device, str]
) -> None:
    device, token = signed_in
    proof = device.proof("GET", "/v1/me", access_token=token, claims={"jti": "fixed-jti-1"})
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
    # The same jti with a wrong ath is refused first and must not burn the jti.
    bad = device.proof(
        "GET", "/v1/me", access_token=token, claims={"jti": "fixed-jti-1", "ath": "x"}
    )
    refused = await server.client.get(
        "/v1/me", headers={"Authorization": f"DPoP {token}", "DPoP": bad}
    )
    assert refused.status_code == 401
    assert (await server.client.get("/v1/me", headers=headers)).status_code == 200
    replay = await server.client.get("/v1/me", headers=headers)
    assert replay.status_code == 401
    assert 'error="invalid_dpop_proof"' in _challenge(replay)


async def test_b9_two_authorization_headers_are_refused(
    server: Harness, signed_in: tuple[Device, str]
) -> None:
    device, token = signed_in
    response = await server.client.get(
        "/v1/me",
        headers=[
            ("Authorization", f"DPoP {token}"),
            ("Authorization", f"DPoP {token}"),
            ("DPoP", device.proof("GET", "/v1/me", access_token=token)),
        ],
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_b9_comma_joined_proofs_are_refused(
    server: Harness, signed_in: tuple[Device, str]
) -> None:
    device, token = signed_in
    joined = ", ".join(device.proof("GET", "/v1/me", access_token=token) for _ in range(2))
    response = await server.client.get(
        "/v1/me", headers={"Authorization": f"DPoP {token}", "DPoP": joined}
    )
    assert response.status_code == 401


async def test_expired_access_token_is_refused(
    server: Harness, signed_in: tuple[Device, str]
) -> None:
    device, token = signed_in
    server.clock.advance(600)
    response = await server.me(device, token)
    assert response.status_code == 401
    assert 'error="invalid_token"' in _challenge(response)


@pytest.mark.parametrize("token", ["a.b", "a.b.c.d", "!!!", "e30.e30.e30", "x" * 9000])
async def test_malformed_tokens_get_401_not_500(server: Harness, token: str) -> None:
    device = server.device()
    response = await server.client.get(
        "/v1/me",
        headers={
            "Authorization": f"DPoP {token}",
            "DPoP": device.proof("GET", "/v1/me", access_token=token),
        },
    )
    assert response.status_code == 401


async def test_a_request_refused_because_its_session_ended_has_used_up_its_proof(
    server: Harness, signed_in: tuple[Device, str]
) -> None:
    # SPEC.md §6.5 step 7: the server's own endpoints record the proof with the session lookup.
    device, token = signed_in

    def authorized(method: str, path: str) -> dict[str, str]:
        return {
            "Authorization": f"DPoP {token}",
            "DPoP": device.proof(method, path, access_token=token),
        }

    logout = await server.client.post("/v1/logout", headers=authorized("POST", "/v1/logout"))
    assert logout.status_code == 204, logout.text
    headers = authorized("GET", "/v1/me")
    ended = await server.client.get("/v1/me", headers=headers)
    assert ended.status_code == 401
    assert 'error="invalid_token"' in _challenge(ended)
    assert "the session has ended" in ended.text
    again = await server.client.get("/v1/me", headers=headers)
    assert again.status_code == 401
    assert 'error="invalid_dpop_proof"' in _challenge(again)


async def test_on_postgres_the_session_lookup_and_the_replay_entry_are_one_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_server(tmp_path, backend="postgresql") as server:
        device = server.device()
        token = (await server.login(device, "a@example.com"))["access_token"]
        sent = server.record_single_statements(monkeypatch)
        response = await server.me(device, token)
        assert response.status_code == 200, response.text
    assert len(sent) == 1, sent
    assert sent[0].startswith("WITH part0 AS (INSERT INTO dpop_replay"), sent


def test_a_guard_takes_one_kind_of_session_check_not_both() -> None:
    # With both, one would be ignored: the plain check, or the replay record of the other.
    from server.resource import ResourceGuard

    async def check(*args: Any) -> dict[str, Any]:
        return {}

    unused: Any = None
    with pytest.raises(ValueError, match="not both"):
        ResourceGuard(
            issuer="https://auth.example.test",
            audience="api",
            keys=unused,
            dpop=unused,
            clock=unused,
            session_check=check,
            recording_session_check=check,
        )
