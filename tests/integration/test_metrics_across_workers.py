"""`/metrics` of `splitlink serve --workers 2`: every request on a connection of its own, so both
workers answer some, and one scrape, answered by either, adds up all of them exactly
(README "Metrics")."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route
from support.metrics import Scrape
from support.processes import ServerProcess, running_server_process
from support.races import HttpDevice, email_half_of

from protocol.encoding import b64url_encode
from server.app import create_app
from server.http import UNMATCHED_ROUTE

pytestmark = pytest.mark.slow

TOKEN = "/oauth2/token"


def session_of(access_token: str) -> str:
    payload = access_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sid"])


def refresh(device: HttpDevice, refresh_token: str) -> httpx.Response:
    return httpx.post(
        device.server.url + TOKEN,
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        headers={"DPoP": device.proof("POST", TOKEN)},
    )


def signed(device: HttpDevice, method: str, path: str, access_token: str) -> httpx.Response:
    return httpx.request(
        method,
        device.server.url + path,
        headers={
            "Authorization": f"DPoP {access_token}",
            "DPoP": device.proof(method, path, access_token),
        },
    )


def start_status(server: ServerProcess, email: str) -> int:
    device = HttpDevice.new(server)
    path = "/v1/login/start"
    answer = httpx.post(
        server.url + path, json={"email": email}, headers={"DPoP": device.proof("POST", path)}
    )
    return answer.status_code


def scrape(server: ServerProcess) -> Scrape:
    response = httpx.get(server.url + "/metrics")
    assert response.status_code == 200, response.text
    return Scrape(response.text)


def test_one_scrape_adds_up_the_counts_of_every_worker_exactly(tmp_path: Path) -> None:
    with running_server_process(
        tmp_path,
        workers=2,
        extra_env={
            "SPLITLINK_RATE_LIMIT_START_PER_EMAIL": "2",
            # Above the address's cap, so that the cap is the one limit both refusals pass.
            "SPLITLINK_RATE_LIMIT_START_PER_EMAIL_CLIENT": "100",
            "SPLITLINK_METRICS_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
        },
    ) as server:
        secrets: set[str] = set()
        devices = {name: HttpDevice.new(server) for name in ("alice", "bob", "carol", "dave")}
        tokens = {}
        for name in ("alice", "bob", "carol"):
            tokens[name] = devices[name].login(f"{name}@example.com", mail_count=len(tokens) + 1)
            secrets |= {tokens[name]["refresh_token"], session_of(tokens[name]["access_token"])}

        # Five wrong email halves lock dave's attempt; then the right one is refused as locked.
        dave = devices["dave"]
        started = dave.start("dave@example.com")
        right = dave.completion_form(started, email_half_of(server, started["attempt_id"], 4))
        secrets |= {started["attempt_id"], started["device_half"], right["email_half"]}
        for _ in range(5):
            wrong = {**right, "email_half": b64url_encode(os.urandom(32))}
            answer = httpx.post(
                server.url + TOKEN, data=wrong, headers={"DPoP": dave.proof("POST", TOKEN)}
            )
            assert answer.status_code == 400
        answer = httpx.post(
            server.url + TOKEN, data=right, headers={"DPoP": dave.proof("POST", TOKEN)}
        )
        assert answer.json().get("attempt_state") == "locked"

        # Two rotations, then the first token again: reuse, which ends alice's session.
        alice = devices["alice"]
        first = tokens["alice"]["refresh_token"]
        second = refresh(alice, first).json()["refresh_token"]
        assert refresh(alice, second).status_code == 200
        assert refresh(alice, first).status_code == 400

        bob, carol = tokens["bob"], tokens["carol"]
        assert signed(devices["bob"], "POST", "/v1/logout", bob["access_token"]).status_code == 204
        ended = signed(
            devices["carol"],
            "DELETE",
            f"/v1/sessions/{session_of(carol['access_token'])}",
            carol["access_token"],
        )
        assert ended.status_code == 204

        # The per-address start limit is 2: the third and fourth starts are refused.
        statuses = [start_status(server, "eve@example.com") for _ in range(4)]
        assert statuses == [202, 202, 429, 429]

        # From 127.0.0.2, outside the allowed networks: the answer of an unknown path.
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as outsider:
            assert outsider.get(server.url + "/metrics").status_code == 404

        # Once every message is handed off, the scrape agrees with the mailbox.
        deadline = time.monotonic() + 10
        while (result := scrape(server)).value("splitlink_outbox_queued_messages") != 0:
            assert time.monotonic() < deadline, "the outbox did not empty"
            time.sleep(0.1)
        mailed = len(list(server.mail_dir.glob("*.eml")))
        # Both workers answered requests: a worker's histogram file appears with its first.
        (metrics_dir,) = (server.data_dir / "metrics").glob("serve-*")
        assert len(list(metrics_dir.glob("histogram_*.db"))) == 2
        secrets |= {device.key.public.thumbprint for device in devices.values()}
    # `splitlink serve` removes its metrics directory when it stops.
    assert not metrics_dir.exists()

    assert result.value("splitlink_logins_started_total") == 6
    assert result.value("splitlink_logins_completed_total") == 3
    assert result.by_label("splitlink_logins_failed_total", "reason") == {
        "unknown_attempt": 0,
        "mismatch": 5,
        "consumed": 0,
        "locked": 1,
        "expired": 0,
        "no_account": 0,
    }
    assert result.value("splitlink_attempts_locked_total") == 1
    assert result.value("splitlink_refreshes_total", outcome="rotated") == 2
    assert result.value("splitlink_refreshes_total", outcome="reused") == 1
    assert result.total("splitlink_refreshes_total") == 3
    assert result.value("splitlink_refresh_token_reuse_detected_total") == 1
    assert result.by_label("splitlink_sessions_ended_total", "reason") == {
        "refresh_token_reused": 1,
        "revocation": 0,
        "ended_by_user": 1,
        "logout": 1,
        "logout_all": 0,
    }
    # Counted by scope, whatever the scopes are named: two refusals of one limit.
    assert list(result.by_label("splitlink_rate_limit_refusals_total", "limit").values()) == [2]
    assert result.value("splitlink_outbox_tries_total", outcome="sent") == mailed
    assert result.total("splitlink_outbox_tries_total") == mailed
    assert result.value("splitlink_database_up") == 1
    # This scrape itself, whichever worker answers it.
    assert result.value("splitlink_http_requests_in_progress") == 1

    requests = "splitlink_http_requests_total"
    assert result.value(requests, route=TOKEN, method="POST", status="200") == 3 + 2
    assert result.value(requests, route=TOKEN, method="POST", status="400") == 6 + 1
    assert result.value(requests, route="/v1/login/start", method="POST", status="202") == 6
    assert result.value(requests, route="/v1/login/start", method="POST", status="429") == 2
    assert result.value(requests, route="/v1/logout", method="POST", status="204") == 1
    assert (
        result.value(requests, route="/v1/sessions/{session_id}", method="DELETE", status="204")
        == 1
    )
    assert result.value(requests, route="/metrics", method="GET", status="404") == 1
    duration = "splitlink_http_request_duration_seconds_count"
    assert result.value(duration, route=TOKEN) == 12

    # No label value is a secret, an address, an id or a raw path.
    templates = {route.path for route in create_app().routes if isinstance(route, Route)}
    for value in result.label_values():
        assert "@" not in value
        assert value not in secrets
        assert not any(secret in value for secret in secrets)
        if "/" in value:
            assert value in templates | {UNMATCHED_ROUTE}, value
