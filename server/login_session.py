"""What a completion's consume opens (SPEC.md §6.2 steps 7.7 to 7.11): the account at its first
login, the session with its new-device notice and refresh token, and then its tokens. Nothing
here reaches the database; the flow (server/login.py) hands the session to the consume."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.check_phrase import check_phrase
from protocol.encoding import b64url_encode
from server.clock import RandomBytes
from server.keyring import Keyring
from server.login_mail import LoginMail
from server.settings import Settings
from server.signing_keys import ServerKeys
from server.storage.login_records import Account, NewSession, StoredAttempt
from server.tokens import TokenPair, mint_access_token, new_refresh_token


@dataclass(frozen=True, slots=True)
class OpeningSession:
    """A session for the consume to commit, and its refresh token in plain form: the token
    rests only as its hash."""

    session: NewSession
    refresh_token: str

    def __repr__(self) -> str:
        return f"OpeningSession(session_id={self.session.id!r})"


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

    def new_account(self, attempt: StoredAttempt) -> Account:
        """The account of a first login: a fresh id, and the attempt's recipient as its
        address (SPEC.md §6.2 step 7.7)."""
        return Account(id=b64url_encode(self._random(16)), email_address=attempt.recipient)

    def prepare(
        self, *, attempt: StoredAttempt, account: Account, new_account: bool, jkt: str, now: int
    ) -> OpeningSession:
        """The session of `account` that the attempt opens, with its notice to the account's
        address and its refresh token (SPEC.md §6.2 steps 7.9 and 7.10)."""
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
        return OpeningSession(session=session, refresh_token=refresh_token)

    def tokens(self, opened: OpeningSession) -> TokenPair:
        """The tokens of a session the consume committed (SPEC.md §6.2 step 7.11, §6.3)."""
        session = opened.session
        access_token, lifetime = mint_access_token(
            settings=self._settings,
            keys=self._keys.key_set,
            random_bytes=self._random,
            user_id=session.account.id,
            session_id=session.id,
            jkt=session.jkt,
            auth_time=session.created_at,
            now=session.created_at,
            session_expires_at=session.expires_at,
        )
        return TokenPair(
            access_token=access_token,
            refresh_token=opened.refresh_token,
            expires_in=lifetime,
            user_id=session.account.id,
            session_id=session.id,
        )
