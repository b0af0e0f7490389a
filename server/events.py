"""Security events: one hook where every security-relevant outcome is reported.

Events carry identifiers, never secrets, and the id of the request that caused them (None
outside a request). The default sink writes one log line per event; an audit trail or metrics
exporter is another sink.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from server.request_id import current_request_id

logger = logging.getLogger("splitlink.events")


@dataclass(frozen=True)
class SecurityEvent:
    name: str
    at: int
    fields: Mapping[str, Any] = field(default_factory=dict)
    # Read where the event is made, inside the request's context.
    request_id: str | None = field(default_factory=current_request_id)
    # Whom and where from, when known: kept in the audit trail beside the fields (SPEC.md §6.12).
    subject: str | None = None
    client_address: str | None = None


EventSink = Callable[[SecurityEvent], None]


def log_event(event: SecurityEvent) -> None:
    details = " ".join(f"{k}={v}" for k, v in sorted(event.fields.items()))
    # The record's own request id is the event's, which a sink may receive outside the request.
    logger.info(
        "%s %s",
        event.name,
        details,
        extra={"event": event.name, "fields": dict(event.fields), "request_id": event.request_id},
    )


def fan_out(*sinks: EventSink) -> EventSink:
    """One sink that hands each event to every one of `sinks`, in order."""

    def each(event: SecurityEvent) -> None:
        for sink in sinks:
            sink(event)

    return each
