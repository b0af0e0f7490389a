"""A disabled user has no usable session, whatever ended or did not end it (SPEC.md §6.6, §6.7):
the session checks read the user's `disabled_at` with the session."""

from __future__ import annotations

import pytest
from support.backends import execute
from support.harness import Harness

from server.storage.accounts import AccountStore

pytestmark = pytest.mark.anyio


async def test_a_session_left_live_by_a_racing_disable_is_refused_everywhere(
    server: Harness,
) -> None:
    device = server.device()
    tokens = await server.login(device, "raced@example.com")
    # What a completion that raced `users disable` would leave: the user disabled, and a
    # session that the disable did not see.
    execute(server.database_url, "UPDATE users SET disabled_at = ?", server.clock.now())
    assert server.query("SELECT revoked_at FROM sessions") == [(None,)]
    assert (await server.me(device, tokens["access_token"])).status_code == 401
    refreshed = await server.client.post(
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers={"DPoP": device.proof("POST", "/oauth2/token")},
    )
    assert refreshed.status_code == 400
    assert server.events[-1].fields["reason"] == "session_ended"


async def test_enabling_the_user_does_not_revive_a_session_left_by_a_racing_disable(
    server: Harness,
) -> None:
    device = server.device()
    tokens = await server.login(device, "raced@example.com")
    execute(server.database_url, "UPDATE users SET disabled_at = ?", server.clock.now())
    ((user_id,),) = server.query("SELECT id FROM users")
    accounts = AccountStore(server.app.state.services.db)
    enabled = await accounts.enable_user(
        user_id=user_id, reason="user_disabled", now=server.clock.now()
    )
    assert enabled is not None and [session.user_id for session in enabled] == [user_id]
    assert server.query("SELECT revoked_reason FROM sessions") == [("user_disabled",)]
    assert (await server.me(device, tokens["access_token"])).status_code == 401
