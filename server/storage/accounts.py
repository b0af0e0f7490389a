"""What an operator reads and changes of accounts, their sessions and their mail (server/admin.py):
each method is one transaction or one statement, and returns what it found or changed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.storage.database import Connection, Database, Row
from server.storage.sessions import (
    LIVE,
    live_window,
    revoke_session_rows,
    revoke_user_sessions,
)

_USER = (
    "SELECT u.id, u.email_canonical, u.email_address, u.created_at, u.disabled_at, "  # noqa: S608 - constants
    "(SELECT COUNT(*) FROM sessions s WHERE s.user_id = u.id "
    f"AND {LIVE}) AS live_sessions "
    "FROM users u"
)


@dataclass(frozen=True, slots=True)
class Window:
    """What makes a session live at `now` (SPEC.md §6.6)."""

    now: int
    idle_timeout: int


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email_canonical: str
    email_address: str
    created_at: int
    disabled_at: int | None
    live_sessions: int


@dataclass(frozen=True, slots=True)
class EndedSession:
    id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class SessionListing:
    """A live session as an operator sees it: never any token material."""

    id: str
    user_id: str
    email_address: str
    device_name: str | None
    key_alg: str
    created_at: int
    last_used_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class Erasure:
    """What erasing a user did: rows deleted per table, in the order they went, and the audit
    rows whose client address was cleared."""

    deleted: tuple[tuple[str, int], ...]
    audit_rows_cleared: int


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """An outbox row without its contents."""

    id: str
    kind: str
    recipient: str
    tries: int
    not_before: int
    created_at: int
    sent_at: int | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class MailOverview:
    """How many messages each status holds, and the latest of each status, the newest first."""

    counts: Mapping[str, int]
    latest: Mapping[str, tuple[OutboxMessage, ...]]


@dataclass(frozen=True, slots=True)
class MailTry:
    try_number: int
    tried_at: int
    outcome: str
    detail: str | None


@dataclass(frozen=True, slots=True)
class MailState:
    """Where a message stands: its status, and whether its sealed order is still kept."""

    status: str
    has_order: bool


def _user(row: Row) -> User:
    return User(
        id=row["id"],
        email_canonical=row["email_canonical"],
        email_address=row["email_address"],
        created_at=int(row["created_at"]),
        disabled_at=None if row["disabled_at"] is None else int(row["disabled_at"]),
        live_sessions=int(row["live_sessions"]),
    )


def _values(window: Window) -> dict[str, int]:
    return live_window(window.now, idle_timeout=window.idle_timeout)


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

_LIVE_OF = (
    "SELECT s.id, s.user_id FROM sessions s WHERE s.user_id = COALESCE(:user_id, s.user_id) "  # noqa: S608 - constants
    f"AND s.id = COALESCE(:session_id, s.id) AND {LIVE}"
)
_LISTED_SESSIONS = (
    "SELECT s.id, s.user_id, u.email_address, s.device_name, s.key_alg, s.created_at, "  # noqa: S608 - constants
    "s.last_used_at, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id "
    f"WHERE {LIVE} "
    "AND s.user_id = COALESCE(:user_id, s.user_id) "
    "ORDER BY s.created_at DESC, s.id LIMIT :limit"
)
_LATEST_MAIL = (
    "SELECT id, kind, recipient, tries, not_before, created_at, sent_at, last_error FROM outbox "
    "WHERE status = :status ORDER BY created_at DESC, id DESC LIMIT :limit"
)
_MAKE_DUE = (
    "UPDATE outbox SET status = 'queued', not_before = :now, lease_until = NULL "
    "WHERE id = :id AND sealed_message IS NOT NULL AND status IN ('queued', 'abandoned') "
    "AND (lease_until IS NULL OR lease_until < :now) RETURNING id"
)


async def _revoke_live(
    conn: Connection, *, user_id: str | None, session_id: str | None, reason: str, window: Window
) -> list[EndedSession]:
    """End the live sessions of a user, or one live session."""
    rows = await conn.fetch_all(
        _LIVE_OF, {"user_id": user_id, "session_id": session_id, **_values(window)}
    )
    ended = []
    for row in rows:
        if await revoke_session_rows(conn, session_id=row["id"], reason=reason, now=window.now):
            ended.append(EndedSession(id=row["id"], user_id=row["user_id"]))
    return ended


def _message(row: Row) -> OutboxMessage:
    return OutboxMessage(
        id=row["id"],
        kind=row["kind"],
        recipient=row["recipient"],
        tries=int(row["tries"]),
        not_before=int(row["not_before"]),
        created_at=int(row["created_at"]),
        sent_at=None if row["sent_at"] is None else int(row["sent_at"]),
        last_error=row["last_error"],
    )


class AccountStore:
    """`server.admin.AccountAdministration` on the database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def _one_user(self, where: str, key: str, window: Window) -> User | None:
        async with self._db.autocommit() as conn:
            row = await conn.fetch_one(f"{_USER} WHERE {where}", {"key": key, **_values(window)})
        return None if row is None else _user(row)

    async def user_by_id(self, *, user_id: str, window: Window) -> User | None:
        return await self._one_user("u.id = :key", user_id, window)

    async def user_by_address(self, *, email_canonical: str, window: Window) -> User | None:
        return await self._one_user("u.email_canonical = :key", email_canonical, window)

    async def users(self, *, window: Window, limit: int) -> list[User]:
        """The oldest first."""
        async with self._db.autocommit() as conn:
            rows = await conn.fetch_all(
                f"{_USER} ORDER BY u.created_at, u.id LIMIT :limit",
                {"limit": limit, **_values(window)},
            )
        return [_user(row) for row in rows]

    async def disable_user(
        self, *, user_id: str, reason: str, window: Window
    ) -> list[EndedSession] | None:
        """Disable the user and end every live session it has, in one transaction: the
        sessions ended, or None if the user was already disabled (or does not exist)."""

        async def disable(conn: Connection) -> list[EndedSession] | None:
            changed = await conn.fetch_one(
                "UPDATE users SET disabled_at = :now WHERE id = :id AND disabled_at IS NULL "
                "RETURNING id",
                {"id": user_id, "now": window.now},
            )
            if changed is None:
                return None
            return await _revoke_live(
                conn, user_id=user_id, session_id=None, reason=reason, window=window
            )

        return await self._db.run(disable)

    async def enable_user(
        self, *, user_id: str, reason: str, now: int
    ) -> list[EndedSession] | None:
        """Let the user sign in again, in one transaction with the end of every session of it
        not yet ended: the disable ended the live ones, so any other was opened by a completion
        that raced the disable, and enabling must not make it usable (ended with `reason`).
        The sessions so ended, or None if the user was not disabled."""

        async def enable(conn: Connection) -> list[EndedSession] | None:
            changed = await conn.fetch_one(
                "UPDATE users SET disabled_at = NULL WHERE id = :id AND disabled_at IS NOT NULL "
                "RETURNING id",
                {"id": user_id},
            )
            if changed is None:
                return None
            ended = await revoke_user_sessions(conn, user_id=user_id, reason=reason, now=now)
            return [EndedSession(id=session_id, user_id=user_id) for session_id in ended]

        return await self._db.run(enable)

    async def delete_user(self, *, user: User) -> Erasure:
        """Erase the user and everything that names it or its address, in one transaction. The
        audit rows go first, while the sessions and attempts that find them exist."""
        values: Mapping[str, Any] = {
            "id": user.id,
            "canonical": user.email_canonical,
            "address": user.email_address,
        }
        clear_audit = _CLEAR_AUDIT[self._db.dialect]

        async def erase(conn: Connection) -> Erasure:
            cleared = len(await conn.fetch_all(clear_audit, values))
            deleted = []
            for table, statement in _ERASE:
                deleted.append((table, len(await conn.fetch_all(statement, values))))
            return Erasure(deleted=tuple(deleted), audit_rows_cleared=cleared)

        return await self._db.run(erase)

    async def live_sessions(
        self, *, user_id: str | None, window: Window, limit: int
    ) -> list[SessionListing]:
        """Live sessions (of one user, or of all), the newest first."""
        async with self._db.autocommit() as conn:
            rows = await conn.fetch_all(
                _LISTED_SESSIONS, {"user_id": user_id, "limit": limit, **_values(window)}
            )
        return [
            SessionListing(
                id=row["id"],
                user_id=row["user_id"],
                email_address=row["email_address"],
                device_name=row["device_name"],
                key_alg=row["key_alg"],
                created_at=int(row["created_at"]),
                last_used_at=int(row["last_used_at"]),
                expires_at=int(row["expires_at"]),
            )
            for row in rows
        ]

    async def revoke_live_sessions(
        self, *, session_id: str | None, user_id: str | None, reason: str, window: Window
    ) -> list[EndedSession]:
        """End one live session, or every live session of a user, in one transaction."""

        async def revoke(conn: Connection) -> list[EndedSession]:
            return await _revoke_live(
                conn, user_id=user_id, session_id=session_id, reason=reason, window=window
            )

        return await self._db.run(revoke)

    async def mail_overview(self, *, statuses: Sequence[str], limit: int) -> MailOverview:
        """Counts per status, and the latest `limit` rows of each of `statuses`."""
        async with self._db.autocommit() as conn:
            counts = {
                row["status"]: int(row["n"])
                for row in await conn.fetch_all(
                    "SELECT status, COUNT(*) AS n FROM outbox GROUP BY status"
                )
            }
            latest = {
                status: tuple(
                    _message(row)
                    for row in await conn.fetch_all(
                        _LATEST_MAIL, {"status": status, "limit": limit}
                    )
                )
                for status in statuses
            }
        return MailOverview(counts=counts, latest=latest)

    async def mail_tries(self, *, outbox_id: str) -> list[MailTry]:
        """Every recorded try of one message, in order."""
        async with self._db.autocommit() as conn:
            rows = await conn.fetch_all(
                "SELECT try_number, tried_at, outcome, detail FROM outbox_tries "
                "WHERE outbox_id = :id ORDER BY try_number",
                {"id": outbox_id},
            )
        return [
            MailTry(
                try_number=int(row["try_number"]),
                tried_at=int(row["tried_at"]),
                outcome=row["outcome"],
                detail=row["detail"],
            )
            for row in rows
        ]

    async def make_mail_due(self, *, outbox_id: str, now: int) -> bool:
        """Make a queued or given-up message that kept its order due at `now`, unless a
        hand-off holds its lease: whether it did."""
        async with self._db.autocommit() as conn:
            row = await conn.fetch_one(_MAKE_DUE, {"id": outbox_id, "now": now})
        return row is not None

    async def mail_state(self, *, outbox_id: str) -> MailState | None:
        async with self._db.autocommit() as conn:
            row = await conn.fetch_one(
                "SELECT status, sealed_message IS NOT NULL AS has_order FROM outbox WHERE id = :id",
                {"id": outbox_id},
            )
        return (
            None
            if row is None
            else MailState(status=row["status"], has_order=bool(row["has_order"]))
        )
