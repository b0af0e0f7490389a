"""Periodic removal of rows that can no longer matter. Every statement is idempotent, so any
number of workers may run it concurrently."""

from __future__ import annotations

import asyncio
import logging

from server.clock import Clock
from server.errors import TemporarilyUnavailable
from server.storage.database import Database

logger = logging.getLogger("splitlink.housekeeping")

KEEP_FINISHED_SECONDS = 24 * 60 * 60


async def purge_expired(db: Database, *, now: int) -> None:
    async with db.autocommit() as conn:
        await conn.execute("DELETE FROM dpop_replay WHERE expires_at < :now", {"now": now})
        await conn.execute("DELETE FROM rate_limits WHERE expires_at < :now", {"now": now})
        await conn.execute(
            "DELETE FROM outbox WHERE status <> 'queued' AND created_at < :cutoff",
            {"cutoff": now - KEEP_FINISHED_SECONDS},
        )
        # Unconsumed attempts are kept a day after expiry for the audit of failed tries;
        # consumed ones stay, referenced by their session.
        await conn.execute(
            "DELETE FROM login_attempts WHERE consumed_at IS NULL AND expires_at < :cutoff "
            "AND id NOT IN (SELECT attempt_id FROM outbox WHERE attempt_id IS NOT NULL)",
            {"cutoff": now - KEEP_FINISHED_SECONDS},
        )


async def run_housekeeping(db: Database, *, clock: Clock, interval: float) -> None:
    while True:
        try:
            await purge_expired(db, now=clock.now())
        except TemporarilyUnavailable:
            logger.warning("housekeeping: database unavailable; will retry")
        except Exception:
            logger.exception("housekeeping: unexpected failure; will retry")
        await asyncio.sleep(interval)
