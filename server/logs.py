"""The log of `splitlink serve`: uvicorn's own lines and the `splitlink` loggers' (requests,
security events, SPEC.md §6.12; the mail transport; failures), each record one line on stderr,
as one JSON object or as readable text, with the id of the request that caused it.

uvicorn applies a logging configuration in its process and again in every worker it starts, and
its default one leaves the `splitlink` loggers without a handler, which drops their lines. The
configuration below is handed to uvicorn so that every worker applies it. uvicorn's own access
line is off: it carries the raw path and query string, and `server.request_log` writes a request
line of its own without them.
"""

from __future__ import annotations

import logging
from typing import Any, get_args

from server.request_id import current_request_id
from server.settings import LogFormat, LogLevel

LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)

# Readable text; the process id tells the workers apart, "-" stands for "outside a request".
_TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(request_id)s %(name)s: %(message)s"
# The JSON object's keys besides the time, renamed below; values passed in `extra=` become
# keys of their own.
_JSON_FIELDS = ["levelname", "process", "name", "request_id", "message"]
_JSON_RENAMED = {"levelname": "level", "name": "logger"}


class RequestIdFilter(logging.Filter):
    """Stamps every record with the current request's id (None, or "-" in text, outside one)."""

    def __init__(self, *, text: bool = False) -> None:
        super().__init__()
        self._missing = "-" if text else None

    def filter(self, record: logging.LogRecord) -> bool:
        # A record may carry its own id (a security event's), or None outside a request.
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id() or self._missing
        return True


def serve_log_config(level: LogLevel, log_format: LogFormat = "text") -> dict[str, Any]:
    """Every record of uvicorn and of `splitlink` at `level`, one line each on stderr."""
    formatter: dict[str, Any] = (
        {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": _JSON_FIELDS,
            "rename_fields": _JSON_RENAMED,
            # ISO 8601 in UTC, under "time".
            "timestamp": "time",
        }
        if log_format == "json"
        else {"format": _TEXT_FORMAT}
    )
    handler = {"handlers": ["splitlink"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": RequestIdFilter, "text": log_format == "text"},
        },
        "formatters": {"splitlink": formatter},
        "handlers": {
            "splitlink": {
                "class": "logging.StreamHandler",
                "formatter": "splitlink",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": handler,
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "splitlink": handler,
        },
    }
