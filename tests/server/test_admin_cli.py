"""The administration commands, run as the real `splitlink` program against the database of an
in-process server (docs/design.md §4): users, sessions, outbox retry and the audit trail."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from splitlink_client.client import SplitlinkClient
from support.backends import execute
from support.fakes import FakeClock
from support.harness import Harness, running_server
from support.invariants import violations
from support.processes import BIN, ROOT, mail_link, running_server_process

from server.storage.audit import AuditStore

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server(tmp_path: Path, backend: str) -> AsyncIterator[Harness]:
    # The commands read the system clock: the server's starts there too.
    clock = FakeClock(start=int(time.time()))
    # The tests sign one user in several times from one client: the start limits are not theirs.
    async with running_server(
        tmp_path,
        backend=backend,
        clock=clock,
        rate_limit_start_per_email_client=50,
        rate_limit_start_per_email_key=50,
    ) as harness:
        yield harness


# Ids are random base64url and may begin with "-": after "--" they are never read as options.
def splitlink(
    server: Harness, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "SPLITLINK_DATABASE_URL": server.database_url,
        "SPLITLINK_DATA_DIR": str(server.settings.data_dir),
    }
    return subprocess.run(
        [str(BIN / "splitlink"), *args],
        env=env,
        input=stdin or "",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def failed_in_one_line(result: subprocess.CompletedProcess[str], reason: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], result.stderr


async def flush_audit(server: Harness) -> None:
    await server.app.state.audit.flush(AuditStore(server.app.state.services.db))


async def refresh(server: Harness, device: Any, refresh_token: str) -> int:
    response = await server.client.post(
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        headers={"DPoP": device.proof("POST", "/oauth2/token")},
    )
    return response.status_code


async def test_users_show_finds_a_user_by_id_or_by_any_spelling_of_its_address(
    server: Harness,
) -> None:
    await server.login(server.device(), "Alice@Example.com")
    ((user_id,),) = server.query("SELECT id FROM users")
    by_id = succeeded(splitlink(server, "users", "show", "--", user_id))
    by_address = succeeded(splitlink(server, "users", "show", "ALICE@example.COM"))
    assert by_id == by_address
    assert "Alice@example.com" in by_id and "active" in by_id
    assert "live sessions: 1" in by_id
    listing = succeeded(splitlink(server, "users", "list"))
    assert user_id in listing
    failed_in_one_line(splitlink(server, "users", "show", "bob@example.com"), "no user")
    failed_in_one_line(splitlink(server, "users", "show", "not an@address"), "not a valid")


async def test_a_disabled_user_loses_every_session_at_once_and_cannot_sign_in(
    server: Harness,
) -> None:
    phone, laptop = server.device(), server.device()
    on_phone = await server.login(phone, "carol@example.com")
    on_laptop = await server.login(laptop, "carol@example.com")
    # A login under way when the account is disabled cannot complete.
    pending, email_half = await server.start_and_read_link(phone, "carol@example.com")

    output = succeeded(splitlink(server, "users", "disable", "carol@example.com"))
    assert "2 sessions ended" in output

    assert (await server.me(phone, on_phone["access_token"])).status_code == 401
    assert (await server.me(laptop, on_laptop["access_token"])).status_code == 401
    assert await refresh(server, phone, on_phone["refresh_token"]) == 400
    assert server.query("SELECT DISTINCT revoked_reason FROM sessions") == [("user_disabled",)]
    refused = await server.complete_started(phone, pending, email_half)
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "invalid_grant",
        "error_description": "the login attempt cannot be completed; start a new login",
    }
    assert server.events[-1].fields["reason"] == "user_disabled"
    assert server.query("SELECT COUNT(*) FROM sessions") == [(2,)]
    rows = server.query(
        "SELECT details FROM audit_events WHERE event = 'session.revoked' ORDER BY id"
    )
    assert [json.loads(details)["reason"] for (details,) in rows] == ["user_disabled"] * 2
    assert server.query("SELECT COUNT(*) FROM audit_events WHERE event = 'user.disabled'") == [(1,)]

    secrets = [on_phone["refresh_token"], on_laptop["refresh_token"], email_half]
    assert violations(server.database_url, secrets=[*secrets, pending["device_half"]]) == []

    # Enabled again, the user signs in with a new login; the ended sessions stay ended.
    assert "enabled" in succeeded(splitlink(server, "users", "enable", "carol@example.com"))
    again = await server.login(phone, "carol@example.com")
    assert (await server.me(phone, again["access_token"])).status_code == 200
    assert (await server.me(laptop, on_laptop["access_token"])).status_code == 401


async def test_a_start_for_a_disabled_address_answers_as_any_other_and_queues_no_mail(
    server: Harness,
) -> None:
    await server.login(server.device(), "dave@example.com")
    succeeded(splitlink(server, "users", "disable", "dave@example.com"))
    (mail_before,) = server.query("SELECT COUNT(*) FROM outbox")
    disabled = await server.start(server.device(), "Dave@example.com")
    unknown = await server.start(server.device(), "nobody@example.com")
    assert disabled.status_code == unknown.status_code == 202
    assert disabled.json().keys() == unknown.json().keys()
    assert disabled.headers.keys() == unknown.headers.keys()
    # The unknown address gets its login link; the disabled one gets nothing.
    assert server.query("SELECT COUNT(*) FROM outbox") == [(mail_before[0] + 1,)]
    # The first login's link and notice, and nothing since.
    assert server.query("SELECT COUNT(*) FROM outbox WHERE recipient = ?", "dave@example.com") == [
        (2,)
    ]


async def test_users_delete_erases_the_rows_of_the_user_and_its_address(server: Harness) -> None:
    device = server.device()
    await server.login(device, "erin@example.com")
    await server.start(server.device(), "Erin@Example.com")
    await server.deliver()
    await server.login(server.device(), "frank@example.com")
    await flush_audit(server)
    ((erin,),) = server.query("SELECT id FROM users WHERE email_canonical = 'erin@example.com'")

    declined = splitlink(server, "users", "delete", erin, stdin="n\n")
    assert declined.returncode != 0 and "Traceback" not in declined.stderr
    assert server.query("SELECT COUNT(*) FROM users") == [(2,)]

    output = succeeded(splitlink(server, "users", "delete", "erin@example.com", "--yes"))
    counts = {line.split()[0]: line.split()[1:] for line in output.splitlines()[1:]}
    assert counts == {
        "outbox_tries": ["3", "deleted"],
        "outbox": ["3", "deleted"],
        "refresh_tokens": ["1", "deleted"],
        "sessions": ["1", "deleted"],
        "login_attempts": ["2", "deleted"],
        "users": ["1", "deleted"],
        "audit_events": ["3", "kept,", "client", "address", "cleared"],
    }
    assert server.query("SELECT email_canonical FROM users") == [("frank@example.com",)]
    assert server.query("SELECT COUNT(*) FROM login_attempts") == [(1,)]
    assert server.query("SELECT COUNT(*) FROM sessions") == [(1,)]
    assert server.query(
        "SELECT COUNT(*) FROM outbox WHERE lower(recipient) = ?", "erin@example.com"
    ) == [(0,)]
    assert "erin@example.com" not in server.dump_database().lower()
    # The trail stays; the deleted user's rows no longer say where the requests came from.
    kept = server.query("SELECT user_id, client_address FROM audit_events WHERE event <> ?", "x")
    assert {address for user, address in kept if user == erin} == {None}
    # Her two logins' three rows, and the row of the deletion itself.
    assert server.query("SELECT COUNT(*) FROM audit_events WHERE client_address IS NULL") == [(4,)]
    assert ("203.0.113.7",) in {(address,) for user, address in kept if user != erin}
    assert server.query(
        "SELECT COUNT(*) FROM audit_events WHERE event = 'user.deleted' AND user_id = ?", erin
    ) == [(1,)]
    failed_in_one_line(splitlink(server, "users", "delete", erin, "--yes"), "no user")


async def test_sessions_are_listed_and_revoked_by_id_or_all_of_a_user(server: Harness) -> None:
    phone, laptop, other = server.device(), server.device(), server.device()
    on_phone = await server.login(phone, "gina@example.com")
    on_laptop = await server.login(laptop, "gina@example.com")
    on_other = await server.login(other, "hank@example.com")
    ((phone_session,),) = server.query("SELECT id FROM sessions WHERE dpop_jkt = ?", phone.jkt)
    listing = succeeded(splitlink(server, "sessions", "list", "--user", "gina@example.com"))
    assert len(listing.strip().splitlines()) == 3 and phone_session in listing
    assert on_phone["refresh_token"] not in listing

    succeeded(splitlink(server, "sessions", "revoke", "--", phone_session))
    assert (await server.me(phone, on_phone["access_token"])).status_code == 401
    assert (await server.me(laptop, on_laptop["access_token"])).status_code == 200
    failed_in_one_line(
        splitlink(server, "sessions", "revoke", "--", phone_session), "no live session"
    )

    output = succeeded(
        splitlink(server, "sessions", "revoke", "--user", "gina@example.com", "--all")
    )
    assert "1 sessions ended" in output
    assert (await server.me(laptop, on_laptop["access_token"])).status_code == 401
    assert (await server.me(other, on_other["access_token"])).status_code == 200
    assert server.query(
        "SELECT DISTINCT revoked_reason FROM sessions WHERE revoked_at IS NOT NULL"
    ) == [("revoked_by_admin",)]
    usage = splitlink(server, "sessions", "revoke", "--user", "gina@example.com")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


async def test_outbox_retry_makes_backed_off_and_given_up_mail_due_and_refuses_the_rest(
    server: Harness,
) -> None:
    for name in ("backoff", "gaveup", "refused", "sent"):
        await server.start(server.device(), f"{name}@example.com")
    later = server.clock.now() + 3600
    server.query(
        "UPDATE outbox SET not_before = ?, tries = 3 WHERE recipient = ? RETURNING id",
        later,
        "backoff@example.com",
    )
    server.query(
        "UPDATE outbox SET status = 'abandoned', tries = 12 WHERE recipient = ? RETURNING id",
        "gaveup@example.com",
    )
    server.query(
        "UPDATE outbox SET status = 'abandoned', sealed_message = NULL WHERE recipient = ? "
        "RETURNING id",
        "refused@example.com",
    )
    server.query(
        "UPDATE outbox SET status = 'sent', sealed_message = NULL WHERE recipient = ? RETURNING id",
        "sent@example.com",
    )
    ids = dict(server.query("SELECT recipient, id FROM outbox"))

    for name in ("backoff", "gaveup"):
        assert "due now" in succeeded(
            splitlink(server, "outbox", "retry", "--", ids[f"{name}@example.com"])
        )
    failed_in_one_line(
        splitlink(server, "outbox", "retry", "--", ids["sent@example.com"]), "was sent already"
    )
    failed_in_one_line(
        splitlink(server, "outbox", "retry", "--", ids["refused@example.com"]),
        "content was dropped",
    )
    failed_in_one_line(splitlink(server, "outbox", "retry", "no-such-id"), "no message")
    # Due from the moment of the command, by the system clock.
    server.clock.current = int(time.time()) + 1
    assert await server.deliver() == 2
    delivered = {message.recipient for message in server.mail.sent}
    assert {"backoff@example.com", "gaveup@example.com"} <= delivered
    # The old form of the listing still works beside `outbox list`.
    assert succeeded(splitlink(server, "outbox")) == succeeded(splitlink(server, "outbox", "list"))


async def test_audit_tail_and_export_print_json_lines(server: Harness) -> None:
    device = server.device()
    await server.login(device, "ivy@example.com")
    await flush_audit(server)
    lines = succeeded(splitlink(server, "audit", "tail", "-n", "1")).splitlines()
    (last,) = (json.loads(line) for line in lines)
    assert last["event"] == "login.completed" and last["jkt"] == device.jkt
    assert last["client_address"] == "203.0.113.7"
    # The id of the completion's request, also in its X-Request-ID header (SPEC.md §10).
    assert isinstance(last["request_id"], str) and len(last["request_id"]) >= 16
    assert set(last["details"]) == {"attempt_id", "session_id"}

    now = server.clock.now()
    everything = succeeded(splitlink(server, "audit", "export")).splitlines()
    assert [json.loads(line)["event"] for line in everything] == [
        "login.started",
        "login.completed",
    ]
    assert succeeded(splitlink(server, "audit", "export", "--since", str(now + 1))) == ""
    assert succeeded(splitlink(server, "audit", "export", "--until", str(now))) == ""
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    assert len(succeeded(splitlink(server, "audit", "export", "--since", iso)).splitlines()) == 2
    bad = splitlink(server, "audit", "export", "--since", "yesterday")
    assert bad.returncode == 2 and "ISO 8601" in bad.stderr


async def test_audit_tail_follow_prints_rows_as_they_come(server: Harness) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "SPLITLINK_DATABASE_URL": server.database_url,
        "SPLITLINK_DATA_DIR": str(server.settings.data_dir),
    }
    with subprocess.Popen(
        [str(BIN / "splitlink"), "audit", "tail", "-n", "5", "--follow", "--interval", "0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as follower:
        try:
            # The trail is empty: whenever the follower starts, it prints every row from the
            # first one on.
            time.sleep(1)
            await server.login(server.device(), "jack@example.com")
            await flush_audit(server)
            assert follower.stdout is not None
            first = json.loads(follower.stdout.readline())
            second = json.loads(follower.stdout.readline())
        finally:
            follower.terminate()
            follower.communicate(timeout=10)
    assert [first["event"], second["event"]] == ["login.started", "login.completed"]


def test_a_command_on_an_unreachable_database_fails_in_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SPLITLINK_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "SPLITLINK_DATA_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [str(BIN / "splitlink"), "users", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_splitlink_serve_keeps_its_events_in_the_audit_trail(tmp_path: Path) -> None:
    with running_server_process(
        tmp_path, workers=2, extra_env={"SPLITLINK_DEV_MAILBOX_CONSOLE": "false"}
    ) as process:
        with SplitlinkClient(process.url, tmp_path / "device.json") as client:
            started = client.start_login("kim@example.com")
            link = mail_link(process.wait_for_mail(1)[0])
            assert link is not None
            client.complete_login(link)
            tokens = client.state.tokens
            session_id = client.me()["session"]["id"]
            client.logout()
        env = {**process.env, "SPLITLINK_DEV_MAILBOX_CONSOLE": "false"}
        # Each worker writes its rows about once a second; the margin is for a loaded machine.
        deadline = time.monotonic() + 30
        while True:
            tail = subprocess.run(
                [str(BIN / "splitlink"), "audit", "tail", "-n", "10"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            rows = [json.loads(line) for line in tail.stdout.splitlines()]
            if len(rows) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert [row["event"] for row in rows] == ["login.started", "login.completed", "session.revoked"]
    assert rows[0]["details"] == {"attempt_id": started.attempt_id}
    assert rows[2]["details"] == {"session_id": session_id, "reason": "logout"}
    assert {row["client_address"] for row in rows} == {"127.0.0.1"}
    assert rows[1]["user_id"] == rows[2]["user_id"] is not None
    assert tokens is not None
    for secret in (tokens.access_token, tokens.refresh_token, link.rsplit("=", 1)[1]):
        assert secret not in tail.stdout


async def test_enabling_a_user_ends_and_reports_a_session_that_raced_the_disable(
    server: Harness,
) -> None:
    phone = server.device()
    raced = await server.login(phone, "dave@example.com")
    # What a completion racing `users disable` leaves: the user disabled, the session not ended.
    execute(server.database_url, "UPDATE users SET disabled_at = ?", server.clock.now())

    assert "enabled" in succeeded(splitlink(server, "users", "enable", "dave@example.com"))

    assert (await server.me(phone, raced["access_token"])).status_code == 401
    rows = server.query("SELECT details FROM audit_events WHERE event = 'session.revoked'")
    assert [json.loads(details)["reason"] for (details,) in rows] == ["user_disabled"]
