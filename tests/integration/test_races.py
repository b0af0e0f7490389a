"""Races through real, separate connections to 2 workers, on SQLite (file, WAL) and on
PostgreSQL at READ COMMITTED and SERIALIZABLE (docs/design.md §1; threats.md C2, C6, D2, G2, G6)."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator

import httpx
import pytest
from support.backends import postgres_database, query
from support.processes import ServerProcess, running_server_process
from support.races import HttpDevice, email_half_of, race

from protocol.encoding import b64url_encode

pytestmark = pytest.mark.slow

CONFIGURATIONS = ["sqlite", "postgresql-read-committed", "postgresql-serializable"]


@pytest.fixture(scope="module", params=CONFIGURATIONS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server per configuration for the whole module; each test uses its own addresses
    and counts only its own rows."""
    tmp_path = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        with running_server_process(tmp_path, workers=2) as running:
            yield running
        return
    isolation = request.param.removeprefix("postgresql-").replace("-", "_")
    with (
        postgres_database() as url,
        running_server_process(
            tmp_path,
            workers=2,
            database_url=url,
            extra_env={"SPLITLINK_DATABASE_ISOLATION": isolation},
        ) as running,
    ):
        yield running


def count(server: ServerProcess, sql: str, *params: str) -> int:
    ((value,),) = query(server.database_url, sql, *params)
    return int(value)


def session_of(access_token: str) -> str:
    payload = access_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sid"])


def test_concurrent_completions_of_one_attempt_yield_exactly_one_session(
    server: ServerProcess,
) -> None:
    device = HttpDevice.new(server)
    started = device.start("race@example.com")
    form = device.completion_form(started, email_half_of(server, started["attempt_id"], 1))
    proofs = [device.proof("POST", "/oauth2/token") for _ in range(12)]
    answers = race(
        server,
        [
            lambda c, p=p: c.post("/oauth2/token", data=form, headers={"DPoP": p})  # type: ignore[misc]
            for p in proofs
        ],
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [400] * 11, [a.text for a in answers]
    assert {a.json()["error"] for a in answers if a.status_code == 400} == {"invalid_grant"}
    attempt = started["attempt_id"]
    assert count(server, "SELECT COUNT(*) FROM sessions WHERE attempt_id = ?", attempt) == 1
    assert (
        count(
            server,
            "SELECT COUNT(*) FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id "
            "WHERE s.attempt_id = ?",
            attempt,
        )
        == 1
    )
    assert (
        count(server, "SELECT COUNT(*) FROM users WHERE email_canonical = ?", "race@example.com")
        == 1
    )


def test_concurrent_wrong_halves_cannot_outrun_the_lock(server: ServerProcess) -> None:
    device = HttpDevice.new(server)
    started = device.start("brute@example.com")
    right = device.completion_form(started, email_half_of(server, started["attempt_id"], 1))
    wrong = {**right, "email_half": b64url_encode(os.urandom(32))}
    proofs = [device.proof("POST", "/oauth2/token") for _ in range(20)]
    answers = race(
        server,
        [
            lambda c, p=p: c.post("/oauth2/token", data=wrong, headers={"DPoP": p})  # type: ignore[misc]
            for p in proofs
        ],
    )
    assert {a.status_code for a in answers} == {400}
    # Every failure was counted: none was lost to a concurrent update.
    attempt = started["attempt_id"]
    assert count(server, "SELECT failed_count FROM login_attempts WHERE id = ?", attempt) == 20
    after = httpx.post(
        server.url + "/oauth2/token",
        data=right,
        headers={"DPoP": device.proof("POST", "/oauth2/token")},
    )
    assert after.status_code == 400
    assert "locked" in after.json()["error_description"]
    assert count(server, "SELECT COUNT(*) FROM sessions WHERE attempt_id = ?", attempt) == 0


def test_concurrent_first_logins_with_two_spellings_make_one_user(server: ServerProcess) -> None:
    first, second = HttpDevice.new(server), HttpDevice.new(server)
    started_first = first.start("Twin@Example.com")
    started_second = second.start("twin@example.COM")
    form_first = first.completion_form(
        started_first, email_half_of(server, started_first["attempt_id"], 2)
    )
    form_second = second.completion_form(
        started_second, email_half_of(server, started_second["attempt_id"], 2)
    )
    proof_first = first.proof("POST", "/oauth2/token")
    proof_second = second.proof("POST", "/oauth2/token")
    answers = race(
        server,
        [
            lambda c: c.post("/oauth2/token", data=form_first, headers={"DPoP": proof_first}),
            lambda c: c.post("/oauth2/token", data=form_second, headers={"DPoP": proof_second}),
        ],
    )
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    twin = "twin@example.com"
    assert count(server, "SELECT COUNT(*) FROM users WHERE email_canonical = ?", twin) == 1
    assert (
        count(
            server,
            "SELECT COUNT(*) FROM sessions s JOIN users u ON u.id = s.user_id "
            "WHERE u.email_canonical = ?",
            twin,
        )
        == 2
    )


def test_concurrent_refreshes_of_one_token_yield_one_child(server: ServerProcess) -> None:
    device = HttpDevice.new(server)
    tokens = device.login("refresh@example.com", 1)
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    proofs = [device.proof("POST", "/oauth2/token") for _ in range(10)]
    answers = race(
        server,
        [
            lambda c, p=p: c.post("/oauth2/token", data=form, headers={"DPoP": p})  # type: ignore[misc]
            for p in proofs
        ],
    )
    assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers]
    assert len({a.json()["refresh_token"] for a in answers}) == 1
    sid = session_of(tokens["access_token"])
    family = "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = ?"
    assert count(server, family, sid) == 2
    assert count(server, family + " AND rotated_at IS NULL", sid) == 1
    assert (
        count(server, "SELECT COUNT(*) FROM sessions WHERE id = ? AND revoked_at IS NULL", sid) == 1
    )


def test_revoke_racing_refresh_leaves_nothing_active(server: ServerProcess) -> None:
    device = HttpDevice.new(server)
    tokens = device.login("revoke@example.com", 1)
    refresh_form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    proofs = [device.proof("POST", "/oauth2/token") for _ in range(5)]
    requests = [
        lambda c, p=p: c.post("/oauth2/token", data=refresh_form, headers={"DPoP": p})  # type: ignore[misc]
        for p in proofs
    ]
    requests.insert(2, lambda c: c.post("/oauth2/revoke", data={"token": tokens["refresh_token"]}))
    answers = race(server, requests)
    assert answers[2].status_code == 200
    sid = session_of(tokens["access_token"])
    assert (
        count(server, "SELECT COUNT(*) FROM sessions WHERE id = ? AND revoked_at IS NULL", sid) == 0
    )
    assert (
        count(
            server,
            "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = ? "
            "AND revoked_at IS NULL AND rotated_at IS NULL",
            sid,
        )
        == 0
    )
    issued = [a.json() for i, a in enumerate(answers) if i != 2 and a.status_code == 200]
    for pair in issued:
        me = httpx.get(
            server.url + "/v1/me",
            headers={
                "Authorization": f"DPoP {pair['access_token']}",
                "DPoP": device.proof("GET", "/v1/me", pair["access_token"]),
            },
        )
        assert me.status_code == 401
        again = httpx.post(
            server.url + "/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]},
            headers={"DPoP": device.proof("POST", "/oauth2/token")},
        )
        assert again.status_code == 400
