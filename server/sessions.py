"""Sessions: one per completed login, bound to the device key that completed it (SPEC.md §6.6).

Ending a session revokes it and every refresh token of its family in one transaction; the
server's own endpoints look the session up on every request, so the end is visible at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.access_token import VerifiedAccessToken
from protocol.dpop import VerifiedDPoPProof
from server.storage.database import Connection, Database, Row
from server.storage.replay import DatabaseReplayStore
from server.storage.sessions import LIVE, live_window, revoke_session_rows

# Writing last_used_at on every request would turn every read into a write; a minute is
# precise enough for the idle timeout and for "last used" in the session list.
LAST_USED_RESOLUTION = 60

# The token's session with its user's address, if the session is live (see `_window`) and its
# user is not disabled.
_LIVE_SESSION = (
    "SELECT s.id, s.user_id, s.device_name, s.key_alg, s.dpop_jkt, s.created_at, "  # noqa: S608 - constants
    "s.last_used_at, s.expires_at, s.auth_time, u.email_address "
    "FROM sessions s JOIN users u ON u.id = s.user_id "
    f"WHERE s.id = :id AND {LIVE} AND u.disabled_at IS NULL"
)


@dataclass(frozen=True, slots=True)
class LiveSession:
    """A live session and its user's address, as read at the start of the request."""

    id: str
    user_id: str
    email_address: str
    device_name: str | None
    key_alg: str
    created_at: int
    last_used_at: int
    expires_at: int
    auth_time: int


class SessionStore:
    """Also the session lookup of the server's own `/v1/` endpoints (server/dpop/lookup.py): it
    records the request's proof with its read of the session."""

    # The replay entry and the session read are one round trip (SPEC.md §6.5 step 7).
    records_proof = True

    def __init__(self, db: Database, *, idle_timeout: int, replay: DatabaseReplayStore) -> None:
        self._db = db
        self.idle_timeout = idle_timeout
        self._replay = replay

    def _window(self, now: int) -> dict[str, int]:
        return live_window(now, idle_timeout=self.idle_timeout)

    async def live_session(
        self, token: VerifiedAccessToken, *, proof: VerifiedDPoPProof, now: int
    ) -> LiveSession | None:
        """The token's session if it is live and still bound to the token's user and key, with
        the proof recorded in the replay store in the same round trip; a replay raises
        InvalidDPoPProof, whatever the session. The use counts for the idle timeout."""
        rows = await self._replay.record_beside(
            proof, now=now, read=(_LIVE_SESSION, {"id": token.session_id, **self._window(now)})
        )
        return await self._bound(rows, token, now, touch=True)

    async def inspect(self, token: VerifiedAccessToken, *, now: int) -> LiveSession | None:
        """The token's live session as `live_session` finds it, without a proof and without
        counting as a use (introspection)."""
        rows = await self._db.statement(
            _LIVE_SESSION, {"id": token.session_id, **self._window(now)}
        )
        return await self._bound(rows, token, now, touch=False)

    async def _bound(
        self, rows: list[Row], token: VerifiedAccessToken, now: int, *, touch: bool
    ) -> LiveSession | None:
        row = rows[0] if rows else None
        if row is None or row["user_id"] != token.subject or row["dpop_jkt"] != token.jkt:
            return None
        if touch and int(row["last_used_at"]) <= now - LAST_USED_RESOLUTION:
            await self._db.statement(
                "UPDATE sessions SET last_used_at = :now WHERE id = :id AND last_used_at < :now",
                {"id": token.session_id, "now": now},
            )
        return LiveSession(
            id=row["id"],
            user_id=row["user_id"],
            email_address=row["email_address"],
            device_name=row["device_name"],
            key_alg=row["key_alg"],
            created_at=int(row["created_at"]),
            last_used_at=int(row["last_used_at"]),
            expires_at=int(row["expires_at"]),
            auth_time=int(row["auth_time"]),
        )

    async def list_live(self, user_id: str, now: int) -> list[dict[str, Any]]:
        async with self._db.autocommit() as conn:
            rows = await conn.fetch_all(
                "SELECT s.id, s.device_name, s.key_alg, s.created_at, s.last_used_at, "
                "s.expires_at FROM sessions s WHERE s.user_id = :user_id "
                "AND s.revoked_at IS NULL AND s.expires_at > :now "
                "AND s.last_used_at > :idle_cutoff",
                {"user_id": user_id, **self._window(now)},
            )
        # Oldest first, then by id as ASCII text (SPEC.md §6.6). Sorted here, not by ORDER BY:
        # PostgreSQL orders text by the database's collation, which need not be byte order.
        return sorted((dict(row) for row in rows), key=lambda row: (row["created_at"], row["id"]))

    async def end(self, session_id: str, *, user_id: str, reason: str, now: int) -> bool:
        """End one of the user's live sessions; False if it is not one (unknown or another
        user's: the caller cannot tell which)."""

        async def end(conn: Connection) -> bool:
            owned = await conn.fetch_one(
                "SELECT s.id FROM sessions s WHERE s.id = :id AND s.user_id = :user_id "
                "AND s.revoked_at IS NULL AND s.expires_at > :now "
                "AND s.last_used_at > :idle_cutoff",
                {"id": session_id, "user_id": user_id, **self._window(now)},
            )
            if owned is None:
                return False
            return await revoke_session_rows(conn, session_id=session_id, reason=reason, now=now)

        return await self._db.run(end)

    async def end_all(self, user_id: str, *, reason: str, now: int) -> int:

        async def end_all(conn: Connection) -> int:
            rows = await conn.fetch_all(
                "SELECT id FROM sessions WHERE user_id = :user_id AND revoked_at IS NULL",
                {"user_id": user_id},
            )
            for row in rows:
                await revoke_session_rows(conn, session_id=row["id"], reason=reason, now=now)
            return len(rows)

        return await self._db.run(end_all)
