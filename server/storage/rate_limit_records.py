"""Records of the rate-limit store (server/storage/ratelimit.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Window:
    """A fixed window of the counts: from `start`, until `expires_at`."""

    start: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class Turn:
    """A bucket counted in turn, and the hits it may reach before the next one is not counted."""

    bucket: str
    limit: int
