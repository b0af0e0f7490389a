"""The split-secret login: start (SPEC.md §6.1) and completion (SPEC.md §6.2)."""

from __future__ import annotations

import hmac
from contextlib import AbstractAsyncContextManager
from typing import Protocol
from urllib.parse import urlsplit

from protocol.check_phrase import check_phrase
from protocol.dpop import VerifiedDPoPProof
from protocol.email_address import parse_email_address
from protocol.errors import AttemptState, InvalidEmail, InvalidGrant, MalformedInput
from protocol.link import build_login_link
from protocol.split_secret import keyed_hash, new_login_secrets, parse_attempt_id, parse_half
from server.clock import Clock, RandomBytes
from server.events import Emitter, EventSink
from server.keyring import Keyring
from server.login_commands import (
    CompleteLogin,
    CompletionRefusal,
    StartedLogin,
    StartLogin,
    parse_device_name,
)
from server.login_mail import LoginMail
from server.login_session import SessionOpener
from server.metrics import ATTEMPTS_LOCKED
from server.ratelimit import RateLimiter, address_limits, completion_limit, start_limits
from server.settings import Settings
from server.signing_keys import ServerKeys
from server.storage.login_records import (
    AccountExists,
    FinishedAttempt,
    NewAttempt,
    NewSession,
    StartCounts,
    StoredAttempt,
)
from server.storage.rate_limit_records import Turn, Window
from server.storage.records import SealedMail
from server.tokens import TokenPair

GRANT_TYPE_MAGIC_LINK = "urn:splitlink:params:oauth:grant-type:magic-link"
_NOT_COMPLETABLE = "the login attempt cannot be completed; start a new login"


class AttemptRedemption(Protocol):
    """An attempt as read with the completion's replay entry, and its consume."""

    @property
    def attempt(self) -> StoredAttempt | None: ...

    async def consume(self, session: NewSession, *, max_failures: int) -> bool | AccountExists:
        """Consume the attempt and open `session` as one guarded unit: False if the attempt
        is no longer completable, AccountExists if the account came to exist since the read
        (nothing took effect then)."""
        ...


class LoginStore(Protocol):
    """Where attempts and the sessions they open are kept (server/storage/logins.py)."""

    async def count_start(
        self,
        *,
        turns: tuple[Turn, ...],
        window: Window,
        email_canonical: str,
        jkt: str,
        now: int,
        idle_timeout: int,
    ) -> StartCounts:
        """Count a start's limits in turn and read its address's account, with whether `jkt`
        holds a live session of it, in one step."""
        ...

    async def record_attempt(
        self, *, proof: VerifiedDPoPProof, attempt: NewAttempt, mail: SealedMail | None, now: int
    ) -> None:
        """Record the proof's replay entry, the attempt and its mail as one atomic unit."""
        ...

    def redemption(
        self, *, proof: VerifiedDPoPProof, attempt_id: str, now: int
    ) -> AbstractAsyncContextManager[AttemptRedemption]:
        """Record the completion's replay entry and read the attempt with its account; the
        entry commits whatever the block decides."""
        ...

    async def count_failure(self, *, attempt_id: str) -> int | None:
        """Count one failure; the count it made, or None for an unknown attempt."""
        ...

    async def finished(self, *, attempt_id: str) -> FinishedAttempt | None:
        """Read what may have stopped a consume."""
        ...


