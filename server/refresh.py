"""The refresh grant (RFC 6749 §6 with RFC 9449 §5): rotation with reuse detection (SPEC.md §6.7).

Each refresh replaces the presented token by its child. Presenting a rotated token again:
- within the grace window, while the child is still unused, answers with the same child (a
  device that lost the response retries; concurrent refreshes yield one child, never a fork);
- otherwise it is reuse: the whole session is revoked and a security event recorded.
A refresh without a proof by the session's key is refused and rotates nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from protocol.dpop import VerifiedDPoPProof
from protocol.errors import InvalidGrant
from server.clock import Clock, RandomBytes
from server.events import Emitter, EventSink
from server.keyring import Keyring
from server.settings import Settings
from server.signing_keys import ServerKeys
from server.storage.refresh import ChildToken, PresentedToken
from server.tokens import TokenPair, child_refresh_token, mint_access_token, refresh_token_hash

MAX_REFRESH_TOKEN_LENGTH = 128
REUSED_REASON = "refresh_token_reused"
_REFUSED = "the refresh token is not valid; sign in again"


class RefreshOutcome(Enum):
    """SPEC.md §6.7 step 4; the value names the event and the reason of a refusal."""

    ROTATED = "rotated"
    RETRIED = "retried"
    UNKNOWN = "unknown"
    WRONG_KEY = "wrong_key"
    SESSION_ENDED = "session_ended"
    REUSED = "reused"


@dataclass(frozen=True, slots=True)
class RefreshCommand:
    """A refresh request: the presented refresh token."""

    refresh_token: str

    def __repr__(self) -> str:
        return "RefreshCommand(refresh_token=...)"


class RefreshRotation(Protocol):
    """The steps of one refresh on the presented token, all in one transaction."""

    async def record_proof_and_read(
        self, proof: VerifiedDPoPProof, *, now: int
    ) -> PresentedToken | None:
        """Record the proof in the replay store (a replay raises InvalidDPoPProof) and read the
        token with its session, as one unit."""
        ...

    async def read_again(self) -> PresentedToken | None:
        """The token as committed now."""
        ...

    async def claim(self, *, child_hash: str, now: int) -> bool:
        """Mark the token rotated to `child_hash` if it is neither rotated nor revoked; one
        conditional statement, so one of concurrent claims wins."""
        ...

    async def add_child(self, *, child_hash: str, session_id: str, now: int) -> None:
        """Store the child and set the session's last use to `now`."""
        ...

    async def child(self, *, child_hash: str) -> ChildToken | None: ...

    async def end_session(self, *, session_id: str, reason: str, now: int) -> None:
        """End the session with every refresh token of its family."""
        ...


class RefreshStore(Protocol):
    def rotations(
        self, *, token_hash: str
    ) -> AsyncIterator[AbstractAsyncContextManager[RefreshRotation]]:
        """Transaction attempts: each commits when its block ends; after a serialization
        conflict the next one runs the refresh again, up to a bound."""
        ...


