"""Session rows on both backends: ending a session ends its refresh tokens with it."""

from __future__ import annotations

import pytest
from support.backends import execute, query

from server.storage.database import Database
from server.storage.sessions import revoke_session_rows

pytestmark = pytest.mark.anyio


def _seed(url: str) -> None:
    execute(
        url,
        "INSERT INTO users (id, email_canonical, email_address, created_at) "
        "VALUES ('u1', 'a@example.com', 'a@example.com', 1)",
    )
    execute(
        url,
        "INSERT INTO login_attempts (id, email_canonical, email_address, dpop_jkt, key_alg, "
        "device_half_hash, email_half_hash, signup_allowed, created_at, expires_at, consumed_at) "
        "VALUES ('a1', 'a@example.com', 'a@example.com', 'jkt', 'ES256', 'd', 'e', 1, 1, 9, 2)",
    )
    execute(
        url,
        "INSERT INTO sessions (id, user_id, attempt_id, device_name, dpop_jkt, key_alg, "
        "auth_time, created_at, last_used_at, expires_at) "
        "VALUES ('s1', 'u1', 'a1', NULL, 'jkt', 'ES256', 1, 1, 1, 100)",
    )
    execute(
        url,
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ('h1', 's1', 1)",
    )


async def test_revoking_a_session_revokes_its_refresh_tokens_once(
    database: Database, database_url: str
) -> None:
    _seed(database_url)
    async with database.transaction() as conn:
        first = await revoke_session_rows(conn, session_id="s1", reason="logout", now=5)
    async with database.transaction() as conn:
        again = await revoke_session_rows(conn, session_id="s1", reason="logout", now=6)
    assert (first, again) == (True, False)
    assert query(database_url, "SELECT revoked_at, revoked_reason FROM sessions") == [(5, "logout")]
    assert query(database_url, "SELECT revoked_at FROM refresh_tokens") == [(5,)]
