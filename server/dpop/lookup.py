"""The session lookup: how the resource guard learns that a token's session is still live, and
when the request's proof goes into the replay store (SPEC.md §6.5 step 7, "Other APIs").

One interface for the server's own `/v1/` endpoints and for APIs under `protect()`. Where the
proof is recorded is a property of the lookup: one that writes the replay entry with its read
(the server, one round trip) uses up the proof even when the session has ended; for any other,
the guard records the proof after a live session was found, so a request refused keeps its `jti`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

from protocol.access_token import VerifiedAccessToken
from protocol.dpop import VerifiedDPoPProof

SessionT_co = TypeVar("SessionT_co", covariant=True)


class SessionLookup(Protocol[SessionT_co]):
    @property
    def records_proof(self) -> bool:
        """True when `live_session` writes the proof's replay entry with its read and raises
        InvalidDPoPProof for a replay, whatever the session; False when it ignores the proof."""
        ...

    async def live_session(
        self, token: VerifiedAccessToken, *, proof: VerifiedDPoPProof, now: int
    ) -> SessionT_co | None:
        """The token's session, a frozen record, if it is live and still bound to the token's
        user and key; None when it has ended."""
        ...


@dataclass(frozen=True, slots=True)
class UncheckedSession:
    """No session was looked up: it counts as live while its access token is valid."""


class TokenLifetimeOnly:
    """`protect()`'s default: no lookup, so a revocation reaches the API when the access token
    expires, or through introspection (SPEC.md §6.8)."""

    records_proof = False

    async def live_session(
        self, token: VerifiedAccessToken, *, proof: VerifiedDPoPProof, now: int
    ) -> UncheckedSession:
        return UncheckedSession()
