"""The split-secret login: start (SPEC.md §6.1) and completion (SPEC.md §6.2)."""

from __future__ import annotations

import functools
import hmac
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from protocol.check_phrase import check_phrase
from protocol.dpop import VerifiedDPoPProof
from protocol.email_address import parse_email_address
from protocol.encoding import b64url_encode
from protocol.errors import AttemptState, InvalidEmail, InvalidGrant, MalformedInput
from protocol.link import build_login_link
from protocol.split_secret import keyed_hash, new_login_secrets, parse_attempt_id, parse_half
from server.clock import Clock, RandomBytes
from server.events import Emitter, EventSink
from server.keyring import Keyring
from server.mail import outbox
from server.mail.orders import LoginLinkOrder, MailOrder, NewDeviceOrder, NoAccountOrder
from server.metrics import ATTEMPTS_LOCKED
from server.ratelimit import Limit, RateLimiter, pair, rate_limit_client
from server.settings import Settings
from server.signing_keys import ServerKeys
from server.storage.database import (
    MISSING_REFERENCES,
    Connection,
    Database,
    Row,
    Statement,
    is_missing_reference,
)
from server.storage.outbox import queue_row
from server.storage.refresh import refresh_token_row
from server.storage.replay import DatabaseReplayStore
from server.storage.sessions import LIVE, live_window
from server.tokens import TokenPair, mint_access_token, new_refresh_token

GRANT_TYPE_MAGIC_LINK = "urn:splitlink:params:oauth:grant-type:magic-link"
MAX_DEVICE_NAME_LENGTH = 64
_NOT_COMPLETABLE = "the login attempt cannot be completed; start a new login"
# The attempt and the account of its address, if there is one yet (SPEC.md §6.2 step 7.1).
_ATTEMPT = (
    "SELECT a.dpop_jkt, a.device_half_hash, a.email_half_hash, a.expires_at, a.consumed_at, "
    "a.failed_count, a.signup_allowed, a.email_canonical, a.email_address, a.device_name, "
    "a.key_alg, u.id AS account_id, u.email_address AS account_address, "
    "u.disabled_at AS account_disabled_at FROM login_attempts a "
    "LEFT JOIN users u ON u.email_canonical = a.email_canonical WHERE a.id = :id"
)
# What stopped a consume that found no row (SPEC.md §6.2 step 7.6).
_FINISHED = (
    "SELECT a.consumed_at, a.failed_count, u.disabled_at AS account_disabled_at "
    "FROM login_attempts a LEFT JOIN users u ON u.email_canonical = a.email_canonical "
    "WHERE a.id = :id"
)
# The account of a canonical address, if there is one.
_ACCOUNT = "SELECT id, email_address, disabled_at FROM users WHERE email_canonical = :canonical"
# The same, and whether a key holds a live session of that account.
_ACCOUNT_AND_KEY = (
    "SELECT u.id, u.email_address, u.disabled_at, EXISTS (SELECT 1 FROM sessions s "  # noqa: S608 - constants
    f"WHERE s.user_id = u.id AND s.dpop_jkt = :jkt AND {LIVE}) AS key_holds_session "
    "FROM users u WHERE u.email_canonical = :canonical"
)
# A session's reference to its user: what a concurrent first login leaves unmet.
_SESSION_USER = "sessions_user_id_fkey"

RunGuarded = Callable[[Statement, Sequence[Statement]], Awaitable[list[Row]]]


@dataclass(frozen=True)
class StartedLogin:
    attempt_id: str
    device_half: str
    expires_in: int
    check_phrase: str

    def __repr__(self) -> str:
        return f"StartedLogin(attempt_id={self.attempt_id!r}, expires_in={self.expires_in})"


def parse_device_name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedInput("device_name must be a string")
    name = value.strip()
    if not name or len(name) > MAX_DEVICE_NAME_LENGTH:
        raise MalformedInput(f"device_name must have 1 to {MAX_DEVICE_NAME_LENGTH} characters")
    # Control and format characters (CR, LF, bidi overrides) could forge lines in the email;
    # a lone surrogate (Cs) cannot be stored or sent as UTF-8.
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in name):
        raise MalformedInput("device_name must not contain control characters")
    return name


def _half_hash(keyring: Keyring, *, which: str, attempt_id: str, half: str) -> str:
    return keyed_hash(key=keyring.hmac_key, purpose=which, value=half, context=attempt_id).hex()


