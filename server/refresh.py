"""The refresh grant (RFC 6749 §6 with RFC 9449 §5): rotation with reuse detection (SPEC.md §6.7).

Each refresh replaces the presented token by its child. Presenting a rotated token again:
- within the grace window, while the child is still unused, answers with the same child (a
  device that lost the response retries; concurrent refreshes yield one child, never a fork);
- otherwise it is reuse: the whole session is revoked and a security event recorded.
A refresh without a proof by the session's key is refused and rotates nothing.
"""

from __future__ import annotations

import hmac
from typing import Any

from protocol.dpop import VerifiedDPoPProof
from protocol.errors import InvalidGrant, MalformedInput
from server.clock import Clock, RandomBytes
from server.events import Emitter, EventSink
from server.keyring import Keyring
from server.settings import Settings
from server.signing_keys import ServerKeys
from server.storage.database import Connection, Database, Row
from server.storage.replay import DatabaseReplayStore
from server.storage.sessions import revoke_session_rows
from server.tokens import TokenPair, child_refresh_token, mint_access_token, refresh_token_hash

MAX_REFRESH_TOKEN_LENGTH = 128
_REFUSED = "the refresh token is not valid; sign in again"


# The presented token with its session.
_TOKEN_ROW = (
    "SELECT rt.session_id, rt.rotated_at, rt.child_hash, rt.revoked_at, s.user_id, "
    "s.dpop_jkt, s.revoked_at AS session_revoked_at, s.expires_at, s.last_used_at, "
    "s.auth_time, u.disabled_at AS user_disabled_at FROM refresh_tokens rt "
    "JOIN sessions s ON s.id = rt.session_id JOIN users u ON u.id = s.user_id "
    "WHERE rt.token_hash = :hash"
)


class RefreshService:
    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        keyring: Keyring,
        keys: ServerKeys,
        replay: DatabaseReplayStore,
        clock: Clock,
        random_bytes: RandomBytes,
        events: EventSink,
        idle_timeout: int,
    ) -> None:
        self._settings = settings
        self._db = db
        self._keyring = keyring
        self._keys = keys
        self._replay = replay
        self._clock = clock
        self._random = random_bytes
        self._emit = Emitter(events, clock)
        self._idle_timeout = idle_timeout

    async def refresh(
        self, *, form: dict[str, str], proof: VerifiedDPoPProof, client_ip: str | None = None
    ) -> TokenPair:
        presented = form.get("refresh_token")
        if presented is None:
            raise MalformedInput("refresh_token is required")
        if len(presented) > MAX_REFRESH_TOKEN_LENGTH:
            raise InvalidGrant(_REFUSED)
        now = self._clock.now()
        key = self._keyring.hmac_key
        parent_hash = refresh_token_hash(key, presented)
        child = child_refresh_token(key, presented)
        child_hash = refresh_token_hash(key, child)

        async def rotate(conn: Connection) -> tuple[str, dict[str, Any] | None]:
            # Every outcome commits, so a refused refresh has used up its proof (SPEC.md §4.4).
            rows = await self._replay.record_in(
                conn, proof, now=now, read=(_TOKEN_ROW, {"hash": parent_hash})
            )
            return await self._rotate(
                conn,
                row=rows[0] if rows else None,
                parent_hash=parent_hash,
                child_hash=child_hash,
                proof=proof,
                now=now,
            )

        outcome, session = await self._db.run(rotate)
        if outcome not in ("rotated", "retried"):
            self._emit(
                "refresh.refused",
                reason=outcome,
                session_id=session["id"] if session else None,
                subject=session["user_id"] if session else None,
                jkt=proof.jkt,
                client_address=client_ip,
            )
            if outcome == "reused":
                self._emit(
                    "session.revoked",
                    session_id=session["id"] if session else None,
                    subject=session["user_id"] if session else None,
                    reason="refresh_token_reused",
                    client_address=client_ip,
                )
            raise InvalidGrant(_REFUSED)
        if session is None:  # pragma: no cover - both outcomes above carry the session
            raise InvalidGrant(_REFUSED)
        access_token, lifetime = mint_access_token(
            settings=self._settings,
            keys=self._keys.key_set,
            random_bytes=self._random,
            user_id=session["user_id"],
            session_id=session["id"],
            jkt=session["dpop_jkt"],
            auth_time=int(session["auth_time"]),
            now=now,
            session_expires_at=int(session["expires_at"]),
        )
        self._emit(
            "refresh." + outcome,
            session_id=session["id"],
            subject=session["user_id"],
            jkt=proof.jkt,
            client_address=client_ip,
        )
        return TokenPair(access_token=access_token, refresh_token=child, expires_in=lifetime)

    async def _rotate(
        self,
        conn: Connection,
        *,
        row: Row | None,
        parent_hash: str,
        child_hash: str,
        proof: VerifiedDPoPProof,
        now: int,
    ) -> tuple[str, dict[str, Any] | None]:
        """`row` is the presented token's, read with the replay entry."""
        if row is None:
            return "unknown", None
        session = {
            "id": row["session_id"],
            "user_id": row["user_id"],
            "dpop_jkt": row["dpop_jkt"],
            "auth_time": row["auth_time"],
            "expires_at": row["expires_at"],
        }
        # RFC 9449 §5: the refresh token is bound to the key that the session was opened with.
        if not hmac.compare_digest(row["dpop_jkt"], proof.jkt):
            return "wrong_key", session
        if (
            row["session_revoked_at"] is not None
            # A disabled user's sessions were ended with it; this also covers one opened by a
            # completion that raced the disable (SPEC.md §6.6).
            or row["user_disabled_at"] is not None
            or int(row["expires_at"]) <= now
            or int(row["last_used_at"]) <= now - self._idle_timeout
            or row["revoked_at"] is not None
        ):
            return "session_ended", session
        if row["rotated_at"] is None:
            # One conditional statement decides the winner among concurrent refreshes.
            won = await conn.fetch_one(
                "UPDATE refresh_tokens SET rotated_at = :now, child_hash = :child "
                "WHERE token_hash = :hash AND rotated_at IS NULL AND revoked_at IS NULL "
                "RETURNING token_hash",
                {"now": now, "child": child_hash, "hash": parent_hash},
            )
            if won is not None:
                await conn.run_together(
                    [
                        (
                            "INSERT INTO refresh_tokens (token_hash, session_id, created_at) "
                            "VALUES (:hash, :session_id, :now)",
                            {"hash": child_hash, "session_id": row["session_id"], "now": now},
                        ),
                        (
                            "UPDATE sessions SET last_used_at = :now WHERE id = :id",
                            {"now": now, "id": row["session_id"]},
                        ),
                    ]
                )
                return "rotated", session
            # Lost a race under READ COMMITTED: read what the winner committed.
            row = await conn.fetch_one(_TOKEN_ROW, {"hash": parent_hash})
            if row is None or row["rotated_at"] is None:
                return "unknown", session
        child = await conn.fetch_one(
            "SELECT rotated_at, revoked_at FROM refresh_tokens WHERE token_hash = :hash",
            {"hash": row["child_hash"]},
        )
        within_grace = now - int(row["rotated_at"]) <= self._settings.refresh_grace_period
        if (
            within_grace
            and row["child_hash"] == child_hash
            and child is not None
            and child["rotated_at"] is None
            and child["revoked_at"] is None
        ):
            return "retried", session
        await revoke_session_rows(
            conn, session_id=row["session_id"], reason="refresh_token_reused", now=now
        )
        return "reused", session
