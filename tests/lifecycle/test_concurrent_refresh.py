"""Concurrent refreshes of one token and revocation racing refresh, through separate
connections to 2 real workers on one SQLite file (threats.md G2, G6; docs/design.md §10)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from support.backends import query
from support.processes import ServerProcess, running_server_process
from support.races import HttpDevice, email_half_of, race

from protocol.encoding import b64url_decode

pytestmark = pytest.mark.slow

RACERS = 10


@pytest.fixture
def process(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server_process(tmp_path, workers=2) as running:
        yield running


def _login(device: HttpDevice, email: str) -> dict[str, str]:
    """Start and complete a login; mail other than this attempt's link (notices, earlier links)
    is skipped, so the test does not depend on what else the server sends."""
    started = device.start(email)
    half = email_half_of(device.server, started["attempt_id"])
    response = httpx.post(
        device.server.url + "/oauth2/token",
        data=device.completion_form(started, half),
        headers={"DPoP": device.proof("POST", "/oauth2/token")},
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, str] = response.json()
    return tokens


def _refresh(device: HttpDevice, refresh_token: str) -> Callable[[httpx.Client], httpx.Response]:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    proof = device.proof("POST", "/oauth2/token")  # made before the start line
    return lambda client: client.post("/oauth2/token", data=form, headers={"DPoP": proof})


def _me(device: HttpDevice, access_token: str) -> httpx.Response:
    return httpx.get(
        device.server.url + "/v1/me",
        headers={
            "Authorization": f"DPoP {access_token}",
            "DPoP": device.proof("GET", "/v1/me", access_token),
        },
    )


def _session_of(access_token: str) -> str:
    session_id: str = json.loads(b64url_decode(access_token.split(".")[1]))["sid"]
    return session_id


def test_g2_concurrent_refreshes_of_one_token_all_get_the_same_child(
    process: ServerProcess,
) -> None:
    device = HttpDevice.new(process)
    tokens = _login(device, "racer@example.com")
    session_id = _session_of(tokens["access_token"])
    answers = race(process, [_refresh(device, tokens["refresh_token"]) for _ in range(RACERS)])

    assert [a.status_code for a in answers] == [200] * RACERS, [a.text for a in answers]
    children = {a.json()["refresh_token"] for a in answers}
    assert len(children) == 1
    assert tokens["refresh_token"] not in children
    rows = query(
        process.database_url,
        "SELECT rotated_at, revoked_at FROM refresh_tokens WHERE session_id = ?",
        session_id,
    )
    assert len(rows) == 2, rows
    assert sum(1 for rotated_at, _ in rows if rotated_at is None) == 1
    assert all(revoked_at is None for _, revoked_at in rows)
    assert query(
        process.database_url, "SELECT revoked_at FROM sessions WHERE id = ?", session_id
    ) == [(None,)]
    # Every racer's access token works, and the one child goes on rotating.
    for answer in answers:
        assert _me(device, answer.json()["access_token"]).status_code == 200
    (child,) = children
    onward = httpx.post(
        process.url + "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": child},
        headers={"DPoP": device.proof("POST", "/oauth2/token")},
    )
    assert onward.status_code == 200, onward.text
    assert onward.json()["refresh_token"] not in children | {tokens["refresh_token"]}


ROUNDS = 4


def test_g6_revoke_racing_refreshes_leaves_nothing_active(process: ServerProcess) -> None:
    device = HttpDevice.new(process)
    for round_ in range(ROUNDS):
        tokens = _login(device, f"round{round_}@example.com")
        session_id = _session_of(tokens["access_token"])
        requests = [_refresh(device, tokens["refresh_token"]) for _ in range(5)]
        # Revoke with the refresh token or the access token, at varying places in the line.
        revoked = tokens["refresh_token"] if round_ % 2 == 0 else tokens["access_token"]
        position = round_ % (len(requests) + 1)
        requests.insert(position, lambda c, t=revoked: c.post("/oauth2/revoke", data={"token": t}))
        answers = race(process, requests)

        assert answers[position].status_code == 200
        refreshes = [a for i, a in enumerate(answers) if i != position]
        assert {a.status_code for a in refreshes} <= {200, 400}, [a.text for a in refreshes]
        assert all(a.json()["error"] == "invalid_grant" for a in refreshes if a.status_code == 400)
        issued = [a.json() for a in refreshes if a.status_code == 200]
        # Afterwards nothing is active: the session is revoked ...
        ((revoked_at,),) = query(
            process.database_url, "SELECT revoked_at FROM sessions WHERE id = ?", session_id
        )
        assert revoked_at is not None
        active = query(
            process.database_url,
            "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = ? "
            "AND revoked_at IS NULL AND rotated_at IS NULL",
            session_id,
        )
        assert active == [(0,)]
        # ... every refresh token of it refuses, and so does every access token at /v1/me.
        refresh_tokens = {tokens["refresh_token"]} | {pair["refresh_token"] for pair in issued}
        assert len(refresh_tokens) <= 2  # never a fork, even while racing a revocation
        for token in refresh_tokens:
            again = httpx.post(
                process.url + "/oauth2/token",
                data={"grant_type": "refresh_token", "refresh_token": token},
                headers={"DPoP": device.proof("POST", "/oauth2/token")},
            )
            assert again.status_code == 400, again.text
            assert again.json()["error"] == "invalid_grant"
        for access_token in [tokens["access_token"]] + [p["access_token"] for p in issued]:
            assert _me(device, access_token).status_code == 401
