"""Starting a login reveals nothing about the address, creates no account and sends no mail
inside the request (SPEC.md §6.1; threats.md C10, F3, F4)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from support.backends import database_url_for
from support.harness import Harness, running_server
from support.mail_harness import record_rendering

pytestmark = pytest.mark.anyio

# x-request-id: a fresh random id per request (SPEC.md §10).
_VOLATILE = {"date", "content-length", "x-request-id"}


def shape(response: httpx.Response) -> tuple[int, list[str], dict[str, str], dict[str, type]]:
    headers = {k: v for k, v in response.headers.items() if k not in _VOLATILE}
    body = response.json()
    return response.status_code, sorted(headers), headers, {k: type(v) for k, v in body.items()}


async def test_unknown_and_known_addresses_get_the_same_answer(server: Harness) -> None:
    await server.login(server.device(), "known@example.com")
    known = await server.start(server.device(), "known@example.com")
    unknown = await server.start(server.device(), "unknown@example.com")
    assert shape(known) == shape(unknown)
    assert len(known.json()["device_half"]) == len(unknown.json()["device_half"])


async def test_start_creates_no_user_and_sends_nothing_in_the_request(server: Harness) -> None:
    response = await server.start(server.device(), "new@example.com")
    assert response.status_code == 202
    assert server.query("SELECT COUNT(*) FROM users") == [(0,)]
    assert server.mail.sent == []
    assert server.query("SELECT status FROM outbox") == [("queued",)]
    await server.deliver()
    assert len(server.mail.sent) == 1


async def test_start_queues_an_unrendered_order_for_known_and_unknown_addresses_alike(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_server(tmp_path, backend=backend, signup_policy="closed") as server:
        server.query(
            "INSERT INTO users (id, email_canonical, email_address, created_at) "
            "VALUES ('member', 'member@example.com', 'member@example.com', 0) RETURNING id"
        )
        rendering = record_rendering(monkeypatch)
        for email in ("member@example.com", "stranger@example.com"):
            assert (await server.start(server.device(), email)).status_code == 202
        # A login link for one, a "no account" notice for the other, and for both only a sealed
        # order in the request: the QR code and the message come later, from the dispatcher.
        assert rendering == []
        rows = server.query("SELECT recipient, kind, sealed_message FROM outbox ORDER BY recipient")
        assert [(recipient, kind) for recipient, kind, _ in rows] == [
            ("member@example.com", "login_link"),
            ("stranger@example.com", "no_account"),
        ]
        assert all(sealed for _, _, sealed in rows)
        await server.deliver()
    assert sorted(rendering) == ["login_link", "no_account", "qr_png"]


async def test_closed_signup_never_completes_for_unknown_addresses(
    tmp_path: Path, backend: str
) -> None:
    async with running_server(tmp_path, backend=backend, signup_policy="closed") as server:
        device = server.device()
        response = await server.start(device, "stranger@example.com")
        assert response.status_code == 202
        await server.deliver()
        (mail,) = server.mail.sent
        assert "no splitlink account" in mail.text
        assert "#attempt_id=" not in mail.text
        started = response.json()
        # Without the email half nobody can complete; even a guessed half is one more failure.
        import os

        from protocol.encoding import b64url_encode

        attempt = await server.complete(
            device,
            attempt_id=started["attempt_id"],
            device_half=started["device_half"],
            email_half=b64url_encode(os.urandom(32)),
        )
        assert attempt.json()["error"] == "invalid_grant"
        assert server.query("SELECT COUNT(*) FROM users") == [(0,)]


async def test_closed_signup_answers_like_open_signup(tmp_path: Path, backend: str) -> None:
    (tmp_path / "open").mkdir()
    (tmp_path / "closed").mkdir()
    async with running_server(tmp_path / "open", backend=backend) as open_server:
        open_answer = await open_server.start(open_server.device(), "x@example.com")
    async with running_server(
        tmp_path / "closed", backend=backend, signup_policy="closed"
    ) as closed_server:
        closed_answer = await closed_server.start(closed_server.device(), "x@example.com")
    assert shape(open_answer) == shape(closed_answer)


async def test_closed_signup_still_lets_existing_accounts_in(tmp_path: Path, backend: str) -> None:
    with database_url_for(backend, tmp_path) as url:
        async with running_server(tmp_path, database_url=url, signup_policy="open") as server:
            await server.login(server.device(), "member@example.com")
        async with running_server(tmp_path, database_url=url, signup_policy="closed") as server:
            tokens = await server.login(server.device(), "member@example.com")
            assert tokens["token_type"] == "DPoP"
