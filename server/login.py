"""The split-secret login: start (SPEC.md §6.1) and completion (SPEC.md §6.2)."""

from __future__ import annotations

import hmac
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from protocol.check_phrase import check_phrase
from protocol.dpop import VerifiedDPoPProof
from protocol.email_address import parse_email_address
from protocol.encoding import b64url_encode
from protocol.errors import InvalidEmail, InvalidGrant, MalformedInput
from protocol.link import build_login_link
from protocol.split_secret import keyed_hash, new_login_secrets, parse_attempt_id, parse_half
from server.clock import Clock, RandomBytes
from server.events import EventSink, SecurityEvent
from server.keyring import Keyring
from server.mail import outbox
from server.mail.orders import LoginLinkOrder, MailOrder, NewDeviceOrder, NoAccountOrder
from server.ratelimit import Limit, RateLimiter
from server.replay import DatabaseReplayStore
from server.settings import Settings
from server.signing_keys import ServerKeys
from server.storage.database import Connection, Database, Row
from server.tokens import TokenPair, mint_access_token, new_refresh_token

GRANT_TYPE_MAGIC_LINK = "urn:splitlink:params:oauth:grant-type:magic-link"
MAX_DEVICE_NAME_LENGTH = 64
_NOT_COMPLETABLE = "the login attempt cannot be completed; start a new login"


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
        self._events = events
        self._mail_domain = urlsplit(settings.public_url).hostname or "localhost"

    def emit(self, name: str, **fields: Any) -> None:
        self._events(SecurityEvent(name=name, at=self._clock.now(), fields=fields))

    async def start(
        self, *, email: Any, device_name: Any, proof: VerifiedDPoPProof, client_ip: str
    ) -> StartedLogin:
        """Create an attempt bound to the proof's key and queue its email.

        The answer is the same for known and unknown addresses; no user row is created here
        (attempts.md C10), and no mail is sent inside the request.
        """
        settings = self._settings
        now = self._clock.now()
        per_ip = Limit("start-ip", client_ip, settings.rate_limit_start_per_ip)
        try:
            address = parse_email_address(email)
            name = parse_device_name(device_name)
        except (InvalidEmail, MalformedInput):
            # Refused input still counts against its client, and the limit comes first.
            await self._limits.hit(per_ip, now=now)
            raise
        await self._limits.hit_in_turn(
            per_ip,
            Limit("start-email", address.canonical, settings.rate_limit_start_per_email),
            now=now,
        )
        secrets = new_login_secrets(self._random)
        mail = outbox.new_queued_mail(random_bytes=self._random, domain=self._mail_domain)
        phrase = check_phrase(proof.jkt)
        link = build_login_link(
            public_url=settings.public_url,
            attempt_id=secrets.attempt_id,
            email_half=secrets.email_half,
        )

        accounts = await self._db.statement(
            "SELECT email_address FROM users WHERE email_canonical = :canonical",
            {"canonical": address.canonical},
        )
        user = accounts[0] if accounts else None
        # Mail goes to the address stored for the account, never to the submitted spelling.
        recipient = user["email_address"] if user is not None else address.address
        signup_allowed = user is not None or settings.signup_policy == "open"
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
        # the address has an account. The dispatcher renders it (SPEC.md §7.1).
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
        queued = outbox.queue_statement(
            mail,
            order,
            attempt_id=secrets.attempt_id if signup_allowed else None,
            keyring=self._keyring,
            random_bytes=self._random,
            now=now,
        )
        # Recorded once the request is known to be well-formed (attacks.md B6), with the
        # attempt it starts, in one atomic unit (SPEC.md §4.4).
        await self._replay.record_with(proof, now=now, writes=[attempt_row, queued])
        self.emit("login.started", attempt_id=secrets.attempt_id, jkt=proof.jkt)
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
        await self._limits.hit(
            Limit("complete-ip", client_ip, settings.rate_limit_complete_per_ip), now=now
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

        async def redeem(conn: Connection) -> tuple[str, TokenPair | None]:
            # Every outcome below commits, so a refused completion has used up its proof.
            # The attempt, with the account of its address if there is one yet.
            attempts = await self._replay.record_in(
                conn,
                proof,
                now=now,
                read=(
                    "SELECT a.dpop_jkt, a.device_half_hash, a.email_half_hash, a.expires_at, "
                    "a.consumed_at, a.failed_count, a.signup_allowed, a.email_canonical, "
                    "a.email_address, a.device_name, a.key_alg, u.id AS account_id, "
                    "u.email_address AS account_address FROM login_attempts a "
                    "LEFT JOIN users u ON u.email_canonical = a.email_canonical WHERE a.id = :id",
                    {"id": attempt_id},
                ),
            )
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
                # Closed sign-up: only an existing account may complete. Users are never
                # deleted, so this answer cannot change before the consume below.
                return "no_account", None
            tokens = await self._consume_and_open_session(
                conn, attempt_id=attempt_id, attempt=attempt, proof=proof, now=now
            )
            return ("completed" if tokens is not None else "consumed"), tokens

        outcome, tokens = await self._db.run(redeem)
        if outcome == "mismatch":
            # The count that locks the attempt. One atomic increment in its own statement, so
            # concurrent failures all count at every isolation level and none conflicts with
            # another (attacks.md C6).
            await self._db.statement(
                "UPDATE login_attempts SET failed_count = failed_count + 1 WHERE id = :id "
                "RETURNING failed_count",
                {"id": attempt_id},
            )
        if tokens is None:
            self.emit("login.failed", attempt_id=attempt_id, reason=outcome, jkt=proof.jkt)
            if outcome in ("unknown_attempt", "mismatch", "no_account"):
                raise InvalidGrant(_NOT_COMPLETABLE)
            # Only the holder of the right key and both halves learns why.
            raise InvalidGrant(f"the login attempt is {outcome}; start a new login")
        self.emit("login.completed", attempt_id=attempt_id, jkt=proof.jkt)
        return tokens

    async def _consume_and_open_session(
        self,
        conn: Connection,
        *,
        attempt_id: str,
        attempt: Any,
        proof: VerifiedDPoPProof,
        now: int,
    ) -> TokenPair | None:
        settings = self._settings
        # Single use rests on this one conditional statement (SPEC.md §8.1).
        consumed = await conn.fetch_one(
            "UPDATE login_attempts SET consumed_at = :now WHERE id = :id AND consumed_at IS NULL "
            "AND expires_at > :now AND failed_count < :max RETURNING id",
            {"id": attempt_id, "now": now, "max": settings.max_failed_completions},
        )
        if consumed is None:
            return None
        user = await self._account(conn, attempt, now=now)
        session_id = b64url_encode(self._random(16))
        session_row = (
            "INSERT INTO sessions (id, user_id, attempt_id, device_name, dpop_jkt, key_alg, "
            "auth_time, created_at, last_used_at, expires_at) VALUES (:id, :user_id, "
            ":attempt_id, :device_name, :jkt, :alg, :now, :now, :now, :expires_at)",
            {
                "id": session_id,
                "user_id": user["id"],
                "attempt_id": attempt_id,
                "device_name": attempt["device_name"],
                "jkt": proof.jkt,
                "alg": attempt["key_alg"],
                "now": now,
                "expires_at": now + settings.session_absolute_lifetime,
            },
        )
        # The new-device notice is committed with the session it reports (NIST SP 800-63B-4
        # §4.6): no session without its notice, and no notice for a session that never was.
        notice = outbox.new_queued_mail(random_bytes=self._random, domain=self._mail_domain)
        queued_notice = outbox.queue_statement(
            notice,
            NewDeviceOrder(
                recipient=user["email_address"],
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
            now=now,
        )
        refresh_token, refresh_row = new_refresh_token(
            hmac_key=self._keyring.hmac_key,
            session_id=session_id,
            random_bytes=self._random,
            now=now,
        )
        await conn.run_together([session_row, queued_notice, refresh_row])
        access_token, lifetime = mint_access_token(
            settings=settings,
            keys=self.keys.key_set,
            random_bytes=self._random,
            user_id=user["id"],
            session_id=session_id,
            jkt=proof.jkt,
            auth_time=now,
            now=now,
            session_expires_at=now + settings.session_absolute_lifetime,
        )
        return TokenPair(
            access_token=access_token, refresh_token=refresh_token, expires_in=lifetime
        )

    async def _account(self, conn: Connection, attempt: Any, *, now: int) -> Row:
        """The account that the consumed attempt signs in to, created at its first login."""
        if attempt["account_id"] is not None:
            return {"id": attempt["account_id"], "email_address": attempt["account_address"]}
        # Only with sign-up allowed (checked before the consume). Concurrent first logins for
        # one address make one user (attacks.md D2).
        canonical = attempt["email_canonical"]
        created = await conn.fetch_one(
            "INSERT INTO users (id, email_canonical, email_address, created_at) "
            "VALUES (:id, :canonical, :address, :now) ON CONFLICT (email_canonical) DO NOTHING "
            "RETURNING id, email_address",
            {
                "id": b64url_encode(self._random(16)),
                "canonical": canonical,
                "address": attempt["email_address"],
                "now": now,
            },
        )
        if created is not None:
            return created
        # Another login created it since this one read the attempt.
        existing = await conn.fetch_one(
            "SELECT id, email_address FROM users WHERE email_canonical = :canonical",
            {"canonical": canonical},
        )
        if existing is None:  # pragma: no cover - the conflict above was with this row
            raise RuntimeError("the account vanished inside the completion transaction")
        return existing
