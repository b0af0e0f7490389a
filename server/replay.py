"""DPoP `jti` replay stores (RFC 9449 §11.1).

The server uses the database store (server/storage/replay.py): entries are shared by every worker
and host and survive a restart. `MemoryReplayStore` serves a resource server that runs as a
single process.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from protocol.dpop import VerifiedDPoPProof
from protocol.errors import InvalidDPoPProof
from server.errors import TemporarilyUnavailable


class ReplayStore(Protocol):
    async def record(self, proof: VerifiedDPoPProof, *, now: int) -> None:
        """Record a proof's first use; raise InvalidDPoPProof if it was used before."""
        ...


class MemoryReplayStore:
    """One process only. Bounded: when full it refuses new proofs rather than forgetting old
    ones, because forgetting an entry inside its window would let that proof be replayed."""

    def __init__(self, *, retention: int, max_entries: int = 1_000_000) -> None:
        self._retention = retention
        self._max_entries = max_entries
        self._entries: OrderedDict[str, int] = OrderedDict()

    async def record(self, proof: VerifiedDPoPProof, *, now: int) -> None:
        while self._entries:
            key, expires_at = next(iter(self._entries.items()))
            if expires_at >= now:
                break
            del self._entries[key]
        if proof.replay_key in self._entries:
            raise InvalidDPoPProof("DPoP proof has been used before")
        if len(self._entries) >= self._max_entries:
            raise TemporarilyUnavailable("the replay store is full")
        self._entries[proof.replay_key] = now + self._retention
