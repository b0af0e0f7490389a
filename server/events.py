"""Security events: one hook where every security-relevant outcome is reported.

Events carry identifiers, never secrets. The default sink writes one log line per event; an audit
trail or metrics exporter is another sink.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("splitlink.events")


@dataclass(frozen=True)
class SecurityEvent:
    name: str
    at: int
    fields: Mapping[str, Any] = field(default_factory=dict)
    # Whom and where from, when known: kept in the audit trail beside the fields (SPEC.md §6.12).
    subject: str | None = None
    client_address: str | None = None


EventSink = Callable[[SecurityEvent], None]


def log_event(event: SecurityEvent) -> None:
    details = " ".join(f"{k}={v}" for k, v in sorted(event.fields.items()))
    logger.info("%s %s", event.name, details)


def fan_out(*sinks: EventSink) -> EventSink:
    """One sink that hands each event to every one of `sinks`, in order."""

    def each(event: SecurityEvent) -> None:
        for sink in sinks:
            sink(event)

    return each
