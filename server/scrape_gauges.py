"""Gauges read from the database when a scrape comes: the outbox's depth and the age of its
oldest queued message, the same for every worker that answers (README "Metrics").

The read is one statement with a short deadline. A database that fails or does not answer in
time leaves the scrape answering everything else, with `splitlink_database_up` at 0 and the
outbox gauges absent rather than wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from server.storage.health import QueuedMail

logger = logging.getLogger("splitlink.metrics")

READ_DEADLINE_SECONDS = 1.0


class QueuedMailSource(Protocol):
    """Where the outbox's queued messages are counted: one statement."""

    async def queued_mail(self) -> QueuedMail: ...


@dataclass(frozen=True, slots=True)
class OutboxState:
    queued: int
    oldest_queued_age: int


async def read_outbox_state(
    source: QueuedMailSource, *, now: int, deadline: float = READ_DEADLINE_SECONDS
) -> OutboxState | None:
    """The outbox as the database holds it now; None when the database fails or is too slow."""
    try:
        async with asyncio.timeout(deadline):
            queued = await source.queued_mail()
    except Exception as exc:
        # Whatever the failure, the scrape still answers: its other metrics are this process's
        # own, and `splitlink_database_up` says that this read failed.
        logger.warning("metrics: outbox state not read: %s", type(exc).__name__)
        return None
    oldest = queued.oldest_created_at
    return OutboxState(
        queued=queued.count,
        oldest_queued_age=0 if oldest is None else max(0, now - oldest),
    )


class ScrapeTimeGauges(Collector):
    """The gauges of one scrape, from what `read_outbox_state` returned for it."""

    def __init__(self, outbox: OutboxState | None) -> None:
        self._outbox = outbox

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "splitlink_database_up",
            "1 if this scrape's read of the database succeeded in time, else 0.",
            value=0 if self._outbox is None else 1,
        )
        if self._outbox is None:
            return
        yield GaugeMetricFamily(
            "splitlink_outbox_queued_messages",
            "Messages in the outbox waiting to be handed off (status queued).",
            value=self._outbox.queued,
        )
        yield GaugeMetricFamily(
            "splitlink_outbox_oldest_queued_age_seconds",
            "Seconds since the oldest queued message was queued; 0 when none is.",
            value=self._outbox.oldest_queued_age,
        )
