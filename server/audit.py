"""The audit trail: every security event (SPEC.md §6.12) kept as a row of `audit_events`.

Rows are written best-effort, after the event, by a background task that writes what has
gathered in one statement about once a second. An event never waits for the database, so the
trail adds no round trip to any request, and a database that refuses the write fails no login:
the rows wait in memory (up to a bound) and are written at the next flush. What a crash loses is
the last second of rows; the log line of each event (the other sink) is written at once.

A row holds the event's identifiers and only the details listed in `DETAIL_FIELDS`: a field that
is not listed is left out, so a field added to an event later is not stored before someone has
decided that it holds no secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.errors import TemporarilyUnavailable
from server.events import SecurityEvent
from server.storage.database import Database, Row

logger = logging.getLogger("splitlink.audit")

# Identifiers and outcomes: none of them lets anyone sign in or read mail.
DETAIL_FIELDS = frozenset({"session_id", "attempt_id", "reason", "count", "outbox_id"})
# Rows kept in memory while the database refuses them; beyond it the oldest are dropped.
PENDING_LIMIT = 10_000
FLUSH_INTERVAL = 1.0
# Rows per insert statement: well under SQLite's limit of parameters per statement.
ROWS_PER_STATEMENT = 200

_COLUMNS = ("at", "event", "user_id", "jkt", "client_address", "request_id", "details")
_SELECT = (
    "SELECT id, at, event, user_id, jkt, client_address, request_id, details FROM audit_events"
)


@dataclass(frozen=True)
class AuditRecord:
    at: int
    event: str
    user_id: str | None
    jkt: str | None
    client_address: str | None
    request_id: str | None
    details: str


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def audit_record(event: SecurityEvent) -> AuditRecord:
    """The row of one event: its identifiers as columns, its listed details as JSON."""
    fields = event.fields
    details = {k: fields[k] for k in sorted(DETAIL_FIELDS & fields.keys()) if fields[k] is not None}
    return AuditRecord(
        at=event.at,
        event=event.name,
        user_id=event.subject or _text(fields.get("user_id")),
        jkt=_text(fields.get("jkt")),
        client_address=event.client_address,
        request_id=event.request_id or _text(fields.get("request_id")),
        details=json.dumps(details, separators=(",", ":"), default=str),
    )


def insert_statement(records: list[AuditRecord]) -> tuple[str, dict[str, Any]]:
    """One INSERT of several rows, each value a parameter."""
    rows = []
    values: dict[str, Any] = {}
    for i, record in enumerate(records):
        rows.append("(" + ", ".join(f":{column}{i}" for column in _COLUMNS) + ")")
        values.update({f"{column}{i}": getattr(record, column) for column in _COLUMNS})
    # Only column names and parameter names are put into the text.
    query = f"INSERT INTO audit_events ({', '.join(_COLUMNS)}) VALUES {', '.join(rows)}"  # noqa: S608
    return query, values


async def write_records(db: Database, records: list[AuditRecord]) -> None:
    """The rows in one statement each `ROWS_PER_STATEMENT`, on a pooled connection: on SQLite
    off the event loop, in its thread; on PostgreSQL beside the requests' single-statement pool,
    not in its queue."""
    async with db.autocommit() as conn:
        for start in range(0, len(records), ROWS_PER_STATEMENT):
            await conn.execute(*insert_statement(records[start : start + ROWS_PER_STATEMENT]))


class AuditTrail:
    """The sink that queues each event's row, and the writer that flushes the queue."""

    def __init__(self, *, pending_limit: int = PENDING_LIMIT) -> None:
        self._pending: deque[AuditRecord] = deque(maxlen=pending_limit)
        self.dropped = 0

    def record(self, event: SecurityEvent) -> None:
        """The event sink. It never raises: a lost audit row must not fail the request."""
        try:
            row = audit_record(event)
        except Exception:
            self.dropped += 1
            logger.exception("audit: event %s could not be recorded", event.name)
            return
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(row)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self, db: Database) -> int:
        """Write every queued row, a statement at a time; a batch whose write fails goes back
        to the front of the queue for the next flush, and the failure is raised."""
        written = 0
        while self._pending:
            count = min(len(self._pending), ROWS_PER_STATEMENT)
            batch = [self._pending.popleft() for _ in range(count)]
            try:
                await write_records(db, batch)
            except BaseException:
                # In front of any queued meanwhile, within the bound.
                for record in reversed(batch):
                    if len(self._pending) == self._pending.maxlen:
                        self.dropped += 1
                        break
                    self._pending.appendleft(record)
                raise
            written += count
        return written

    async def run_forever(self, db: Database, *, interval: float = FLUSH_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush(db)
            except TemporarilyUnavailable:
                logger.warning("audit: database unavailable; %d rows wait", self.pending)
            except Exception:
                logger.exception("audit: unexpected failure; %d rows wait", self.pending)


# --- Reading the trail (`splitlink audit`) ------------------------------------------------------


def as_json_line(row: Row) -> str:
    """One row as a line of JSON: `at` in seconds since the epoch, and its details."""
    details = json.loads(row["details"])
    if not isinstance(details, dict):
        raise ValueError(f"audit row {row['id']} holds details that are not an object")
    return json.dumps(
        {
            "id": int(row["id"]),
            "at": int(row["at"]),
            "event": row["event"],
            "user_id": row["user_id"],
            "jkt": row["jkt"],
            "client_address": row["client_address"],
            "request_id": row["request_id"],
            **{"details": details},
        },
        separators=(",", ":"),
        sort_keys=False,
    )


async def latest_rows(db: Database, *, count: int) -> list[Row]:
    """The newest `count` rows, oldest first."""
    async with db.autocommit() as conn:
        rows = await conn.fetch_all(f"{_SELECT} ORDER BY id DESC LIMIT :n", {"n": count})
    return rows[::-1]


async def rows_after(db: Database, *, after_id: int, limit: int = 1000) -> list[Row]:
    async with db.autocommit() as conn:
        return await conn.fetch_all(
            f"{_SELECT} WHERE id > :after ORDER BY id LIMIT :n", {"after": after_id, "n": limit}
        )


async def rows_between(
    db: Database, *, since: int | None, until: int | None, after_id: int = 0, limit: int = 1000
) -> list[Row]:
    """Rows with `since <= at < until`, in id order, a page at a time after `after_id`."""
    conditions = ["id > :after"]
    values: Mapping[str, Any] = {"after": after_id, "n": limit, "since": since, "until": until}
    if since is not None:
        conditions.append("at >= :since")
    if until is not None:
        conditions.append("at < :until")
    where = " AND ".join(conditions)
    async with db.autocommit() as conn:
        return await conn.fetch_all(f"{_SELECT} WHERE {where} ORDER BY id LIMIT :n", values)
