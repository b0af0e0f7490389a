"""Session rows: what makes a session live, and how one ends with its refresh tokens."""

from __future__ import annotations

from server.storage.database import Connection

# A session is live while it is not revoked, not past its absolute end and not idle too long
# (`live_window` gives its parameters).
LIVE = "s.revoked_at IS NULL AND s.expires_at > :now AND s.last_used_at > :idle_cutoff"


def live_window(now: int, *, idle_timeout: int) -> dict[str, int]:
    return {"now": now, "idle_cutoff": now - idle_timeout}


async def revoke_session_rows(conn: Connection, *, session_id: str, reason: str, now: int) -> bool:
    row = await conn.fetch_one(
        "UPDATE sessions SET revoked_at = :now, revoked_reason = :reason "
        "WHERE id = :id AND revoked_at IS NULL RETURNING id",
        {"id": session_id, "now": now, "reason": reason},
    )
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = :now WHERE session_id = :id AND revoked_at IS NULL",
        {"id": session_id, "now": now},
    )
    return row is not None
