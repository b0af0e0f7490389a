"""The session a completion opens (SPEC.md §6.2 steps 7.6 to 7.11): the consume with the account
at its first login, the session, its new-device notice and its refresh token, then the access
token."""

from __future__ import annotations

from typing import Protocol

from protocol.check_phrase import check_phrase
from protocol.encoding import b64url_encode
from server.clock import RandomBytes
from server.keyring import Keyring
from server.login_mail import LoginMail
from server.settings import Settings
from server.signing_keys import ServerKeys
from server.storage.login_records import Account, AccountExists, NewSession, StoredAttempt
from server.tokens import TokenPair, mint_access_token, new_refresh_token


class AttemptRedemption(Protocol):
    """An attempt as read with the completion's replay entry, and its consume."""

    @property
    def attempt(self) -> StoredAttempt | None: ...

    async def consume(self, session: NewSession, *, max_failures: int) -> bool | AccountExists:
        """Consume the attempt and open `session` as one guarded unit: False if the attempt
        is no longer completable, AccountExists if the account came to exist since the read
        (nothing took effect then)."""
        ...


class SessionOpener:
    def __init__(
        self,
        *,
        settings: Settings,
        keyring: Keyring,
        keys: ServerKeys,
        random_bytes: RandomBytes,
        mail: LoginMail,
    ) -> None:
        self._settings = settings
        self._keyring = keyring
        self._keys = keys
        self._random = random_bytes
        self._mail = mail

    async def open(
        self,
        redemption: AttemptRedemption,
        *,
        attempt: StoredAttempt,
        jkt: str,
        now: int,
    ) -> TokenPair | None:
        """The consume with the account at its first login, the session, its notice and its
        refresh token (SPEC.md §6.2 steps 7.6 to 7.11). None if the consume found the attempt
        consumed, expired or locked meanwhile."""
        settings = self._settings
        max_failures = settings.max_failed_completions
        # Only with sign-up allowed (checked before) is there no account yet.
        account = attempt.account or Account(
            id=b64url_encode(self._random(16)), email_address=attempt.recipient
        )
        new_account = attempt.account is None
        session, refresh_token = self._new_session(
            attempt=attempt, account=account, new_account=new_account, jkt=jkt, now=now
        )
        consumed = await redemption.consume(session, max_failures=max_failures)
        if isinstance(consumed, AccountExists):
            # PostgreSQL only: a concurrent first login for this address created the account
            # after the read, and nothing of the consume took effect. Once more, with that
            # account: the notice goes to its stored address (SPEC.md §6.2 step 7.8).
            session, refresh_token = self._new_session(
                attempt=attempt, account=consumed.account, new_account=False, jkt=jkt, now=now
            )
            consumed = await redemption.consume(session, max_failures=max_failures)
        if consumed is not True:
            return None
        access_token, lifetime = mint_access_token(
            settings=settings,
            keys=self._keys.key_set,
            random_bytes=self._random,
            user_id=session.account.id,
            session_id=session.id,
            jkt=jkt,
            auth_time=now,
            now=now,
            session_expires_at=session.expires_at,
        )
        return TokenPair(
            access_token=access_token,
            refresh_token=refresh_token,
            expires_in=lifetime,
            user_id=session.account.id,
            session_id=session.id,
        )

    def _new_session(
        self, *, attempt: StoredAttempt, account: Account, new_account: bool, jkt: str, now: int
    ) -> tuple[NewSession, str]:
        """The session a consume opens, and its refresh token in plain form."""
        session_id = b64url_encode(self._random(16))
        # The new-device notice is committed with the session it reports (NIST SP 800-63B-4
        # §4.6): no session without its notice, and no notice for a session that never was.
        notice = self._mail.new_device_notice(
            recipient=account.email_address,
            session_id=session_id,
            device_name=attempt.device_name,
            key_alg=attempt.key_alg,
            signed_in_at=now,
            check_phrase=check_phrase(jkt),
        )
        refresh_token, refresh_hash = new_refresh_token(
            hmac_key=self._keyring.hmac_key, random_bytes=self._random
        )
        session = NewSession(
            id=session_id,
            attempt_id=attempt.id,
            account=account,
            new_account=new_account,
            email_canonical=attempt.email_canonical,
            device_name=attempt.device_name,
            jkt=jkt,
            key_alg=attempt.key_alg,
            created_at=now,
            expires_at=now + self._settings.session_absolute_lifetime,
            notice=notice,
            refresh_token_hash=refresh_hash,
        )
        return session, refresh_token