class LoginService:
    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        keyring: Keyring,
        keys: ServerKeys,
        rate_limiter: RateLimiter,
        replay: DatabaseReplayStore,
        clock: Clock,
        random_bytes: RandomBytes,
        events: EventSink,
    ) -> None:
        self._settings = settings
        self._db = db
        self._keyring = keyring
        self.keys = keys
        self._limits = rate_limiter
        self._replay = replay
        self._clock = clock
        self._random = random_bytes
        self.emit = Emitter(events, clock)
        self._mail_domain = urlsplit(settings.public_url).hostname or "localhost"

    async def start(
        self, *, email: Any, device_name: Any, proof: VerifiedDPoPProof, client_ip: str
    ) -> StartedLogin:
        """Create an attempt bound to the proof's key and queue its email.

        The answer is the same for known and unknown addresses; no user row is created here
        (threats.md C10), and no mail is sent inside the request.
        """
        settings = self._settings
        now = self._clock.now()
        client = rate_limit_client(client_ip, ipv6_prefix=settings.rate_limit_ipv6_prefix)
        network = rate_limit_client(client_ip, ipv6_prefix=settings.rate_limit_ipv6_network_prefix)
        per_ip = Limit("start-ip", client, settings.rate_limit_start_per_ip)
        # One subscriber holds many clients (/64s) but one network, so the network bounds the
        # starts of all of them, and is what counts towards an address's cap.
        per_network = Limit("start-net", network, settings.rate_limit_start_per_network)
        try:
            address = parse_email_address(email)
            name = parse_device_name(device_name)
        except (InvalidEmail, MalformedInput):
            # Refused input still counts against its client and network, and the limits come
            # first.
            (await self._limits.hit_in_turn((per_ip, per_network), now=now)).require(
                per_ip, per_network
            )
            raise
        canonical = address.canonical
        # In this order, each counted only while the one before it is within its limit: a
        # client, network or key refused by its own bucket cannot go on using up the address's.
        per_key = Limit(
            "start-email-key", pair(canonical, proof.jkt), settings.rate_limit_start_per_email_key
        )
        per_client = Limit(
            "start-email-client",
            pair(canonical, network),
            settings.rate_limit_start_per_email_client,
        )
        per_address = Limit("start-email", canonical, settings.rate_limit_start_per_email)
        # The account's stored address is read with the counts (one round trip on PostgreSQL).
        counts = await self._limits.hit_in_turn(
            (per_ip, per_network, per_key, per_client, per_address),
            now=now,
            beside=(
                _ACCOUNT_AND_KEY,
                {
                    "canonical": canonical,
                    "jkt": proof.jkt,
                    **live_window(now, idle_timeout=settings.session_idle_timeout),
                },
            ),
        )
        user = counts.read[0] if counts.read else None
        if user is not None and user["key_holds_session"]:
            # The owner's own key: strangers on other networks, or on many, may have used up
            # the address's starts, and must not keep the owner out. The mail it adds is bounded
            # by its own bucket, and only the account's keys get this far (SPEC.md §6.11).
            counts.require(per_ip, per_network, per_key)
        else:
            # Any other key gets the same answer, whether or not the address has an account.
            counts.require(per_ip, per_network, per_key, per_client, per_address)
        secrets = new_login_secrets(self._random)
        mail = outbox.new_queued_mail(random_bytes=self._random, domain=self._mail_domain)
        phrase = check_phrase(proof.jkt)
        link = build_login_link(
            public_url=settings.public_url,
            attempt_id=secrets.attempt_id,
            email_half=secrets.email_half,
        )

        # Mail goes to the address stored for the account, never to the submitted spelling.
        recipient = user["email_address"] if user is not None else address.address
        # A disabled account's attempt is recorded like any other, so the answer does not
        # change, but it can never complete and no mail is queued for it (SPEC.md §6.1).
        disabled = user is not None and user["disabled_at"] is not None
        signup_allowed = not disabled and (user is not None or settings.signup_policy == "open")
        attempt_row = (
            "INSERT INTO login_attempts (id, email_canonical, email_address, device_name, "
            "dpop_jkt, key_alg, device_half_hash, email_half_hash, signup_allowed, "
            "created_at, expires_at) VALUES (:id, :canonical, :address, :device_name, :jkt, "
            ":alg, :device_hash, :email_hash, :signup_allowed, :now, :expires_at)",
            {
                "id": secrets.attempt_id,
                "canonical": address.canonical,
                "address": recipient,
                "device_name": name,
                "jkt": proof.jkt,
                "alg": proof.key.alg,
                "device_hash": _half_hash(
                    self._keyring,
                    which="device-half",
                    attempt_id=secrets.attempt_id,
                    half=secrets.device_half,
                ),
                "email_hash": _half_hash(
                    self._keyring,
                    which="email-half",
                    attempt_id=secrets.attempt_id,
                    half=secrets.email_half,
                ),
                "signup_allowed": 1 if signup_allowed else 0,
                "now": now,
                "expires_at": now + settings.attempt_lifetime,
            },
        )
        # Either order is a few hundred bytes of JSON, sealed: the same work whether or not
        # the address has an account. The dispatcher renders it (docs/design.md §12.1).
        order: MailOrder
        if signup_allowed:
            order = LoginLinkOrder(
                recipient=recipient,
                message_id=mail.message_id,
                link=link,
                device_name=name,
                requested_at=now,
                expires_in_minutes=settings.attempt_lifetime // 60,
                check_phrase=phrase,
            )
        else:
            order = NoAccountOrder(
                recipient=recipient, message_id=mail.message_id, requested_at=now
            )
        queued = queue_row(
            outbox.seal_mail(
                mail,
                order,
                attempt_id=secrets.attempt_id if signup_allowed else None,
                keyring=self._keyring,
                random_bytes=self._random,
            ),
            now=now,
        )
        # Recorded once the request is known to be well-formed (threats.md B6), with the
        # attempt it starts, in one atomic unit (SPEC.md §4.4).
        writes = [attempt_row] if disabled else [attempt_row, queued]
        await self._replay.record_with(proof, now=now, writes=writes)
        self.emit(
            "login.started",
            attempt_id=secrets.attempt_id,
            jkt=proof.jkt,
            subject=user["id"] if user is not None else None,
            client_address=client_ip,
        )
        return StartedLogin(
            attempt_id=secrets.attempt_id,
            device_half=secrets.device_half,
            expires_in=settings.attempt_lifetime,
            check_phrase=phrase,
        )

    async def complete(
        self, *, form: dict[str, str], proof: VerifiedDPoPProof, client_ip: str
    ) -> TokenPair:
        """Redeem an attempt: key binding and both halves, then one conditional consume."""
        settings = self._settings
        now = self._clock.now()
        client = rate_limit_client(client_ip, ipv6_prefix=settings.rate_limit_ipv6_prefix)
        await self._limits.hit(
            Limit("complete-ip", client, settings.rate_limit_complete_per_ip), now=now
        )
        attempt_id = parse_attempt_id(form.get("attempt_id"))
        device_half = parse_half(form.get("device_half"), field="device_half")
        email_half = parse_half(form.get("email_half"), field="email_half")
        device_hash = _half_hash(
            self._keyring, which="device-half", attempt_id=attempt_id, half=device_half
        )
        email_hash = _half_hash(
            self._keyring, which="email-half", attempt_id=attempt_id, half=email_half
        )

        # On both backends the replay entry commits whatever the outcome, so a refused
        # completion has used up its proof (SPEC.md §4.4).
        read = (_ATTEMPT, {"id": attempt_id})
        redeem = functools.partial(
            self._redeem,
            attempt_id=attempt_id,
            proof=proof,
            device_hash=device_hash,
            email_hash=email_hash,
            now=now,
        )
        if self._db.dialect == "sqlite":
            # One write transaction for all of it: a statement is a call here, not a round
            # trip, and the transaction holds SQLite's write lock from its start.
            async def in_transaction(conn: Connection) -> tuple[str, TokenPair | None]:
                attempts = await self._replay.record_in(conn, proof, now=now, read=read)
                return await redeem(attempts, conn.run_guarded)

            outcome, tokens = await self._db.run(in_transaction)
        else:
            # Two statements, each atomic on its own, instead of a transaction of six round
            # trips (docs/design.md §11.3): the entry with the read, then the consume with
            # everything a consume must commit with. The comparisons between them read only
            # what never changes once an attempt exists; the consume checks the rest again.
            attempts = await self._replay.record_with(proof, now=now, writes=(), read=read)
            outcome, tokens = await redeem(attempts, self._db.run_guarded)
        if outcome in ("mismatch", "unknown_attempt"):
            # The count that locks the attempt. One atomic increment in its own statement, so
            # concurrent failures all count at every isolation level and none conflicts with
            # another (threats.md C6). An unknown id is counted too, where the statement finds
            # no row: otherwise its answer would come a round trip sooner and tell which ids
            # exist (SPEC.md §6.4).
            counted = await self._db.statement(
                "UPDATE login_attempts SET failed_count = failed_count + 1 WHERE id = :id "
                "RETURNING failed_count",
                {"id": attempt_id},
            )
            # Each increment returns its own count, so exactly one failure sees the lock close.
            if counted and int(counted[0]["failed_count"]) == settings.max_failed_completions:
                ATTEMPTS_LOCKED.inc()
        if tokens is None:
            self.emit(
                "login.failed",
                attempt_id=attempt_id,
                reason=outcome,
                jkt=proof.jkt,
                client_address=client_ip,
            )
            if outcome in ("unknown_attempt", "mismatch", "no_account", "user_disabled"):
                raise InvalidGrant(_NOT_COMPLETABLE)
            # Only the holder of the right key and both halves learns why, so that an app
            # whose completion answer was lost can tell a consumed attempt from the others.
            state = AttemptState(outcome)
            raise InvalidGrant(
                f"the login attempt is {state}; start a new login", attempt_state=state
            )
        self.emit(
            "login.completed",
            attempt_id=attempt_id,
            jkt=proof.jkt,
            subject=tokens.user_id,
            session_id=tokens.session_id,
            client_address=client_ip,
        )
        return tokens

    async def _redeem(
        self,
        attempts: list[Row],
        run_guarded: RunGuarded,
        *,
        attempt_id: str,
        proof: VerifiedDPoPProof,
        device_hash: str,
        email_hash: str,
        now: int,
    ) -> tuple[str, TokenPair | None]:
        """Every outcome of the completion but the failure count, from the attempt as read."""
        settings = self._settings
        attempt = attempts[0] if attempts else None
        if attempt is None:
            return "unknown_attempt", None
        # Evaluate all three comparisons, in constant time, before deciding.
        key_ok = hmac.compare_digest(attempt["dpop_jkt"], proof.jkt)
        device_ok = hmac.compare_digest(attempt["device_half_hash"], device_hash)
        email_ok = hmac.compare_digest(attempt["email_half_hash"], email_hash)
        if not (key_ok & device_ok & email_ok):
            return "mismatch", None
        if attempt["consumed_at"] is not None:
            return "consumed", None
        if int(attempt["failed_count"]) >= settings.max_failed_completions:
            return "locked", None
        if int(attempt["expires_at"]) <= now:
            return "expired", None
        if not attempt["signup_allowed"] and attempt["account_id"] is None:
            # Closed sign-up: only an existing account may complete. An account deleted before
            # the consume takes its attempts with it, so the consume then finds no row.
            return "no_account", None
        if attempt["account_disabled_at"] is not None:
            # Nothing is written; the consume checks this again (SPEC.md §6.2 step 7.5).
            return "user_disabled", None
        account: Row | None = None
        if attempt["account_id"] is not None:
            account = {"id": attempt["account_id"], "email_address": attempt["account_address"]}
        open_session = functools.partial(
            self._consume_and_open_session,
            run_guarded,
            attempt_id=attempt_id,
            attempt=attempt,
            proof=proof,
            now=now,
        )
        try:
            tokens = await open_session(account=account)
        except MISSING_REFERENCES as exc:
            if not is_missing_reference(exc, constraint=_SESSION_USER):
                raise
            # PostgreSQL only: a concurrent first login for this address created the account
            # after the read, so this one's new account was not inserted and its session
            # named no user. Nothing of the statement took effect; once more, with that account.
            tokens = await open_session(
                account=await self._existing_account(attempt["email_canonical"])
            )
        if tokens is None:
            return await self._finished_state(attempt_id), None
        return "completed", tokens

    async def _finished_state(self, attempt_id: str) -> str:
        """Which state stopped a consume that found no row: a concurrent completion won, or
        failures counted since the read reached the limit. The conditions of the consume only
        ever turn false, and `expires_at` was checked with the same `now`, so an attempt that
        is neither consumed nor locked is no longer there (housekeeping, docs/design.md §6)."""
        rows = await self._db.statement(_FINISHED, {"id": attempt_id})
        attempt = rows[0] if rows else None
        if attempt is not None and attempt["account_disabled_at"] is not None:
            return "user_disabled"
        if attempt is not None and attempt["consumed_at"] is not None:
            return "consumed"
        if attempt is not None and attempt["failed_count"] >= self._settings.max_failed_completions:
            return "locked"
        return "expired"

    async def _consume_and_open_session(
        self,
        run_guarded: RunGuarded,
        *,
        attempt_id: str,
        attempt: Row,
        account: Row | None,
        proof: VerifiedDPoPProof,
        now: int,
    ) -> TokenPair | None:
        """The consume, and only if it succeeds, the account at its first login, the session,
        its notice and its refresh token, all atomically (docs/design.md §1). None if the consume
        found the attempt consumed, expired or locked meanwhile."""
        settings = self._settings
        writes: list[Statement] = []
        if account is None:
            # Only with sign-up allowed (checked before). Concurrent first logins for one
            # address make one user (threats.md D2): the later insert does nothing, and its
            # session, naming the id that was not inserted, fails the statement.
            account = {
                "id": b64url_encode(self._random(16)),
                "email_address": attempt["email_address"],
            }
            writes.append(
                (
                    "INSERT INTO users (id, email_canonical, email_address, created_at) "
                    "VALUES (:id, :canonical, :address, :now) "
                    "ON CONFLICT (email_canonical) DO NOTHING",
                    {
                        "id": account["id"],
                        "canonical": attempt["email_canonical"],
                        "address": account["email_address"],
                        "now": now,
                    },
                )
            )
        session_id = b64url_encode(self._random(16))
        writes.append(
            (
                "INSERT INTO sessions (id, user_id, attempt_id, device_name, dpop_jkt, key_alg, "
                "auth_time, created_at, last_used_at, expires_at) VALUES (:id, :user_id, "
                ":attempt_id, :device_name, :jkt, :alg, :now, :now, :now, :expires_at)",
                {
                    "id": session_id,
                    "user_id": account["id"],
                    "attempt_id": attempt_id,
                    "device_name": attempt["device_name"],
                    "jkt": proof.jkt,
                    "alg": attempt["key_alg"],
                    "now": now,
                    "expires_at": now + settings.session_absolute_lifetime,
                },
            )
        )
        # The new-device notice is committed with the session it reports (NIST SP 800-63B-4
        # §4.6): no session without its notice, and no notice for a session that never was.
        notice = outbox.new_queued_mail(random_bytes=self._random, domain=self._mail_domain)
        writes.append(
            queue_row(
                outbox.seal_mail(
                    notice,
                    NewDeviceOrder(
                        recipient=account["email_address"],
                        message_id=notice.message_id,
                        device_name=attempt["device_name"],
                        key_alg=attempt["key_alg"],
                        signed_in_at=now,
                        session_id=session_id,
                        check_phrase=check_phrase(proof.jkt),
                    ),
                    attempt_id=None,
                    keyring=self._keyring,
                    random_bytes=self._random,
                ),
                now=now,
            )
        )
        refresh_token, refresh_hash = new_refresh_token(
            hmac_key=self._keyring.hmac_key, random_bytes=self._random
        )
        writes.append(refresh_token_row(token_hash=refresh_hash, session_id=session_id, now=now))
        # Single use rests on this one conditional statement (docs/design.md §1).
        # An account disabled since the read is refused here too (SPEC.md §6.2 step 7.6).
        consume = (
            "UPDATE login_attempts SET consumed_at = :now WHERE id = :id AND consumed_at IS NULL "
            "AND expires_at > :now AND failed_count < :max AND NOT EXISTS (SELECT 1 FROM users "
            "WHERE email_canonical = :canonical AND disabled_at IS NOT NULL) RETURNING id",
            {
                "id": attempt_id,
                "now": now,
                "max": settings.max_failed_completions,
                "canonical": attempt["email_canonical"],
            },
        )
        if not await run_guarded(consume, writes):
            return None
        access_token, lifetime = mint_access_token(
            settings=settings,
            keys=self.keys.key_set,
            random_bytes=self._random,
            user_id=account["id"],
            session_id=session_id,
            jkt=proof.jkt,
            auth_time=now,
            now=now,
            session_expires_at=now + settings.session_absolute_lifetime,
        )
        return TokenPair(
            access_token=access_token,
            refresh_token=refresh_token,
            expires_in=lifetime,
            user_id=account["id"],
            session_id=session_id,
        )

    async def _existing_account(self, canonical: str) -> Row:
        rows = await self._db.statement(_ACCOUNT, {"canonical": canonical})
        if not rows:  # pragma: no cover - the failed reference was to this very row
            raise RuntimeError("the account that a concurrent login created is not there")
        return rows[0]
