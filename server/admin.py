"""What an operator does to users, sessions and mail (`splitlink users|sessions|outbox`,
docs/design.md §4). Each operation is one transaction and returns what it changed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from protocol.email_address import parse_email_address
from protocol.errors import ErrorCode, SplitlinkError
from server.storage.accounts import (
    EndedSession,
    Erasure,
    MailOverview,
    MailState,
    MailTry,
    SessionListing,
    User,
    Window,
)

# Reasons an operator's action gives, stored as `revoked_reason` and in the events (§6.12).
USER_DISABLED = "user_disabled"
REVOKED_BY_ADMIN = "revoked_by_admin"

OUTBOX_STATUSES = ("queued", "sent", "expired", "abandoned")


class UnknownUser(SplitlinkError):
    code = ErrorCode.NOT_FOUND


class AccountAdministration(Protocol):
    """What the administration reads and changes: users, their live sessions, the outbox."""

    async def user_by_id(self, *, user_id: str, window: Window) -> User | None: ...

    async def user_by_address(self, *, email_canonical: str, window: Window) -> User | None: ...

    async def users(self, *, window: Window, limit: int) -> list[User]: ...

    async def disable_user(
        self, *, user_id: str, reason: str, window: Window
    ) -> list[EndedSession] | None: ...

    async def enable_user(
        self, *, user_id: str, reason: str, now: int
    ) -> list[EndedSession] | None: ...

    async def delete_user(self, *, user: User) -> Erasure: ...

    async def live_sessions(
        self, *, user_id: str | None, window: Window, limit: int
    ) -> list[SessionListing]: ...

    async def revoke_live_sessions(
        self, *, session_id: str | None, user_id: str | None, reason: str, window: Window
    ) -> list[EndedSession]: ...

    async def mail_overview(self, *, statuses: Sequence[str], limit: int) -> MailOverview: ...

    async def mail_tries(self, *, outbox_id: str) -> list[MailTry]: ...

    async def make_mail_due(self, *, outbox_id: str, now: int) -> bool: ...

    async def mail_state(self, *, outbox_id: str) -> MailState | None: ...


async def find_user(accounts: AccountAdministration, reference: str, *, window: Window) -> User:
    """The user with this id, or with this email address in its canonical form (SPEC.md §5.2)."""
    if "@" in reference:
        try:
            canonical = parse_email_address(reference).canonical
        except SplitlinkError as exc:
            raise UnknownUser(f"{reference!r} is not a valid email address") from exc
        found = await accounts.user_by_address(email_canonical=canonical, window=window)
    else:
        found = await accounts.user_by_id(user_id=reference, window=window)
    if found is None:
        raise UnknownUser(f"no user {reference}")
    return found


async def list_users(accounts: AccountAdministration, *, window: Window, limit: int) -> list[User]:
    return await accounts.users(window=window, limit=limit)


async def disable_user(
    accounts: AccountAdministration, user_id: str, *, window: Window
) -> list[EndedSession] | None:
    """Disable the user and end every live session it has, at once: the sessions ended, or
    None if the user was already disabled."""
    return await accounts.disable_user(user_id=user_id, reason=USER_DISABLED, window=window)


async def enable_user(
    accounts: AccountAdministration, user_id: str, *, now: int
) -> list[EndedSession] | None:
    """Let the user sign in again; its ended sessions stay ended, and one that a completion
    racing the disable opened is ended now: those ended, or None if it was not disabled."""
    return await accounts.enable_user(user_id=user_id, reason=USER_DISABLED, now=now)


async def delete_user(accounts: AccountAdministration, user: User) -> Erasure:
    """Erase the user and everything that names it or its address, in one transaction. Audit
    rows stay, their client address cleared."""
    return await accounts.delete_user(user=user)


async def list_sessions(
    accounts: AccountAdministration, *, user_id: str | None, window: Window, limit: int
) -> list[SessionListing]:
    """Live sessions (of one user, or of all), the newest first; never any token material."""
    return await accounts.live_sessions(user_id=user_id, window=window, limit=limit)


async def revoke_sessions(
    accounts: AccountAdministration,
    *,
    session_id: str | None = None,
    user_id: str | None = None,
    window: Window,
) -> list[EndedSession]:
    """End one live session, or every live session of a user: those ended."""
    if (session_id is None) == (user_id is None):
        raise ValueError("name one session or one user")
    return await accounts.revoke_live_sessions(
        session_id=session_id, user_id=user_id, reason=REVOKED_BY_ADMIN, window=window
    )


async def mail_overview(accounts: AccountAdministration, *, limit: int) -> MailOverview:
    """Counts per status, and the latest `limit` messages of each status (never contents)."""
    return await accounts.mail_overview(statuses=OUTBOX_STATUSES, limit=limit)


async def mail_tries(accounts: AccountAdministration, outbox_id: str) -> list[MailTry]:
    return await accounts.mail_tries(outbox_id=outbox_id)


RetryOutcome = Literal["due", "unknown", "sent", "expired", "order_dropped"]


async def retry_mail(accounts: AccountAdministration, outbox_id: str, *, now: int) -> RetryOutcome:
    """Make a backed-off or given-up message due now. A message that was sent, that became
    stale, or whose sealed order was dropped (SPEC.md §7.2) cannot be sent again."""
    if await accounts.make_mail_due(outbox_id=outbox_id, now=now):
        return "due"
    state = await accounts.mail_state(outbox_id=outbox_id)
    if state is None:
        return "unknown"
    if state.status == "sent":
        return "sent"
    if state.status == "expired":
        return "expired"
    if state.status == "queued":
        # Leased: a hand-off is under way right now.
        return "due"
    return "order_dropped"