class LoginService:
    def __init__(
        self,
        *,
        settings: Settings,
        store: LoginStore,
        keyring: Keyring,
        keys: ServerKeys,
        rate_limiter: RateLimiter,
        clock: Clock,
        random_bytes: RandomBytes,
        events: EventSink,
    ) -> None:
        self._settings = settings
        self._store = store
        self._keyring = keyring
        self.keys = keys
        self._limits = rate_limiter
        self._clock = clock
        self._random = random_bytes
        self.emit = Emitter(events, clock)
        self._mail = LoginMail(
            keyring=keyring,
            random_bytes=random_bytes,
            domain=urlsplit(settings.public_url).hostname or "localhost",
        )
        self._sessions = SessionOpener(
            settings=settings,
            keyring=keyring,
            keys=keys,
            random_bytes=random_bytes,
            mail=self._mail,
        )

    async def start(self, command: StartLogin) -> StartedLogin:
        """Create an attempt bound to the proof's key and queue its email.

        The answer is the same for known and unknown addresses; no user row is created here
        (threats.md C10), and no mail is sent inside the request.
        """
        settings, proof = self._settings, command.proof
        now = self._clock.now()
        ip = command.client_ip
        per_ip, per_network = start_limits(settings, client_ip=ip)
        try:
            address = parse_email_address(command.email)
            name = parse_device_name(command.device_name)
        except (InvalidEmail, MalformedInput):
            # Refused input still counts against its client and network, and the limits come
            # first.
            (await self._limits.hit_in_turn((per_ip, per_network), now=now)).require(
                per_ip, per_network
            )
            raise
        canonical = address.canonical
        per_key, per_client, per_address = address_limits(
            settings, client_ip=ip, email_canonical=canonical, jkt=proof.jkt
        )
        # In this order, each counted only while the one before it is within its limit: a
        # client, network or key refused by its own bucket cannot go on using up the address's.
        in_turn = self._limits.in_turn(
            (per_ip, per_network, per_key, per_client, per_address), now=now
        )
        # The account's stored address is read with the counts (one round trip on PostgreSQL).
        counted = await self._store.count_start(
            turns=in_turn.turns,
            window=in_turn.window,
            email_canonical=canonical,
            jkt=proof.jkt,
            now=now,
            idle_timeout=settings.session_idle_timeout,
        )
        counts, user = in_turn.counted(counted.hits), counted.account
        if user is not None and user.key_holds_session:
            # The owner's own key: strangers on other networks, or on many, may have used up
            # the address's starts, and must not keep the owner out. The mail it adds is bounded
            # by its own bucket, and only the account's keys get this far (SPEC.md §6.11).
            counts.require(per_ip, per_network, per_key)
        else:
            # Any other key gets the same answer, whether or not the address has an account.
            counts.require(per_ip, per_network, per_key, per_client, per_address)
        secrets = new_login_secrets(self._random)
        phrase = check_phrase(proof.jkt)
        # Mail goes to the address stored for the account, never to the submitted spelling.
        recipient = user.account.email_address if user is not None else address.address
        # A disabled account's attempt is recorded like any other, so the answer does not
        # change, but it can never complete and no mail is queued for it (SPEC.md §6.1).
        disabled = user is not None and user.disabled
        signup_allowed = not disabled and (user is not None or settings.signup_policy == "open")
        mail = self._mail.start_mail(
            recipient=recipient,
            attempt_id=secrets.attempt_id,
            signup_allowed=signup_allowed,
            link=build_login_link(
                public_url=settings.public_url,
                attempt_id=secrets.attempt_id,
                email_half=secrets.email_half,
            ),
            device_name=name,
            requested_at=now,
            expires_in_minutes=settings.attempt_lifetime // 60,
            check_phrase=phrase,
        )
        device_hash, email_hash = self._half_hashes(
            secrets.attempt_id, device_half=secrets.device_half, email_half=secrets.email_half
        )
        attempt = NewAttempt(
            id=secrets.attempt_id,
            email_canonical=canonical,
            recipient=recipient,
            device_name=name,
            jkt=proof.jkt,
            key_alg=proof.key.alg,
            device_half_hash=device_hash,
            email_half_hash=email_hash,
            signup_allowed=signup_allowed,
            created_at=now,
            expires_at=now + settings.attempt_lifetime,
        )
        # Recorded once the request is known to be well-formed (threats.md B6), with the
        # attempt it starts, in one atomic unit (SPEC.md §4.4).
        await self._store.record_attempt(
            proof=proof, attempt=attempt, mail=None if disabled else mail, now=now
        )
        self.emit(
            "login.started",
            attempt_id=secrets.attempt_id,
            jkt=proof.jkt,
            subject=user.account.id if user is not None else None,
            client_address=ip,
        )
        return StartedLogin(
            attempt_id=secrets.attempt_id,
            device_half=secrets.device_half,
            expires_in=settings.attempt_lifetime,
            check_phrase=phrase,
        )

    async def complete(self, command: CompleteLogin) -> TokenPair:
        """Redeem an attempt: key binding and both halves, then one conditional consume."""
        settings, proof = self._settings, command.proof
        now = self._clock.now()
        await self._limits.hit(completion_limit(settings, client_ip=command.client_ip), now=now)
        attempt_id = parse_attempt_id(command.attempt_id)
        device_half = parse_half(command.device_half, field="device_half")
        email_half = parse_half(command.email_half, field="email_half")
        device_hash, email_hash = self._half_hashes(
            attempt_id, device_half=device_half, email_half=email_half
        )

        # On both backends the replay entry commits whatever the outcome, so a refused
        # completion has used up its proof (SPEC.md §4.4): a refusal is raised after the block.
        tokens: TokenPair | None = None
        async with self._store.redemption(proof=proof, attempt_id=attempt_id, now=now) as found:
            attempt = found.attempt
            refused = self._refusal(
                attempt, jkt=proof.jkt, device_hash=device_hash, email_hash=email_hash, now=now
            )
            if refused is None and attempt is not None:
                tokens = await self._consume(found, attempt=attempt, jkt=proof.jkt, now=now)
        if tokens is not None:
            self.emit(
                "login.completed",
                attempt_id=attempt_id,
                jkt=proof.jkt,
                subject=tokens.user_id,
                session_id=tokens.session_id,
                client_address=command.client_ip,
            )
            return tokens
        if refused is None:
            refused = await self._stopped(attempt_id)
        if refused in (CompletionRefusal.MISMATCH, CompletionRefusal.UNKNOWN_ATTEMPT):
            # The count that locks the attempt. An unknown id is counted too, where the count
            # finds no row: otherwise its answer would come a round trip sooner and tell which
            # ids exist (SPEC.md §6.4).
            counted = await self._store.count_failure(attempt_id=attempt_id)
            # Each increment returns its own count, so exactly one failure sees the lock close.
            if counted == settings.max_failed_completions:
                ATTEMPTS_LOCKED.inc()
        self.emit(
            "login.failed",
            attempt_id=attempt_id,
            reason=refused.value,
            jkt=proof.jkt,
            client_address=command.client_ip,
        )
        if not refused.tells_state:
            raise InvalidGrant(_NOT_COMPLETABLE)
        state = AttemptState(refused.value)
        raise InvalidGrant(f"the login attempt is {state}; start a new login", attempt_state=state)

    def _half_hashes(
        self, attempt_id: str, *, device_half: str, email_half: str
    ) -> tuple[str, str]:
        """The keyed hashes that the halves rest as (SPEC.md §5.3)."""
        key = self._keyring.hmac_key
        return (
            keyed_hash(key=key, purpose="device-half", value=device_half, context=attempt_id).hex(),
            keyed_hash(key=key, purpose="email-half", value=email_half, context=attempt_id).hex(),
        )

    def _refusal(
        self,
        attempt: StoredAttempt | None,
        *,
        jkt: str,
        device_hash: str,
        email_hash: str,
        now: int,
    ) -> CompletionRefusal | None:
        """Why the attempt as read cannot be consumed (SPEC.md §6.2 steps 7.2 to 7.5), or None."""
        if attempt is None:
            return CompletionRefusal.UNKNOWN_ATTEMPT
        # Evaluate all three comparisons, in constant time, before deciding.
        key_ok = hmac.compare_digest(attempt.jkt, jkt)
        device_ok = hmac.compare_digest(attempt.device_half_hash, device_hash)
        email_ok = hmac.compare_digest(attempt.email_half_hash, email_hash)
        if not (key_ok & device_ok & email_ok):
            return CompletionRefusal.MISMATCH
        if attempt.consumed:
            return CompletionRefusal.CONSUMED
        if attempt.failed_count >= self._settings.max_failed_completions:
            return CompletionRefusal.LOCKED
        if attempt.expires_at <= now:
            return CompletionRefusal.EXPIRED
        if not attempt.signup_allowed and attempt.account is None:
            # Closed sign-up: only an existing account may complete. An account deleted before
            # the consume takes its attempts with it, so the consume then finds no row.
            return CompletionRefusal.NO_ACCOUNT
        if attempt.account_disabled:
            # Nothing is written; the consume checks this again (SPEC.md §6.2 step 7.5).
            return CompletionRefusal.USER_DISABLED
        return None

    async def _stopped(self, attempt_id: str) -> CompletionRefusal:
        """Which state stopped a consume that found no row: a concurrent completion won, or
        failures counted since the read reached the limit. The conditions of the consume only
        ever turn false, and `expires_at` was checked with the same `now`, so an attempt that
        is neither consumed nor locked is no longer there (housekeeping, docs/design.md §6)."""
        attempt = await self._store.finished(attempt_id=attempt_id)
        if attempt is not None and attempt.account_disabled:
            return CompletionRefusal.USER_DISABLED
        if attempt is not None and attempt.consumed:
            return CompletionRefusal.CONSUMED
        if attempt is not None and attempt.failed_count >= self._settings.max_failed_completions:
            return CompletionRefusal.LOCKED
        return CompletionRefusal.EXPIRED

    async def _consume(
        self, redemption: AttemptRedemption, *, attempt: StoredAttempt, jkt: str, now: int
    ) -> TokenPair | None:
        """The consume with all it commits with (SPEC.md §6.2 steps 7.6 to 7.11). None if the
        consume found the attempt consumed, expired or locked meanwhile."""
        max_failures = self._settings.max_failed_completions
        # Only with sign-up allowed (checked before) is there no account yet.
        account = attempt.account or self._sessions.new_account(attempt)
        opening = self._sessions.prepare(
            attempt=attempt, account=account, new_account=attempt.account is None, jkt=jkt, now=now
        )
        consumed = await redemption.consume(opening.session, max_failures=max_failures)
        if isinstance(consumed, AccountExists):
            # PostgreSQL only: a concurrent first login for this address created the account
            # after the read, and nothing of the consume took effect. Once more, with that
            # account: the notice goes to its stored address (SPEC.md §6.2 step 7.8).
            opening = self._sessions.prepare(
                attempt=attempt, account=consumed.account, new_account=False, jkt=jkt, now=now
            )
            consumed = await redemption.consume(opening.session, max_failures=max_failures)
        return self._sessions.tokens(opening) if consumed is True else None
