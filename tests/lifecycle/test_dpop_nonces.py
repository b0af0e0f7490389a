"""Server-provided DPoP nonces (use_dpop_nonce=True): a missing, stale, foreign or wrongly-typed
nonce is refused with a fresh `DPoP-Nonce`; AS and RS nonces are separate; the reference client
retries exactly once per challenge (RFC 9449 §8, §9; standards.md §2.7; threats.md B8)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from splitlink_client.testing import MailboxDirectory, sign_in
from support.backends import query
from support.device import Device
from support.harness import Harness, running_server
from support.processes import running_server_process

from protocol.encoding import b64url_decode, b64url_encode

if TYPE_CHECKING:
    from conftest import Ops

pytestmark = pytest.mark.anyio

STEP = 60  # Settings.dpop_nonce_step default


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    return {"use_dpop_nonce": True}


def _one_nonce(response: httpx.Response) -> str:
    values = response.headers.get_list("dpop-nonce")
    assert len(values) == 1, values  # RFC 9449 §8: never more than one DPoP-Nonce
    return values[0]


def _assert_as_challenge(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "use_dpop_nonce"
    assert response.headers["cache-control"] == "no-store"
    return _one_nonce(response)


def _assert_rs_challenge(response: httpx.Response) -> str:
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("DPoP ")
    assert 'error="use_dpop_nonce"' in challenge
    return _one_nonce(response)


async def _start(
    server: Harness, device: Device, nonce: Any = None, *, jti: str | None = None
) -> httpx.Response:
    claims: dict[str, Any] = {} if nonce is None else {"nonce": nonce}
    if jti is not None:
        claims["jti"] = jti
    proof = device.proof("POST", "/v1/login/start", claims=claims)
    return await server.start(device, "alice@example.com", proof=proof)


async def _as_nonce(server: Harness) -> str:
    return _assert_as_challenge(await _start(server, server.device()))


async def _rs_nonce(server: Harness) -> str:
    response = await server.client.get("/v1/me")  # no credentials: still answered with a nonce
    assert response.status_code == 401
    return _one_nonce(response)


async def _login(server: Harness, device: Device) -> dict[str, Any]:
    """A login that follows the nonce challenges."""
    nonce = await _as_nonce(server)
    started = await _start(server, device, nonce)
    assert started.status_code == 202, started.text
    await server.deliver()
    link = server.mail.sent[-1].login_link()
    response = await server.complete(
        device,
        attempt_id=started.json()["attempt_id"],
        device_half=started.json()["device_half"],
        email_half=link.email_half,
        proof=device.proof("POST", "/oauth2/token", claims={"nonce": _one_nonce(started)}),
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


async def _me(server: Harness, device: Device, token: str, nonce: Any = None) -> httpx.Response:
    claims = {} if nonce is None else {"nonce": nonce}
    return await server.client.get(
        "/v1/me",
        headers={
            "Authorization": f"DPoP {token}",
            "DPoP": device.proof("GET", "/v1/me", access_token=token, claims=claims),
        },
    )


async def _refresh(
    ops: Ops, device: Device, refresh_token: str, nonce: Any = None
) -> httpx.Response:
    claims = {} if nonce is None else {"nonce": nonce}
    proof = device.proof("POST", "/oauth2/token", claims=claims)
    return await ops.refresh(device, refresh_token, proof=proof)


async def test_b8_start_without_nonce_is_challenged_then_accepted_with_it(
    server: Harness,
) -> None:
    device = server.device()
    jti = b64url_encode(os.urandom(16))
    challenged = await _start(server, device, jti=jti)
    nonce = _assert_as_challenge(challenged)
    assert server.query("SELECT COUNT(*) FROM login_attempts") == [(0,)]
    # The challenged proof's jti was not burned: the retry may reuse it.
    retried = await _start(server, device, nonce, jti=jti)
    assert retried.status_code == 202, retried.text
    _one_nonce(retried)


async def test_b8_a_successful_answer_carries_a_fresh_nonce(server: Harness) -> None:
    nonce = await _as_nonce(server)
    server.clock.advance(STEP)
    accepted = await _start(server, server.device(), nonce)  # previous step: still accepted
    assert accepted.status_code == 202, accepted.text
    fresh = _one_nonce(accepted)
    assert fresh != nonce
    server.clock.advance(STEP)  # the first nonce is now two steps old, the fresh one is not
    assert (await _start(server, server.device(), fresh)).status_code == 202
    _assert_as_challenge(await _start(server, server.device(), nonce))


async def test_b8_token_endpoint_challenges_completion_and_refresh(
    server: Harness, ops: Ops
) -> None:
    device = server.device()
    nonce = await _as_nonce(server)
    started = await _start(server, device, nonce)
    assert started.status_code == 202
    await server.deliver()
    link = server.mail.sent[-1].login_link()
    form: dict[str, Any] = {
        "attempt_id": started.json()["attempt_id"],
        "device_half": started.json()["device_half"],
        "email_half": link.email_half,
    }
    challenged = await server.complete(device, **form)
    token_nonce = _assert_as_challenge(challenged)
    # The challenge counted no failure and consumed nothing.
    assert server.query("SELECT consumed_at, failed_count FROM login_attempts") == [(None, 0)]
    done = await server.complete(
        device, **form, proof=device.proof("POST", "/oauth2/token", claims={"nonce": token_nonce})
    )
    assert done.status_code == 200, done.text
    tokens = done.json()
    refresh_nonce = _one_nonce(done)
    # Refresh: challenged without a nonce, and nothing rotates.
    _assert_as_challenge(await _refresh(ops, device, tokens["refresh_token"]))
    session_id = ops.claims(tokens["access_token"])["sid"]
    assert [r[1] for r in ops.refresh_rows(session_id)] == [None]
    refreshed = await _refresh(ops, device, tokens["refresh_token"], refresh_nonce)
    assert refreshed.status_code == 200, refreshed.text
    _one_nonce(refreshed)


async def test_b8_v1_me_without_nonce_is_challenged_with_401_then_accepted(
    server: Harness,
) -> None:
    device = server.device()
    tokens = await _login(server, device)
    challenged = await _me(server, device, tokens["access_token"])
    nonce = _assert_rs_challenge(challenged)
    assert challenged.json()["error"] == "use_dpop_nonce"
    accepted = await _me(server, device, tokens["access_token"], nonce)
    assert accepted.status_code == 200, accepted.text
    _one_nonce(accepted)


async def test_b8_an_as_nonce_is_refused_at_v1_and_an_rs_nonce_at_the_as(
    server: Harness, ops: Ops
) -> None:
    device = server.device()
    tokens = await _login(server, device)
    as_nonce = await _as_nonce(server)
    rs_nonce = await _rs_nonce(server)
    assert as_nonce != rs_nonce
    _assert_rs_challenge(await _me(server, device, tokens["access_token"], as_nonce))
    _assert_as_challenge(await _start(server, server.device(), rs_nonce))
    _assert_as_challenge(await _refresh(ops, device, tokens["refresh_token"], rs_nonce))
    # Each is accepted by its own side.
    assert (await _me(server, device, tokens["access_token"], rs_nonce)).status_code == 200
    ok = await _refresh(ops, device, tokens["refresh_token"], as_nonce)
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    ("offset", "accepted_for"),
    [
        pytest.param(0, 2 * STEP - 1, id="minted-first-second-of-step"),
        pytest.param(STEP - 1, STEP, id="minted-last-second-of-step"),
    ],
)
async def test_b8_a_nonce_from_two_steps_ago_is_refused(
    server: Harness, offset: int, accepted_for: int
) -> None:
    """A nonce is good in its own step and the next; two steps on, it is refused."""
    device = server.device()
    tokens = await _login(server, device)
    server.clock.current = (server.clock.now() // STEP + 1) * STEP + offset
    as_nonce = await _as_nonce(server)
    rs_nonce = await _rs_nonce(server)
    server.clock.advance(accepted_for)
    assert (await _start(server, server.device(), as_nonce)).status_code == 202
    assert (await _me(server, device, tokens["access_token"], rs_nonce)).status_code == 200
    server.clock.advance(1)
    fresh = _assert_as_challenge(await _start(server, server.device(), as_nonce))
    assert fresh != as_nonce
    fresh_rs = _assert_rs_challenge(await _me(server, device, tokens["access_token"], rs_nonce))
    assert fresh_rs != rs_nonce


async def test_b8_a_nonce_from_the_future_is_refused(server: Harness) -> None:
    server.clock.advance(STEP)
    future = await _as_nonce(server)
    server.clock.advance(-STEP)
    _assert_as_challenge(await _start(server, server.device(), future))


@pytest.mark.parametrize(
    "nonce",
    [
        pytest.param(123, id="number"),
        pytest.param(["n"], id="array"),
        pytest.param({"n": 1}, id="object"),
        pytest.param(True, id="boolean"),
    ],
)
async def test_b8_a_nonce_that_is_not_a_string_is_an_invalid_proof(
    server: Harness, nonce: Any
) -> None:
    response = await _start(server, server.device(), nonce)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_dpop_proof"


@pytest.mark.parametrize(
    "nonce",
    [
        pytest.param("", id="empty"),
        pytest.param("garbage", id="garbage"),
        pytest.param("!!!", id="not-base64url"),
        pytest.param(b64url_encode(os.urandom(24)), id="random-right-length"),
        pytest.param("A" * 1000, id="long"),
    ],
)
async def test_b8_a_made_up_nonce_is_challenged(server: Harness, nonce: str) -> None:
    _assert_as_challenge(await _start(server, server.device(), nonce))


async def test_b8_a_nonce_minted_by_another_server_is_refused(
    server: Harness, tmp_path: Path
) -> None:
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    # Same public URL and clock reading, another root secret.
    async with running_server(other_dir, use_dpop_nonce=True) as other:
        assert other.clock.now() == server.clock.now()
        foreign_as = await _as_nonce(other)
        foreign_rs = await _rs_nonce(other)
    own_as = await _as_nonce(server)
    assert foreign_as != own_as
    _assert_as_challenge(await _start(server, server.device(), foreign_as))
    device = server.device()
    tokens = await _login(server, device)
    _assert_rs_challenge(await _me(server, device, tokens["access_token"], foreign_rs))


async def test_b8_a_refused_nonce_does_not_burn_the_proof_jti_at_v1(server: Harness) -> None:
    device = server.device()
    tokens = await _login(server, device)
    token = tokens["access_token"]
    jti = b64url_encode(os.urandom(16))
    first = await server.client.get(
        "/v1/me",
        headers={
            "Authorization": f"DPoP {token}",
            "DPoP": device.proof("GET", "/v1/me", access_token=token, claims={"jti": jti}),
        },
    )
    nonce = _assert_rs_challenge(first)
    proof = device.proof("GET", "/v1/me", access_token=token, claims={"jti": jti, "nonce": nonce})
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
    assert (await server.client.get("/v1/me", headers=headers)).status_code == 200
    replay = await server.client.get("/v1/me", headers=headers)
    assert replay.status_code == 401
    assert 'error="invalid_dpop_proof"' in replay.headers["www-authenticate"]


# The reference client against a real server with nonces on (2 workers, wall clock).


@pytest.mark.slow
def test_b8_reference_client_retries_exactly_once_per_challenge(tmp_path: Path) -> None:
    exchanges: list[tuple[str, str, str | None, httpx.Response]] = []

    def record(response: httpx.Response) -> None:
        response.read()
        request = response.request
        proof = request.headers.get("dpop")
        nonce = None
        if proof is not None:
            nonce = json.loads(b64url_decode(proof.split(".")[1])).get("nonce")
        exchanges.append((request.method, request.url.path, nonce, response))

    with running_server_process(
        tmp_path, extra_env={"SPLITLINK_USE_DPOP_NONCE": "true"}
    ) as process:
        with (
            httpx.Client(timeout=30, event_hooks={"response": [record]}) as http,
            sign_in(
                server_url=process.url,
                email="alice@example.com",
                device_name="phone",
                mailbox=MailboxDirectory(process.mail_dir),
                state_path=tmp_path / "device.json",
                http=http,
            ) as client,
        ):
            me = client.me()
            assert me["user"]["email"] == "alice@example.com"
            old_refresh = client.state.tokens.refresh_token  # type: ignore[union-attr]
            assert client.refresh() > 0
            assert client.state.tokens.refresh_token != old_refresh  # type: ignore[union-attr]
            assert client.me()["session"]["id"] == me["session"]["id"]
            client.logout()
            assert client.state.tokens is None

        signed = [e for e in exchanges if e[1] != "/.well-known/oauth-authorization-server"]
        challenges = 0
        i = 0
        while i < len(signed):
            method, path, _, response = signed[i]
            if response.status_code in (400, 401) and "use_dpop_nonce" in response.text:
                challenges += 1
                # Exactly one retry, of the same request, with the nonce just sent; it succeeds.
                assert i + 1 < len(signed), "a challenge was not retried"
                r_method, r_path, r_nonce, retry = signed[i + 1]
                assert (r_method, r_path) == (method, path)
                assert r_nonce == response.headers["dpop-nonce"]
                assert retry.is_success, (path, retry.status_code, retry.text)
                i += 2
            else:
                assert response.is_success, (path, response.status_code, response.text)
                i += 1
        assert challenges >= 1  # at least the first request, which had no nonce
        assert signed[0][2] is None and signed[0][1] == "/v1/login/start"
        operations = [(m, p) for m, p, _, r in signed if r.is_success]
        assert operations == [
            ("POST", "/v1/login/start"),
            ("POST", "/oauth2/token"),
            ("GET", "/v1/me"),
            ("POST", "/oauth2/token"),
            ("GET", "/v1/me"),
            ("POST", "/v1/logout"),
        ]
        assert len(signed) == len(operations) + challenges
        ((revoked,),) = query(
            process.database_url, "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL"
        )
        assert revoked == 1
