"""What an operator does to users, sessions and mail (`splitlink users|sessions|outbox`,
docs/design.md §4). Each operation is one transaction and returns what it changed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from protocol.email_address import parse_email_address
from protocol.errors import ErrorCode, SplitlinkError
from server.storage.database import Connection, Database, Row
from server.storage.sessions import revoke_session_rows

# Reasons an operator's action gives, stored as `revoked_reason` and in the events (§6.12).
USER_DISABLED = "user_disabled"
REVOKED_BY_ADMIN = "revoked_by_admin"

_USER = (
    "SELECT u.id, u.email_canonical, u.email_address, u.created_at, u.disabled_at, "
    "(SELECT COUNT(*) FROM sessions s WHERE s.user_id = u.id AND s.revoked_at IS NULL "
    "AND s.expires_at > :now AND s.last_used_at > :idle_cutoff) AS live_sessions "
    "FROM users u"
)


class UnknownUser(SplitlinkError):
    code = ErrorCode.NOT_FOUND


@dataclass(frozen=True)
class User:
    id: str
    email_canonical: str
    email_address: str
    created_at: int
    disabled_at: int | None
    live_sessions: int


def _user(row: Row) -> User:
    return User(
        id=row["id"],
        email_canonical=row["email_canonical"],
        email_address=row["email_address"],
        created_at=int(row["created_at"]),
        disabled_at=None if row["disabled_at"] is None else int(row["disabled_at"]),
        live_sessions=int(row["live_sessions"]),
    )


@dataclass(frozen=True)
class Window:
    """What makes a session live at `now` (SPEC.md §6.6)."""

    now: int
    idle_timeout: int

    def values(self) -> dict[str, int]:
        return {"now": self.now, "idle_cutoff": self.now - self.idle_timeout}


async def find_user(db: Database, reference: str, *, window: Window) -> User:
    """The user with this id, or with this email address in its canonical form (SPEC.md §5.2)."""
    if "@" in reference:
        try:
            canonical = parse_email_address(reference).canonical
        except SplitlinkError as exc:
            raise UnknownUser(f"{reference!r} is not a valid email address") from exc
        where, value = "u.email_canonical = :key", canonical
    else:
        where, value = "u.id = :key", reference
    async with db.autocommit() as conn:
        row = await conn.fetch_one(f"{_USER} WHERE {where}", {"key": value, **window.values()})
    if row is None:
        raise UnknownUser(f"no user {reference}")
    return _user(row)


async def list_users(db: Database, *, window: Window, limit: int) -> list[User]:
    async with db.autocommit() as conn:
        rows = await conn.fetch_all(
            f"{_USER} ORDER BY u.created_at, u.id LIMIT :limit", {"limit": limit, **window.values()}
        )
    return [_user(row) for row in rows]


@dataclass(frozen=True)
class EndedSession:
    id: str
    user_id: str


async def _revoke_live(
    conn: Connection, *, user_id: str | None, session_id: str | None, reason: str, window: Window
) -> list[EndedSession]:
    """End the live sessions of a user, or one live session."""
    rows = await conn.fetch_all(
        "SELECT s.id, s.user_id FROM sessions s WHERE s.user_id = COALESCE(:user_id, s.user_id) "
        "AND s.id = COALESCE(:session_id, s.id) AND s.revoked_at IS NULL "
        "AND s.expires_at > :now AND s.last_used_at > :idle_cutoff",
        {"user_id": user_id, "session_id": session_id, **window.values()},
    )
    ended = []
    for row in rows:
        if await revoke_session_rows(conn, session_id=row["id"], reason=reason, now=window.now):
            ended.append(EndedSession(id=row["id"], user_id=row["user_id"]))
    return ended


async def disable_user(db: Database, user_id: str, *, window: Window) -> list[EndedSession] | None:
    """Disable the user and end every live session it has, at once: the sessions ended, or
    None if the user was already disabled."""

    async def disable(conn: Connection) -> list[EndedSession] | None:
        changed = await conn.fetch_one(
            "UPDATE users SET disabled_at = :now WHERE id = :id AND disabled_at IS NULL "
            "RETURNING id",
            {"id": user_id, "now": window.now},
        )
        if changed is None:
            return None
        return await _revoke_live(
            conn, user_id=user_id, session_id=None, reason=USER_DISABLED, window=window
        )

    return await db.run(disable)


async def enable_user(db: Database, user_id: str) -> bool:
    """Let the user sign in again; its ended sessions stay ended. False if it was not disabled."""
    async with db.autocommit() as conn:
        changed = await conn.fetch_one(
            "UPDATE users SET disabled_at = NULL WHERE id = :id AND disabled_at IS NOT NULL "
            "RETURNING id",
            {"id": user_id},
        )
    return changed is not None


async def list_sessions(
    db: Database, *, user_id: str | None, window: Window, limit: int
) -> list[Row]:
    """Live sessions (of one user, or of all), the newest first; never any token material."""
    async with db.autocommit() as conn:
        return await conn.fetch_all(
            "SELECT s.id, s.user_id, u.email_address, s.device_name, s.key_alg, s.created_at, "
            "s.last_used_at, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id "
            "WHERE s.revoked_at IS NULL AND s.expires_at > :now AND s.last_used_at > :idle_cutoff "
            "AND s.user_id = COALESCE(:user_id, s.user_id) "
            "ORDER BY s.created_at DESC, s.id LIMIT :limit",
            {"user_id": user_id, "limit": limit, **window.values()},
        )


async def revoke_sessions(
    db: Database, *, session_id: str | None = None, user_id: str | None = None, window: Window
) -> list[EndedSession]:
    """End one live session, or every live session of a user: those ended."""
    if (session_id is None) == (user_id is None):
        raise ValueError("name one session or one user")

    async def revoke(conn: Connection) -> list[EndedSession]:
        return await _revoke_live(
            conn, user_id=user_id, session_id=session_id, reason=REVOKED_BY_ADMIN, window=window
        )

    return await db.run(revoke)


# Erased in this order, which no foreign key objects to. Mail goes to the account's address,
# to any spelling an attempt for it was sent to, and with its attempts.
_ERASE = (
    (
        "outbox_tries",
        "DELETE FROM outbox_tries WHERE outbox_id IN (SELECT id FROM outbox "
        "WHERE recipient = :address OR attempt_id IN (SELECT id FROM login_attempts "
        "WHERE email_canonical = :canonical) OR recipient IN (SELECT email_address "
        "FROM login_attempts WHERE email_canonical = :canonical)) RETURNING 1",
    ),
    (
        "outbox",
        "DELETE FROM outbox WHERE recipient = :address OR attempt_id IN (SELECT id "
        "FROM login_attempts WHERE email_canonical = :canonical) OR recipient IN "
        "(SELECT email_address FROM login_attempts WHERE email_canonical = :canonical) "
        "RETURNING 1",
    ),
    (
        "refresh_tokens",
        "DELETE FROM refresh_tokens WHERE session_id IN "
        "(SELECT id FROM sessions WHERE user_id = :id) RETURNING 1",
    ),
    ("sessions", "DELETE FROM sessions WHERE user_id = :id RETURNING 1"),
    ("login_attempts", "DELETE FROM login_attempts WHERE email_canonical = :canonical RETURNING 1"),
    ("users", "DELETE FROM users WHERE id = :id RETURNING 1"),
)
# The audit rows stay: they are the record of what happened, and their ids are pseudonymous
# once the user row is gone. The client address, which could tie them to a person, goes: from
# the rows of the user, of its sessions and of the attempts for its address.
_CLEAR_AUDIT = {
    "sqlite": (
        "UPDATE audit_events SET client_address = NULL WHERE client_address IS NOT NULL AND "
        "(user_id = :id OR json_extract(details, '$.attempt_id') IN (SELECT id "
        "FROM login_attempts WHERE email_canonical = :canonical) OR "
        "json_extract(details, '$.session_id') IN (SELECT id FROM sessions "
        "WHERE user_id = :id)) RETURNING id"
    ),
    "postgresql": (
        "UPDATE audit_events SET client_address = NULL WHERE client_address IS NOT NULL AND "
        "(user_id = :id OR (details::jsonb ->> 'attempt_id') IN (SELECT id "
        "FROM login_attempts WHERE email_canonical = :canonical) OR "
        "(details::jsonb ->> 'session_id') IN (SELECT id FROM sessions "
        "WHERE user_id = :id)) RETURNING id"
    ),
}


async def delete_user(db: Database, user: User) -> dict[str, int]:
    """Erase the user and everything that names it or its address, in one transaction: rows
    deleted per table, and (as `audit_events`) the audit rows whose client address was
    cleared. The audit rows go first, while the sessions and attempts that find them exist."""
    values: Mapping[str, Any] = {
        "id": user.id,
        "canonical": user.email_canonical,
        "address": user.email_address,
    }
    steps = (("audit_events", _CLEAR_AUDIT[db.dialect]), *_ERASE)

    async def erase(conn: Connection) -> dict[str, int]:
        counts = {}
        for table, statement in steps:
            counts[table] = len(await conn.fetch_all(statement, values))
        return counts

    return await db.run(erase)


RetryOutcome = Literal["due", "unknown", "sent", "expired", "order_dropped"]


async def retry_mail(db: Database, outbox_id: str, *, now: int) -> RetryOutcome:
    """Make a backed-off or given-up message due now. A message that was sent, that became
    stale, or whose sealed order was dropped (SPEC.md §7.2) cannot be sent again."""
    async with db.autocommit() as conn:
        due = await conn.fetch_one(
            "UPDATE outbox SET status = 'queued', not_before = :now, lease_until = NULL "
            "WHERE id = :id AND sealed_message IS NOT NULL AND status IN ('queued', 'abandoned') "
            "AND (lease_until IS NULL OR lease_until < :now) RETURNING id",
            {"id": outbox_id, "now": now},
        )
        if due is not None:
            return "due"
        row = await conn.fetch_one(
            "SELECT status, sealed_message IS NOT NULL AS has_order FROM outbox WHERE id = :id",
            {"id": outbox_id},
        )
    if row is None:
        return "unknown"
    if row["status"] in ("sent", "expired"):
        outcome: RetryOutcome = row["status"]
        return outcome
    if row["status"] == "queued":
        # Leased: a hand-off is under way right now.
        return "due"
    return "order_dropped"
