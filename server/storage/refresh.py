"""Refresh-token rows: a token rests as its keyed hash, never in plain form. Also the store of
`server.refresh.RefreshService` (`DatabaseRefreshStore`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType

from protocol.dpop import VerifiedDPoPProof
from server.storage.database import (
    Connection,
    Database,
    Row,
    Statement,
    TransactionAttempt,
)
from server.storage.replay import DatabaseReplayStore
from server.storage.sessions import revoke_session_rows

_NEW_TOKEN = (
    "INSERT INTO refresh_tokens (token_hash, session_id, created_at) "
    "VALUES (:hash, :session_id, :now)"
)
# The presented token with its session.
_TOKEN_ROW = (
    "SELECT rt.session_id, rt.rotated_at, rt.child_hash, rt.revoked_at, s.user_id, "
    "s.dpop_jkt, s.revoked_at AS session_revoked_at, s.expires_at, s.last_used_at, "
    "s.auth_time, u.disabled_at AS user_disabled_at FROM refresh_tokens rt "
    "JOIN sessions s ON s.id = rt.session_id JOIN users u ON u.id = s.user_id "
    "WHERE rt.token_hash = :hash"
)
_CLAIM = (
    "UPDATE refresh_tokens SET rotated_at = :now, child_hash = :child "
    "WHERE token_hash = :hash AND rotated_at IS NULL AND revoked_at IS NULL "
    "RETURNING token_hash"
)
_TOUCH = "UPDATE sessions SET last_used_at = :now WHERE id = :id"
_CHILD = "SELECT rotated_at, revoked_at FROM refresh_tokens WHERE token_hash = :hash"


def refresh_token_row(*, token_hash: str, session_id: str, now: int) -> Statement:
    """The insert that stores a session's new refresh token by its hash."""
    return (_NEW_TOKEN, {"hash": token_hash, "session_id": session_id, "now": now})


@dataclass(frozen=True, slots=True)
class PresentedToken:
    """A presented refresh token with its session, as one read found them."""

    session_id: str
    user_id: str
    dpop_jkt: str
    auth_time: int
    session_expires_at: int
    session_last_used_at: int
    session_revoked: bool
    user_disabled: bool
    token_revoked: bool
    rotated_at: int | None
    # The hash of the child that replaced the token at its rotation.
    child_hash: str | None


@dataclass(frozen=True, slots=True)
class ChildToken:
    rotated: bool
    revoked: bool


class Rotation:
    """The steps of one refresh, inside one attempt's transaction, on the presented token."""

    def __init__(self, conn: Connection, *, replay: DatabaseReplayStore, token_hash: str) -> None:
        self._conn = conn
        self._replay = replay
        self._hash = token_hash

    async def record_proof_and_read(
        self, proof: VerifiedDPoPProof, *, now: int
    ) -> PresentedToken | None:
        """The replay entry and the read of the token, in one round trip on PostgreSQL; a
        replay raises InvalidDPoPProof."""
        rows = await self._replay.record_in(
            self._conn, proof, now=now, read=(_TOKEN_ROW, {"hash": self._hash})
        )
        return _presented(rows[0]) if rows else None

    async def read_again(self) -> PresentedToken | None:
        """The token as committed now (after a lost claim at READ COMMITTED)."""
        row = await self._conn.fetch_one(_TOKEN_ROW, {"hash": self._hash})
        return None if row is None else _presented(row)

    async def claim(self, *, child_hash: str, now: int) -> bool:
        """Mark the token rotated to `child_hash` if it is neither rotated nor revoked: one
        conditional statement, so that one of concurrent claims wins."""
        won = await self._conn.fetch_one(
            _CLAIM, {"now": now, "child": child_hash, "hash": self._hash}
        )
        return won is not None

    async def add_child(self, *, child_hash: str, session_id: str, now: int) -> None:
        """Store the child and count the rotation as a use of the session, in one round trip."""
        await self._conn.run_together(
            [
                refresh_token_row(token_hash=child_hash, session_id=session_id, now=now),
                (_TOUCH, {"now": now, "id": session_id}),
            ]
        )

    async def child(self, *, child_hash: str) -> ChildToken | None:
        row = await self._conn.fetch_one(_CHILD, {"hash": child_hash})
        if row is None:
            return None
        return ChildToken(
            rotated=row["rotated_at"] is not None, revoked=row["revoked_at"] is not None
        )

    async def end_session(self, *, session_id: str, reason: str, now: int) -> None:
        await revoke_session_rows(self._conn, session_id=session_id, reason=reason, now=now)


class RotationAttempt:
    """One transaction of `DatabaseRefreshStore.rotations`: `async with` gives its `Rotation`
    (`TransactionAttempt` says what a conflict does)."""

    def __init__(
        self, attempt: TransactionAttempt, *, replay: DatabaseReplayStore, token_hash: str
    ) -> None:
        self._attempt = attempt
        self._replay = replay
        self._hash = token_hash

    async def __aenter__(self) -> Rotation:
        conn = await self._attempt.__aenter__()
        return Rotation(conn, replay=self._replay, token_hash=self._hash)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        return await self._attempt.__aexit__(exc_type, exc, traceback)


class DatabaseRefreshStore:
    """Rotations in the database. Everything of one refresh commits in one transaction, and a
    serialization conflict runs it again, as `Database.run` does (`Database.attempts`). The
    flow drives the steps itself rather than handing a function down: `rotations` yields
    attempts, each a context manager holding one transaction,

        async for attempt in store.rotations(token_hash=...):
            async with attempt as rotation:
                outcome = ...  # the flow's steps on `rotation`

    and stops after the first attempt that ends without a conflict. The outcome of the last
    attempt is the one that committed."""

    def __init__(self, db: Database, *, replay: DatabaseReplayStore) -> None:
        self._db = db
        self._replay = replay

    async def rotations(self, *, token_hash: str) -> AsyncIterator[RotationAttempt]:
        async for attempt in self._db.attempts():
            yield RotationAttempt(attempt, replay=self._replay, token_hash=token_hash)


def _presented(row: Row) -> PresentedToken:
    return PresentedToken(
        session_id=row["session_id"],
        user_id=row["user_id"],
        dpop_jkt=row["dpop_jkt"],
        auth_time=int(row["auth_time"]),
        session_expires_at=int(row["expires_at"]),
        session_last_used_at=int(row["last_used_at"]),
        session_revoked=row["session_revoked_at"] is not None,
        user_disabled=row["user_disabled_at"] is not None,
        token_revoked=row["revoked_at"] is not None,
        rotated_at=None if row["rotated_at"] is None else int(row["rotated_at"]),
        child_hash=row["child_hash"],
    )
