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
from collections.abc import Sequence
from typing import Any, Protocol

from server.errors import TemporarilyUnavailable
from server.events import SecurityEvent
from server.storage.audit import ROWS_PER_STATEMENT, AuditRecord, StoredAuditEvent

logger = logging.getLogger("splitlink.audit")

# Identifiers and outcomes: none of them lets anyone sign in or read mail.
DETAIL_FIELDS = frozenset({"session_id", "attempt_id", "reason", "count", "outbox_id"})
# Rows kept in memory while the database refuses them; beyond it the oldest are dropped.
PENDING_LIMIT = 10_000
FLUSH_INTERVAL = 1.0


class AuditRows(Protocol):
    """Where the trail is kept: appended to in batches, read back in id order."""

    async def append(self, records: Sequence[AuditRecord]) -> None: ...

    async def latest(self, *, count: int) -> list[StoredAuditEvent]: ...

    async def after(self, *, after_id: int, limit: int = ...) -> list[StoredAuditEvent]: ...

    async def between(
        self, *, since: int | None, until: int | None, after_id: int = ..., limit: int = ...
    ) -> list[StoredAuditEvent]: ...


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

    async def flush(self, rows: AuditRows) -> int:
        """Write every queued row, a statement at a time; a batch whose write fails goes back
        to the front of the queue for the next flush, and the failure is raised."""
        written = 0
        while self._pending:
            count = min(len(self._pending), ROWS_PER_STATEMENT)
            batch = [self._pending.popleft() for _ in range(count)]
            try:
                await rows.append(batch)
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

    async def run_forever(self, rows: AuditRows, *, interval: float = FLUSH_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush(rows)
            except TemporarilyUnavailable:
                logger.warning("audit: database unavailable; %d rows wait", self.pending)
            except Exception:
                logger.exception("audit: unexpected failure; %d rows wait", self.pending)


# --- Reading the trail (`splitlink audit`) ------------------------------------------------------


def as_json_line(row: StoredAuditEvent) -> str:
    """One row as a line of JSON: `at` in seconds since the epoch, and its details."""
    details = json.loads(row.details)
    if not isinstance(details, dict):
        raise ValueError(f"audit row {row.id} holds details that are not an object")
    return json.dumps(
        {
            "id": row.id,
            "at": row.at,
            "event": row.event,
            "user_id": row.user_id,
            "jkt": row.jkt,
            "client_address": row.client_address,
            "request_id": row.request_id,
            **{"details": details},
        },
        separators=(",", ":"),
        sort_keys=False,
    )
