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

from server.clock import Clock
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


class Emitter:
    """Makes security events at the clock's time and hands them to a sink. `subject` (a user
    id) and `client_address` go to the audit trail, not to the log."""

    def __init__(self, sink: EventSink, clock: Clock) -> None:
        self._sink = sink
        self._clock = clock

    def __call__(
        self,
        name: str,
        *,
        subject: str | None = None,
        client_address: str | None = None,
        **fields: Any,
    ) -> None:
        self._sink(
            SecurityEvent(
                name=name,
                at=self._clock.now(),
                fields=fields,
                subject=subject,
                client_address=client_address,
            )
        )
