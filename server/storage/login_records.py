"""Records of the login store (server/storage/logins.py)."""

from __future__ import annotations

from dataclasses import dataclass

from server.storage.records import SealedMail


@dataclass(frozen=True, slots=True)
class Account:
    """An account as a login needs it: its id and the address its mail goes to."""

    id: str
    email_address: str


@dataclass(frozen=True, slots=True)
class AccountAtStart:
    """The account of a start's address, and whether the start's key holds a live session of
    it (SPEC.md §6.1 step 5)."""

    account: Account
    disabled: bool
    key_holds_session: bool


@dataclass(frozen=True, slots=True)
class StartCounts:
    """A start's counts in turn (None for a bucket not counted), and its address's account."""

    hits: tuple[int | None, ...]
    account: AccountAtStart | None


@dataclass(frozen=True, slots=True)
class NewAttempt:
    """A login attempt to record (SPEC.md §6.1 step 7); the halves only as their keyed hashes."""

    id: str
    email_canonical: str
    recipient: str
    device_name: str | None
    jkt: str
    key_alg: str
    device_half_hash: str
    email_half_hash: str
    signup_allowed: bool
    created_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class StoredAttempt:
    """An attempt as the completion reads it, with the account of its address if there is one
    (SPEC.md §6.2 step 7.1)."""

    id: str
    jkt: str
    device_half_hash: str
    email_half_hash: str
    expires_at: int
    consumed: bool
    failed_count: int
    signup_allowed: bool
    email_canonical: str
    recipient: str
    device_name: str | None
    key_alg: str
    account: Account | None
    account_disabled: bool


@dataclass(frozen=True, slots=True)
class FinishedAttempt:
    """What may have stopped a consume: the attempt's state on the latest committed rows."""

    consumed: bool
    failed_count: int
    account_disabled: bool


@dataclass(frozen=True, slots=True)
class NewSession:
    """What a consume commits with (SPEC.md §6.2 steps 7.6 to 7.10): the account when this is
    its first login, the session at `created_at`, its new-device notice and its refresh token."""

    id: str
    attempt_id: str
    account: Account
    new_account: bool
    email_canonical: str
    device_name: str | None
    jkt: str
    key_alg: str
    created_at: int
    expires_at: int
    notice: SealedMail
    refresh_token_hash: str


@dataclass(frozen=True, slots=True)
class AccountExists:
    """A consume that took no effect: a concurrent first login created the account after the
    attempt was read (PostgreSQL only). The account is as stored."""

    account: Account