class RefreshService:
    def __init__(
        self,
        *,
        settings: Settings,
        store: RefreshStore,
        keyring: Keyring,
        keys: ServerKeys,
        clock: Clock,
        random_bytes: RandomBytes,
        events: EventSink,
        idle_timeout: int,
    ) -> None:
        self._settings = settings
        self._store = store
        self._keyring = keyring
        self._keys = keys
        self._clock = clock
        self._random = random_bytes
        self._emit = Emitter(events, clock)
        self._idle_timeout = idle_timeout

    async def refresh(
        self, command: RefreshCommand, *, proof: VerifiedDPoPProof, client_ip: str | None = None
    ) -> TokenPair:
        presented = command.refresh_token
        if len(presented) > MAX_REFRESH_TOKEN_LENGTH:
            raise InvalidGrant(_REFUSED)
        now = self._clock.now()
        key = self._keyring.hmac_key
        parent_hash = refresh_token_hash(key, presented)
        child = child_refresh_token(key, presented)
        child_hash = refresh_token_hash(key, child)

        outcome, session = RefreshOutcome.UNKNOWN, None
        async for attempt in self._store.rotations(token_hash=parent_hash):
            async with attempt as rotation:
                # Every outcome commits, so a refused refresh has used up its proof (§4.4).
                outcome, session = await self._rotate(
                    rotation, child_hash=child_hash, proof=proof, now=now
                )
        if outcome not in (RefreshOutcome.ROTATED, RefreshOutcome.RETRIED):
            self._emit(
                "refresh.refused",
                reason=outcome.value,
                session_id=session.session_id if session else None,
                subject=session.user_id if session else None,
                jkt=proof.jkt,
                client_address=client_ip,
            )
            if outcome is RefreshOutcome.REUSED:
                self._emit(
                    "session.revoked",
                    session_id=session.session_id if session else None,
                    subject=session.user_id if session else None,
                    reason=REUSED_REASON,
                    client_address=client_ip,
                )
            raise InvalidGrant(_REFUSED)
        if session is None:  # pragma: no cover - both outcomes above carry the session
            raise InvalidGrant(_REFUSED)
        access_token, lifetime = mint_access_token(
            settings=self._settings,
            keys=self._keys.key_set,
            random_bytes=self._random,
            user_id=session.user_id,
            session_id=session.session_id,
            jkt=session.dpop_jkt,
            auth_time=session.auth_time,
            now=now,
            session_expires_at=session.session_expires_at,
        )
        self._emit(
            "refresh." + outcome.value,
            session_id=session.session_id,
            subject=session.user_id,
            jkt=proof.jkt,
            client_address=client_ip,
        )
        return TokenPair(access_token=access_token, refresh_token=child, expires_in=lifetime)

    async def _rotate(
        self, rotation: RefreshRotation, *, child_hash: str, proof: VerifiedDPoPProof, now: int
    ) -> tuple[RefreshOutcome, PresentedToken | None]:
        """SPEC.md §6.7 step 4, in one transaction. The token returned is the one first read,
        whose session the answer and the events name."""
        token = await rotation.record_proof_and_read(proof, now=now)
        # 4.1
        if token is None:
            return RefreshOutcome.UNKNOWN, None
        # 4.2, RFC 9449 §5: the refresh token is bound to the key the session was opened with.
        if not hmac.compare_digest(token.dpop_jkt, proof.jkt):
            return RefreshOutcome.WRONG_KEY, token
        # 4.3
        if (
            token.session_revoked
            # A disabled user's sessions were ended with it; this also covers one opened by a
            # completion that raced the disable (SPEC.md §6.6).
            or token.user_disabled
            or token.session_expires_at <= now
            or token.session_last_used_at <= now - self._idle_timeout
            or token.token_revoked
        ):
            return RefreshOutcome.SESSION_ENDED, token
        # 4.4
        current = token
        if token.rotated_at is None:
            if await rotation.claim(child_hash=child_hash, now=now):
                await rotation.add_child(
                    child_hash=child_hash, session_id=token.session_id, now=now
                )
                return RefreshOutcome.ROTATED, token
            # Lost a race under READ COMMITTED: read what the winner committed.
            again = await rotation.read_again()
            if again is None or again.rotated_at is None:
                return RefreshOutcome.UNKNOWN, token
            current = again
        # 4.5
        if await self._is_retry(rotation, current, child_hash=child_hash, now=now):
            return RefreshOutcome.RETRIED, token
        # 4.6
        await rotation.end_session(session_id=current.session_id, reason=REUSED_REASON, now=now)
        return RefreshOutcome.REUSED, token

    async def _is_retry(
        self, rotation: RefreshRotation, token: PresentedToken, *, child_hash: str, now: int
    ) -> bool:
        """Whether a rotated token is presented again within the grace window, by the same
        parent (its child is the one derived from it), while that child is still unused."""
        stored = (
            None if token.child_hash is None else await rotation.child(child_hash=token.child_hash)
        )
        return (
            token.rotated_at is not None
            and now - token.rotated_at <= self._settings.refresh_grace_period
            and token.child_hash == child_hash
            and stored is not None
            and not stored.rotated
            and not stored.revoked
        )
