"""`splitlink serve` writes its log, security events included, to its output (SPEC.md §6.12), and
no secret ever reaches it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from splitlink_client.client import SplitlinkClient
from support.processes import BIN, ServerProcess, mail_link, running_server_process

from server.keyring import DEV_SECRET_FILE

pytestmark = pytest.mark.slow


def test_serve_logs_security_events_and_the_mail_transport_but_no_secret(tmp_path: Path) -> None:
    # The console copy of the dev mailbox is mail delivery, with the link in it, so it is off:
    # what remains on the output is the log.
    with running_server_process(
        tmp_path, workers=2, extra_env={"SPLITLINK_DEV_MAILBOX_CONSOLE": "false"}
    ) as server:
        with SplitlinkClient(server.url, tmp_path / "device.json") as client:
            started = client.start_login("dana@example.com")
            pending = client.state.pending
            device_key = client.state.key
            link = mail_link(server.wait_for_mail(1)[0])
            assert link is not None
            client.complete_login(link)
            tokens = client.state.tokens
            session_id = client.me()["session"]["id"]
            client.logout()
        log = server.log()
        root_secret = (server.data_dir / DEV_SECRET_FILE).read_text().strip()
    assert pending is not None and tokens is not None and device_key is not None
    jkt = device_key.public.thumbprint
    lines = log.splitlines()

    def logged(*words: str) -> bool:
        return any(all(word in line for word in words) for line in lines)

    assert logged("mail: development mailbox in", str(server.mail_dir))
    assert logged("login.started", f"attempt_id={started.attempt_id}", f"jkt={jkt}")
    assert logged("login.completed", f"attempt_id={started.attempt_id}", f"jkt={jkt}")
    assert logged("session.revoked", f"session_id={session_id}", "reason=logout")
    email_half = link.rsplit("email_half=", 1)[1]
    for secret in (
        pending.device_half,
        email_half,
        tokens.access_token,
        tokens.refresh_token,
        device_key.private_jwk()["d"],
        root_secret,
    ):
        assert secret not in log


def _client(server: ServerProcess, state: Path, *args: str) -> str:
    result = subprocess.run(
        [str(BIN / "splitlink-client"), "--server", server.url, "--state", str(state), *args],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_whole_lifecycle_through_the_command_line_logs_every_request_and_no_secret(
    tmp_path: Path, log_format: str
) -> None:
    state = tmp_path / "device.json"
    with running_server_process(
        tmp_path,
        workers=1,
        extra_env={"SPLITLINK_DEV_MAILBOX_CONSOLE": "false", "SPLITLINK_LOG_FORMAT": log_format},
    ) as server:
        _client(server, state, "login", "finn@example.com", "--device-name", "laptop")
        pending = json.loads(state.read_text())["pending"]
        link = mail_link(server.wait_for_mail(1)[0])
        assert link is not None
        _client(server, state, "complete", link)
        _client(server, state, "me")
        _client(server, state, "refresh")
        saved = json.loads(state.read_text())
        _client(server, state, "logout")
        log = server.log()
        root_secret = (server.data_dir / DEV_SECRET_FILE).read_text().strip()
    secrets = [
        pending["device_half"],
        link.rsplit("email_half=", 1)[1],
        saved["tokens"]["access_token"],
        saved["tokens"]["refresh_token"],
        saved["private_jwk"]["d"],
        root_secret,
    ]
    for secret in secrets:
        assert secret not in log
    # Tokens and DPoP proofs are JWS: none reaches the log, whole or in part.
    assert "eyJ" not in log
    if log_format == "text":
        assert "POST /v1/login/start 202" in log
        assert "login.completed" in log
        return
    records = [json.loads(line) for line in log.splitlines()]
    requests = [r for r in records if r["logger"] == "splitlink.requests"]
    routes = {(r["method"], r["route"], r["status"]) for r in requests}
    assert {
        ("POST", "/v1/login/start", 202),
        ("POST", "/oauth2/token", 200),
        ("GET", "/v1/me", 200),
        ("POST", "/v1/logout", 204),
    } <= routes
    assert all(r["request_id"] and r["client"] == "127.0.0.1" for r in requests)
    events = {r["event"]: r for r in records if "event" in r}
    assert {"login.started", "login.completed", "refresh.rotated", "session.revoked"} <= set(events)
    started = next(r for r in requests if r["route"] == "/v1/login/start")
    assert events["login.started"]["request_id"] == started["request_id"]
