"""`/v1/me` accepts only a DPoP-bound token with a fresh proof by its key (SPEC.md §6.5;
RFC 9449 §7; threats.md B1-B3, B6, B9)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import Headers
from support.device import Device
from support.harness import PUBLIC_URL, Harness, running_server

from protocol.access_token import VerifiedAccessToken
from protocol.dpop import VerifiedDPoPProof
from server.dpop.guard import ResourceGuard
from server.dpop.lookup import UncheckedSession
from server.dpop.proof import DPoPGuard
from server.errors import ResourceError
from server.replay import MemoryReplayStore

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


class _CountingReplay(MemoryReplayStore):
    def __init__(self) -> None:
        super().__init__(retention=121)
        self.writes = 0

    async def record(self, proof: VerifiedDPoPProof, *, now: int) -> None:
        self.writes += 1
        await super().record(proof, now=now)


class _Lookup:
    """Finds the session live or ended; when `records_proof`, writes the entry with its read."""

    def __init__(self, replay: _CountingReplay, *, records_proof: bool) -> None:
        self.replay = replay
        self.records_proof = records_proof
        self.live = True

    async def live_session(
        self, token: VerifiedAccessToken, *, proof: VerifiedDPoPProof, now: int
    ) -> UncheckedSession | None:
        if self.records_proof:
            await self.replay.record(proof, now=now)
        return UncheckedSession() if self.live else None


@pytest.mark.parametrize("records_proof", [True, False])
async def test_a_guard_records_each_proof_once_in_the_order_its_lookup_gives(
    tmp_path: Path, records_proof: bool
) -> None:
    # One lookup, no second callback: neither the session check nor the replay record can be
    # dropped, and the proof is written once, with the read or after a live session was found.
    async with running_server(tmp_path) as server:
        device = server.device()
        token = (await server.login(device, "a@example.com"))["access_token"]
        svc = server.app.state.services
        replay = _CountingReplay()
        lookup = _Lookup(replay, records_proof=records_proof)
        guard = ResourceGuard(
            issuer=svc.settings.issuer,
            audience=svc.settings.token_audience,
            keys=svc.keys,
            dpop=DPoPGuard(
                public_url=PUBLIC_URL, max_age=60, max_future=60, replay=replay, clock=server.clock
            ),
            clock=server.clock,
            sessions=lookup,
        )

        def headers(proof: str) -> Headers:
            return Headers({"authorization": f"DPoP {token}", "dpop": proof})

        proof = device.proof("GET", "/v1/me", access_token=token)
        lookup.live = False
        with pytest.raises(ResourceError, match="the session has ended"):
            await guard.authenticate(headers(proof), method="GET", path="/v1/me")
        # Written with the read, the proof is used up; written after, it is kept.
        assert replay.writes == (1 if records_proof else 0)
        lookup.live = True
        if records_proof:
            proof = device.proof("GET", "/v1/me", access_token=token)
        writes = replay.writes
        principal = await guard.authenticate(headers(proof), method="GET", path="/v1/me")
        assert principal.session == UncheckedSession()
        assert replay.writes == writes + 1
        with pytest.raises(ResourceError, match="used before"):
            await guard.authenticate(headers(proof), method="GET", path="/v1/me")
