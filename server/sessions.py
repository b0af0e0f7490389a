"""Sessions: one per completed login, bound to the device key that completed it (SPEC.md §6.6).

Ending a session revokes it and every refresh token of its family in one transaction; the
server's own endpoints look the session up on every request, so the end is visible at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from protocol.access_token import VerifiedAccessToken
from protocol.dpop import VerifiedDPoPProof
from server.storage.sessions import CurrentRefreshToken, LiveSession, SessionSummary

__all__ = [
    "LAST_USED_RESOLUTION",
    "REVOCATION",
    "CurrentRefreshToken",
    "LiveSession",
    "Revocation",
    "SessionService",
    "SessionStore",
    "SessionSummary",
]

# Writing last_used_at on every request would turn every read into a write; a minute is
# precise enough for the idle timeout and for "last used" in the session list.
LAST_USED_RESOLUTION = 60
# One name for the stored reason and the event's (SPEC.md §6.8, §6.12).
REVOCATION = "revocation"


class SessionStore(Protocol):
    """Where sessions live. "Live" is SPEC.md §6.6: not ended, not past its end, not idle too
    long, and its user not disabled."""

    async def read_live_recording(
        self, session_id: str, *, proof: VerifiedDPoPProof, now: int
    ) -> LiveSession | None:
        """Record the proof in the replay store and read the live session, in one step (one
        round trip where the backend allows); a replay raises InvalidDPoPProof, whatever the
        session."""
        ...

    async def read_live(self, session_id: str, *, now: int) -> LiveSession | None:
        """The live session, without a proof."""
        ...

    async def note_use(self, session_id: str, *, now: int) -> None:
        """Move the session's last use forward to `now`, never back."""
        ...

    async def list_live(self, user_id: str, *, now: int) -> list[SessionSummary]:
        """The user's live sessions, in no particular order."""
        ...

    async def end_live(self, session_id: str, *, user_id: str, reason: str, now: int) -> bool:
        """End the session with its refresh tokens if it is one of the user's live sessions."""
        ...

    async def end_all(self, user_id: str, *, reason: str, now: int) -> int:
        """End every unrevoked session of the user; how many there were."""
        ...

    async def end(self, session_id: str, *, reason: str, now: int) -> bool:
        """End the session with its refresh tokens, whoever holds it; False if it had ended."""
        ...

    async def session_of_refresh_token(self, token_hash: str) -> str | None:
        """The session of any refresh token it ever had, rotated or revoked or not."""
        ...

    async def current_refresh_token(
        self, token_hash: str, *, now: int
    ) -> CurrentRefreshToken | None:
        """The token if it is neither rotated nor revoked and its session is live."""
        ...


@dataclass(frozen=True, slots=True)
class Revocation:
    """A session that a revocation found (RFC 7009); `ended` is False if it had ended before."""

    session_id: str
    ended: bool


class SessionService:
    """Also the session lookup of the server's own `/v1/` endpoints (server/dpop/lookup.py): it
    records the request's proof with its read of the session."""

    # The replay entry and the session read are one round trip (SPEC.md §6.5 step 7).
    records_proof = True

    def __init__(self, store: SessionStore) -> None:
        self._store = store

    async def live_session(
        self, token: VerifiedAccessToken, *, proof: VerifiedDPoPProof, now: int
    ) -> LiveSession | None:
        """The token's session if it is live and still bound to the token's user and key, with
        the proof recorded in the replay store in the same round trip; a replay raises
        InvalidDPoPProof, whatever the session. The use counts for the idle timeout."""
        session = _bound(
            await self._store.read_live_recording(token.session_id, proof=proof, now=now), token
        )
        if session is not None and session.last_used_at <= now - LAST_USED_RESOLUTION:
            await self._store.note_use(session.id, now=now)
        return session

    async def inspect(self, token: VerifiedAccessToken, *, now: int) -> LiveSession | None:
        """The token's live session as `live_session` finds it, without a proof and without
        counting as a use (introspection)."""
        return _bound(await self._store.read_live(token.session_id, now=now), token)

    async def inspect_refresh_token(
        self, *, token_hash: str, now: int
    ) -> CurrentRefreshToken | None:
        """A current refresh token of a live session (introspection, SPEC.md §6.8)."""
        return await self._store.current_refresh_token(token_hash, now=now)

    async def list_live(self, user_id: str, *, now: int) -> list[SessionSummary]:
        sessions = await self._store.list_live(user_id, now=now)
        # Oldest first, then by id as ASCII text (SPEC.md §6.6). Sorted here, not by ORDER BY:
        # PostgreSQL orders text by the database's collation, which need not be byte order.
        return sorted(sessions, key=lambda session: (session.created_at, session.id))

    async def end(self, session_id: str, *, user_id: str, reason: str, now: int) -> bool:
        """End one of the user's live sessions; False if it is not one (unknown or another
        user's: the caller cannot tell which)."""
        return await self._store.end_live(session_id, user_id=user_id, reason=reason, now=now)

    async def end_all(self, user_id: str, *, reason: str, now: int) -> int:
        return await self._store.end_all(user_id, reason=reason, now=now)

    async def revoke_by_refresh_token(self, *, token_hash: str, now: int) -> Revocation | None:
        """End the session of a refresh token, any it ever had; None if no session has it."""
        session_id = await self._store.session_of_refresh_token(token_hash)
        if session_id is None:
            return None
        return await self.revoke_session(session_id=session_id, now=now)

    async def revoke_session(self, *, session_id: str, now: int) -> Revocation:
        """End a session found by one of its access tokens (RFC 7009)."""
        ended = await self._store.end(session_id, reason=REVOCATION, now=now)
        return Revocation(session_id=session_id, ended=ended)


def _bound(session: LiveSession | None, token: VerifiedAccessToken) -> LiveSession | None:
    """The session if it is still the token's user's and bound to the token's key."""
    if session is None or session.user_id != token.subject or session.dpop_jkt != token.jkt:
        return None
    return session
