"""Sessions: one per completed login, bound to the device key that completed it."""

from __future__ import annotations

from typing import Any

from protocol.access_token import VerifiedAccessToken
from server.storage.database import Database

# Writing last_used_at on every request would turn every read into a write; a minute is
# precise enough for the idle timeout and for "last used" in the session list.
LAST_USED_RESOLUTION = 60


class SessionStore:
    def __init__(self, db: Database, *, idle_timeout: int) -> None:
        self._db = db
        self._idle_timeout = idle_timeout

    async def live_session(self, token: VerifiedAccessToken, now: int) -> dict[str, Any] | None:
        """The token's session if it is live and still bound to the token's user and key."""
        async with self._db.autocommit() as conn:
            row = await conn.fetch_one(
                "SELECT s.id, s.user_id, s.device_name, s.key_alg, s.dpop_jkt, s.created_at, "
                "s.last_used_at, s.expires_at, s.auth_time, u.email_address "
                "FROM sessions s JOIN users u ON u.id = s.user_id "
                "WHERE s.id = :id AND s.revoked_at IS NULL AND s.expires_at > :now "
                "AND s.last_used_at > :idle_cutoff",
                {"id": token.session_id, "now": now, "idle_cutoff": now - self._idle_timeout},
            )
            if row is None or row["user_id"] != token.subject or row["dpop_jkt"] != token.jkt:
                return None
            if int(row["last_used_at"]) <= now - LAST_USED_RESOLUTION:
                await conn.execute(
                    "UPDATE sessions SET last_used_at = :now "
                    "WHERE id = :id AND last_used_at < :now",
                    {"id": token.session_id, "now": now},
                )
        return dict(row)
