"""Rows that can no longer matter, and the statements that delete them. Every statement is
idempotent, so any number of workers may run them concurrently."""

from __future__ import annotations

from server.settings import AUDIT_RETENTION_DAYS, DAY
from server.storage.database import Database

# Finished mail and abandoned attempts are kept this long, for the audit of failed tries.
KEEP_FINISHED_SECONDS = 24 * 60 * 60

# Each statement finds its rows through an index that holds only rows it may delete (revision
# 0005), so a purge costs what it deletes, not what the tables hold: on SQLite it holds the
# write lock while it runs.
PURGE_REPLAY = "DELETE FROM dpop_replay WHERE expires_at < :now"
PURGE_RATE_LIMITS = "DELETE FROM rate_limits WHERE expires_at < :now"
# The tries first, of the rows the next statement deletes: a purge stopped between the two
# leaves rows with fewer tries, never tries without their row.
PURGE_TRIES = (
    "DELETE FROM outbox_tries WHERE outbox_id IN "
    "(SELECT id FROM outbox WHERE status <> 'queued' AND created_at < :cutoff)"
)
PURGE_MAIL = "DELETE FROM outbox WHERE status <> 'queued' AND created_at < :cutoff"
# Unconsumed attempts are kept a day after expiry for the audit of failed tries; consumed ones
# stay, referenced by their session.
PURGE_ATTEMPTS = (
    "DELETE FROM login_attempts WHERE consumed_at IS NULL AND expires_at < :cutoff "
    "AND id NOT IN (SELECT attempt_id FROM outbox WHERE attempt_id IS NOT NULL)"
)
# The audit trail is kept `audit_retention_days`, found through its index on `at`.
PURGE_AUDIT = "DELETE FROM audit_events WHERE at < :cutoff"


async def purge_expired(
    db: Database, *, now: int, audit_retention_days: int = AUDIT_RETENTION_DAYS
) -> None:
    """Delete every row past its keeping, one autocommit statement per table."""
    cutoff = {"cutoff": now - KEEP_FINISHED_SECONDS}
    async with db.autocommit() as conn:
        await conn.execute(PURGE_REPLAY, {"now": now})
        await conn.execute(PURGE_RATE_LIMITS, {"now": now})
        await conn.execute(PURGE_TRIES, cutoff)
        await conn.execute(PURGE_MAIL, cutoff)
        await conn.execute(PURGE_ATTEMPTS, cutoff)
        await conn.execute(PURGE_AUDIT, {"cutoff": now - audit_retention_days * DAY})


class HousekeepingStore:
    """`server.housekeeping.ExpiredRows` on the database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def purge_expired(self, *, now: int, audit_retention_days: int) -> None:
        await purge_expired(self._db, now=now, audit_retention_days=audit_retention_days)
