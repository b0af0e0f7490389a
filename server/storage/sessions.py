"""Session rows: what makes a session live, how one ends with its refresh tokens, and the store
of `server.sessions.SessionService` (`DatabaseSessionStore`)."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.dpop import VerifiedDPoPProof
from server.storage.database import Connection, Database, Row
from server.storage.replay import DatabaseReplayStore

# A session is live while it is not revoked, not past its absolute end and not idle too long
# (`live_window` gives its parameters).
LIVE = "s.revoked_at IS NULL AND s.expires_at > :now AND s.last_used_at > :idle_cutoff"

# The session with its user's address, if the session is live and its user is not disabled.
_LIVE_SESSION = (
    "SELECT s.id, s.user_id, s.device_name, s.key_alg, s.dpop_jkt, s.created_at, "  # noqa: S608 - constants
    "s.last_used_at, s.expires_at, s.auth_time, u.email_address "
    "FROM sessions s JOIN users u ON u.id = s.user_id "
    f"WHERE s.id = :id AND {LIVE} AND u.disabled_at IS NULL"
)
_NOTE_USE = "UPDATE sessions SET last_used_at = :now WHERE id = :id AND last_used_at < :now"
_USERS_LIVE = (
    "SELECT s.id, s.device_name, s.key_alg, s.created_at, s.last_used_at, "  # noqa: S608 - constants
    f"s.expires_at FROM sessions s WHERE s.user_id = :user_id AND {LIVE}"
)
_OWNED_LIVE = (
    "SELECT s.id FROM sessions s WHERE s.id = :id AND s.user_id = :user_id "  # noqa: S608 - constants
    f"AND {LIVE}"
)
_USERS_UNREVOKED = "SELECT id FROM sessions WHERE user_id = :user_id AND revoked_at IS NULL"
_SESSION_OF_REFRESH_TOKEN = "SELECT session_id FROM refresh_tokens WHERE token_hash = :hash"
_CURRENT_REFRESH_TOKEN = (
    "SELECT s.id, s.user_id, s.dpop_jkt, s.expires_at, rt.created_at "  # noqa: S608 - constants
    "FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id "
    "JOIN users u ON u.id = s.user_id "
    "WHERE rt.token_hash = :hash AND rt.rotated_at IS NULL AND rt.revoked_at IS NULL "
    f"AND {LIVE} AND u.disabled_at IS NULL"
)


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


async def revoke_user_sessions(
    conn: Connection, *, user_id: str, reason: str, now: int
) -> list[str]:
    """End every session of the user not ended yet, each with its refresh tokens: their ids."""
    rows = await conn.fetch_all(_USERS_UNREVOKED, {"user_id": user_id})
    for row in rows:
        await revoke_session_rows(conn, session_id=row["id"], reason=reason, now=now)
    return [str(row["id"]) for row in rows]


@dataclass(frozen=True, slots=True)
class LiveSession:
    """A live session and its user's address, as read at the start of the request."""

    id: str
    user_id: str
    email_address: str
    device_name: str | None
    key_alg: str
    # The thumbprint of the key the session is bound to.
    dpop_jkt: str
    created_at: int
    last_used_at: int
    expires_at: int
    auth_time: int


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """One of a user's live sessions, as the session list shows it: no token material."""

    id: str
    device_name: str | None
    key_alg: str
    created_at: int
    last_used_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class CurrentRefreshToken:
    """A refresh token neither rotated nor revoked, of a live session (introspection)."""

    session_id: str
    user_id: str
    dpop_jkt: str
    session_expires_at: int
    created_at: int


class DatabaseSessionStore:
    """Sessions in the database. A session read with a proof writes the replay entry beside
    the read: one round trip on PostgreSQL (`DatabaseReplayStore.record_beside`)."""

    def __init__(self, db: Database, *, replay: DatabaseReplayStore, idle_timeout: int) -> None:
        self._db = db
        self._replay = replay
        self._idle_timeout = idle_timeout

    def _window(self, now: int) -> dict[str, int]:
        return live_window(now, idle_timeout=self._idle_timeout)

    async def read_live_recording(
        self, session_id: str, *, proof: VerifiedDPoPProof, now: int
    ) -> LiveSession | None:
        rows = await self._replay.record_beside(
            proof, now=now, read=(_LIVE_SESSION, {"id": session_id, **self._window(now)})
        )
        return _live_session(rows)

    async def read_live(self, session_id: str, *, now: int) -> LiveSession | None:
        rows = await self._db.statement(_LIVE_SESSION, {"id": session_id, **self._window(now)})
        return _live_session(rows)

    async def note_use(self, session_id: str, *, now: int) -> None:
        await self._db.statement(_NOTE_USE, {"id": session_id, "now": now})

    async def list_live(self, user_id: str, *, now: int) -> list[SessionSummary]:
        async with self._db.autocommit() as conn:
            rows = await conn.fetch_all(_USERS_LIVE, {"user_id": user_id, **self._window(now)})
        return [
            SessionSummary(
                id=row["id"],
                device_name=row["device_name"],
                key_alg=row["key_alg"],
                created_at=int(row["created_at"]),
                last_used_at=int(row["last_used_at"]),
                expires_at=int(row["expires_at"]),
            )
            for row in rows
        ]

    async def end_live(self, session_id: str, *, user_id: str, reason: str, now: int) -> bool:
        async def end(conn: Connection) -> bool:
            values = {"id": session_id, "user_id": user_id, **self._window(now)}
            if await conn.fetch_one(_OWNED_LIVE, values) is None:
                return False
            return await revoke_session_rows(conn, session_id=session_id, reason=reason, now=now)

        return await self._db.run(end)

    async def end_all(self, user_id: str, *, reason: str, now: int) -> int:
        async def end_all(conn: Connection) -> int:
            ended = await revoke_user_sessions(conn, user_id=user_id, reason=reason, now=now)
            return len(ended)

        return await self._db.run(end_all)

    async def end(self, session_id: str, *, reason: str, now: int) -> bool:
        async def end(conn: Connection) -> bool:
            return await revoke_session_rows(conn, session_id=session_id, reason=reason, now=now)

        return await self._db.run(end)

    async def session_of_refresh_token(self, token_hash: str) -> str | None:
        async with self._db.autocommit() as conn:
            row = await conn.fetch_one(_SESSION_OF_REFRESH_TOKEN, {"hash": token_hash})
        return None if row is None else str(row["session_id"])

    async def current_refresh_token(
        self, token_hash: str, *, now: int
    ) -> CurrentRefreshToken | None:
        async with self._db.autocommit() as conn:
            row = await conn.fetch_one(
                _CURRENT_REFRESH_TOKEN,
                {"hash": token_hash, **self._window(now)},
            )
        if row is None:
            return None
        return CurrentRefreshToken(
            session_id=row["id"],
            user_id=row["user_id"],
            dpop_jkt=row["dpop_jkt"],
            session_expires_at=int(row["expires_at"]),
            created_at=int(row["created_at"]),
        )


def _live_session(rows: list[Row]) -> LiveSession | None:
    if not rows:
        return None
    row = rows[0]
    return LiveSession(
        id=row["id"],
        user_id=row["user_id"],
        email_address=row["email_address"],
        device_name=row["device_name"],
        key_alg=row["key_alg"],
        dpop_jkt=row["dpop_jkt"],
        created_at=int(row["created_at"]),
        last_used_at=int(row["last_used_at"]),
        expires_at=int(row["expires_at"]),
        auth_time=int(row["auth_time"]),
    )
