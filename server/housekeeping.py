"""Periodic removal of rows that can no longer matter (docs/design.md §6). Every purge is
idempotent, so any number of workers may run it concurrently."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from server.clock import Clock
from server.errors import TemporarilyUnavailable

logger = logging.getLogger("splitlink.housekeeping")


class ExpiredRows(Protocol):
    """What housekeeping needs of storage: delete whatever has outlived its keeping."""

    async def purge_expired(self, *, now: int, audit_retention_days: int) -> None: ...


async def run_housekeeping(
    rows: ExpiredRows, *, clock: Clock, interval: float, audit_retention_days: int
) -> None:
    while True:
        try:
            await rows.purge_expired(now=clock.now(), audit_retention_days=audit_retention_days)
        except TemporarilyUnavailable:
            logger.warning("housekeeping: database unavailable; will retry")
        except Exception:
            logger.exception("housekeeping: unexpected failure; will retry")
        await asyncio.sleep(interval)
