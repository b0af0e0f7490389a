"""Rows of `audit_events`: written in batches by the audit trail (server/audit.py), read back a
page at a time by `splitlink audit`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.storage.database import Database, Row

# Rows per insert statement: well under SQLite's limit of parameters per statement.
ROWS_PER_STATEMENT = 200

_COLUMNS = ("at", "event", "user_id", "jkt", "client_address", "request_id", "details")
_SELECT = (
    "SELECT id, at, event, user_id, jkt, client_address, request_id, details FROM audit_events"
)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One event's row, as it is written: `details` is a JSON object's text."""

    at: int
    event: str
    user_id: str | None
    jkt: str | None
    client_address: str | None
    request_id: str | None
    details: str


@dataclass(frozen=True, slots=True)
class StoredAuditEvent:
    """A row as it was kept, with its increasing id."""

    id: int
    at: int
    event: str
    user_id: str | None
    jkt: str | None
    client_address: str | None
    request_id: str | None
    details: str


def _stored(row: Row) -> StoredAuditEvent:
    return StoredAuditEvent(
        id=int(row["id"]),
        at=int(row["at"]),
        event=row["event"],
        user_id=row["user_id"],
        jkt=row["jkt"],
        client_address=row["client_address"],
        request_id=row["request_id"],
        details=row["details"],
    )


def insert_statement(records: Sequence[AuditRecord]) -> tuple[str, dict[str, Any]]:
    """One INSERT of several rows, each value a parameter."""
    rows = []
    values: dict[str, Any] = {}
    for i, record in enumerate(records):
        rows.append("(" + ", ".join(f":{column}{i}" for column in _COLUMNS) + ")")
        values.update({f"{column}{i}": getattr(record, column) for column in _COLUMNS})
    # Only column names and parameter names are put into the text.
    query = f"INSERT INTO audit_events ({', '.join(_COLUMNS)}) VALUES {', '.join(rows)}"  # noqa: S608
    return query, values


class AuditStore:
    """`server.audit.AuditRows` on the database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, records: Sequence[AuditRecord]) -> None:
        """The rows in one statement each `ROWS_PER_STATEMENT`, on a pooled connection: on
        SQLite off the event loop, in its thread; on PostgreSQL beside the requests'
        single-statement pool, not in its queue."""
        async with self._db.autocommit() as conn:
            for start in range(0, len(records), ROWS_PER_STATEMENT):
                await conn.execute(*insert_statement(records[start : start + ROWS_PER_STATEMENT]))

    async def latest(self, *, count: int) -> list[StoredAuditEvent]:
        """The newest `count` rows, oldest first."""
        async with self._db.autocommit() as conn:
            rows = await conn.fetch_all(f"{_SELECT} ORDER BY id DESC LIMIT :n", {"n": count})
        return [_stored(row) for row in rows[::-1]]

    async def after(self, *, after_id: int, limit: int = 1000) -> list[StoredAuditEvent]:
        """Rows newer than `after_id`, in id order."""
        async with self._db.autocommit() as conn:
            rows = await conn.fetch_all(
                f"{_SELECT} WHERE id > :after ORDER BY id LIMIT :n",
                {"after": after_id, "n": limit},
            )
        return [_stored(row) for row in rows]

    async def between(
        self, *, since: int | None, until: int | None, after_id: int = 0, limit: int = 1000
    ) -> list[StoredAuditEvent]:
        """Rows with `since <= at < until`, in id order, a page at a time after `after_id`."""
        conditions = ["id > :after"]
        values: Mapping[str, Any] = {"after": after_id, "n": limit, "since": since, "until": until}
        if since is not None:
            conditions.append("at >= :since")
        if until is not None:
            conditions.append("at < :until")
        where = " AND ".join(conditions)
        async with self._db.autocommit() as conn:
            rows = await conn.fetch_all(f"{_SELECT} WHERE {where} ORDER BY id LIMIT :n", values)
        return [_stored(row) for row in rows]
