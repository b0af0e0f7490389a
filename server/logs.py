"""The log of `splitlink serve`: uvicorn's own lines, and the `splitlink` loggers' (security
events, SPEC.md §6.12; the mail transport; failures), each record one line on stderr.

uvicorn applies a logging configuration in its process and again in every worker it starts, and
its default one leaves the `splitlink` loggers without a handler, which drops their lines. The
configuration below is uvicorn's with a handler for `splitlink` added, handed to uvicorn so that
every worker applies it.
"""

from __future__ import annotations

import copy
from typing import Any, get_args

from uvicorn.config import LOGGING_CONFIG

from server.settings import LogLevel

LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)

# Readable text; the process id tells the workers apart.
_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def serve_log_config(level: LogLevel) -> dict[str, Any]:
    """uvicorn's logging configuration plus the `splitlink` logger at `level`, on stderr."""
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["splitlink"] = {"format": _FORMAT}
    config["handlers"]["splitlink"] = {
        "class": "logging.StreamHandler",
        "formatter": "splitlink",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["splitlink"] = {
        "handlers": ["splitlink"],
        "level": level.upper(),
        "propagate": False,
    }
    return config
