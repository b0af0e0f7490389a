"""Time and randomness, injected so that tests control both."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Protocol

RandomBytes = Callable[[int], bytes]


class Clock(Protocol):
    def now(self) -> int:
        """Wall-clock seconds since the epoch."""
        ...


class SystemClock:
    def now(self) -> int:
        return int(time.time())


def system_random_bytes(n: int) -> bytes:
    return secrets.token_bytes(n)
