"""The server's Prometheus metrics: what is counted, and the text a scrape answers (README
"Metrics").

Every label takes its values from a closed set the server names (route templates, methods,
status codes, reasons, rate-limit scopes), never from a request: no address, id, token or raw
path ever becomes a label, and no client can grow the number of series.

`splitlink serve` runs several worker processes, each counting on its own. It gives them a
directory in `PROMETHEUS_MULTIPROC_DIR` before they start (server/metrics_directory.py), and
prometheus-client's multiprocess mode keeps each process's values in files there, summed at
every scrape whichever worker answers it. The mode is chosen when prometheus-client is first
imported, so the variable must be set before then: the `splitlink` command imports this module
only when uvicorn loads the application (in the same process, with one worker). Without the
variable (the tests' in-process servers, `uvicorn --factory`) values stay in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from server.events import EventSink, SecurityEvent
from server.metrics_directory import MULTIPROCESS_DIR_VARIABLE

# Read once, as prometheus-client reads it when first imported (by this module's imports).
_MULTIPROCESS_DIR = os.environ.get(MULTIPROCESS_DIR_VARIABLE) or None

CONTENT_TYPE = CONTENT_TYPE_LATEST
# A label value outside its closed set is counted under this one instead.
OTHER = "other"
# The route label of a request that matched no route.

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LOGIN_FAILURE_REASONS = (
    "unknown_attempt",
    "mismatch",
    "consumed",
    "locked",
    "expired",
    "no_account",
)
REFRESH_OUTCOMES = ("rotated", "retried", "unknown", "wrong_key", "session_ended", "reused")
SESSION_END_REASONS = (
    "refresh_token_reused",
    "revocation",
    "ended_by_user",
    "logout",
    "logout_all",
)
OUTBOX_OUTCOMES = ("sent", "retry", "abandoned", "expired")
DATABASE_ERROR_KINDS = ("conflict", "unavailable")

# No `_created` series: the multiprocess mode has none, and a process's values read the same
# whichever mode counts them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# The values of this process; in multiprocess mode they live in the directory's files instead,
# and this registry is never exposed.
_REGISTRY = CollectorRegistry()

HTTP_REQUESTS = Counter(
    "splitlink_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
    registry=_REGISTRY,
)
HTTP_REQUEST_DURATION = Histogram(
    "splitlink_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by route template.",
    ["route"],
    registry=_REGISTRY,
)
HTTP_REQUESTS_IN_PROGRESS = Gauge(
    "splitlink_http_requests_in_progress",
    "Requests being answered now, across the live worker processes.",
    registry=_REGISTRY,
    multiprocess_mode="livesum",
)
LOGINS_STARTED = Counter(
    "splitlink_logins_started", "Login attempts started (mail queued).", registry=_REGISTRY
)
LOGINS_COMPLETED = Counter(
    "splitlink_logins_completed",
    "Login attempts completed: a session was opened.",
    registry=_REGISTRY,
)
LOGINS_FAILED = Counter(
    "splitlink_logins_failed",
    "Refused completions, by reason (SPEC.md §6.12, login.failed).",
    ["reason"],
    registry=_REGISTRY,
)
ATTEMPTS_LOCKED = Counter(
    "splitlink_attempts_locked",
    "Login attempts locked by reaching max_failed_completions failed completions.",
    registry=_REGISTRY,
)
REFRESHES = Counter(
    "splitlink_refreshes",
    "Refresh-token grants, by outcome: rotated, retried, or the reason of a refusal.",
    ["outcome"],
    registry=_REGISTRY,
)
REFRESH_TOKEN_REUSE = Counter(
    "splitlink_refresh_token_reuse_detected",
    "Rotated refresh tokens presented again after the grace period: each ends its session.",
    registry=_REGISTRY,
)
SESSIONS_ENDED = Counter(
    "splitlink_sessions_ended",
    "Sessions ended before their expiry, by reason.",
    ["reason"],
    registry=_REGISTRY,
)
RATE_LIMIT_REFUSALS = Counter(
    "splitlink_rate_limit_refusals",
    "Requests refused with 429, by the limit they passed (SPEC.md §6.11 scope).",
    ["limit"],
    registry=_REGISTRY,
)
OUTBOX_TRIES = Counter(
    "splitlink_outbox_tries",
    "Outbox hand-offs recorded, by outcome: sent, retry, abandoned, expired.",
    ["outcome"],
    registry=_REGISTRY,
)
DATABASE_CONFLICT_RETRIES = Counter(
    "splitlink_database_conflict_retries",
    "Transactions run again after a serialization failure or deadlock.",
    registry=_REGISTRY,
)
DATABASE_ERRORS = Counter(
    "splitlink_database_errors",
    "Database failures that may pass (a conflict, a busy or unreachable database), by kind.",
    ["kind"],
    registry=_REGISTRY,
)

# Every series of a closed set exists from the start, at 0: a rate over a series that appears
# only with its first event would miss that event.
for _reason in LOGIN_FAILURE_REASONS:
    LOGINS_FAILED.labels(reason=_reason)
for _outcome in REFRESH_OUTCOMES:
    REFRESHES.labels(outcome=_outcome)
for _reason in SESSION_END_REASONS:
    SESSIONS_ENDED.labels(reason=_reason)
for _outcome in OUTBOX_OUTCOMES:
    OUTBOX_TRIES.labels(outcome=_outcome)
for _kind in DATABASE_ERROR_KINDS:
    DATABASE_ERRORS.labels(kind=_kind)


def _one_of(value: object, allowed: Iterable[str]) -> str:
    return value if isinstance(value, str) and value in allowed else OTHER


def count_event(event: SecurityEvent) -> None:
    """Count a security event (SPEC.md §6.12). Only its name and its reason are read."""
    reason = event.fields.get("reason")
    if event.name == "login.started":
        LOGINS_STARTED.inc()
    elif event.name == "login.completed":
        LOGINS_COMPLETED.inc()
    elif event.name == "login.failed":
        LOGINS_FAILED.labels(reason=_one_of(reason, LOGIN_FAILURE_REASONS)).inc()
    elif event.name in ("refresh.rotated", "refresh.retried"):
        REFRESHES.labels(outcome=event.name.removeprefix("refresh.")).inc()
    elif event.name == "refresh.refused":
        REFRESHES.labels(outcome=_one_of(reason, REFRESH_OUTCOMES)).inc()
        if reason == "reused":
            REFRESH_TOKEN_REUSE.inc()
    elif event.name == "session.revoked":
        SESSIONS_ENDED.labels(reason=_one_of(reason, SESSION_END_REASONS)).inc()
    elif event.name == "sessions.revoked_all":
        count = event.fields.get("count")
        if isinstance(count, int) and count > 0:
            SESSIONS_ENDED.labels(reason="logout_all").inc(count)


def counting(sink: EventSink) -> EventSink:
    """`sink`, with every event counted first."""

    def counted(event: SecurityEvent) -> None:
        count_event(event)
        sink(event)

    return counted


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


class DatabaseMetrics:
    """What the database layer reports (server/storage/database.py), which does not import
    prometheus-client itself: `splitlink serve` uses the database before its workers start."""

    def conflict_retried(self) -> None:
        DATABASE_CONFLICT_RETRIES.inc()

    def failed(self, kind: str) -> None:
        DATABASE_ERRORS.labels(kind=_one_of(kind, DATABASE_ERROR_KINDS)).inc()


def exposition(scrape_time: Iterable[Collector] = ()) -> bytes:
    """The text of a scrape: every process's counts, and what `scrape_time` collectors read now."""
    registry = CollectorRegistry()
    if _MULTIPROCESS_DIR is not None:
        MultiProcessCollector(registry, path=_MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ProcessValues())
    for collector in scrape_time:
        registry.register(collector)
    return generate_latest(registry)


class _ProcessValues(Collector):
    """This process's own registry, as one collector of a scrape's registry."""

    def collect(self) -> Iterable[Metric]:
        return _REGISTRY.collect()


def worker_started() -> None:
    """Forget the live gauges of worker processes that died without `worker_stopped` (killed):
    the supervisor starts a new worker in their place, and their in-progress requests are over."""
    if _MULTIPROCESS_DIR is None:
        return
    for path in Path(_MULTIPROCESS_DIR).glob("gauge_live*_*.db"):
        pid_text = path.stem.rsplit("_", 1)[-1]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            mark_process_dead(int(pid_text), path=_MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]


def worker_stopped() -> None:
    """This process's live gauges leave the sum; its counters stay, so totals never go back."""
    if _MULTIPROCESS_DIR is not None:
        mark_process_dead(os.getpid(), path=_MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
