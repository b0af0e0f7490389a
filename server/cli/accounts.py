"""`splitlink users` and `splitlink sessions`: accounts and their live sessions
(docs/design.md §4). A user is named by its id or by its email address."""

from __future__ import annotations

import asyncio

import click

from server import admin
from server.cli.common import (
    DATABASE_URL,
    command_settings,
    operator_event,
    report,
    when,
    with_schema,
)
from server.clock import SystemClock
from server.events import SecurityEvent
from server.settings import Settings
from server.storage.accounts import (
    AccountStore,
    EndedSession,
    Erasure,
    SessionListing,
    User,
    Window,
)
from server.storage.database import Database

_LIMIT = click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Rows at most.",
)


def _window(settings: Settings) -> Window:
    return Window(now=SystemClock().now(), idle_timeout=settings.session_idle_timeout)


def _status(user: User) -> str:
    return "active" if user.disabled_at is None else f"disabled since {when(user.disabled_at)}"


@click.group()
def users() -> None:
    """Accounts: list, show, disable, enable, delete. A user is named by its id or by its email
    address (in any spelling of the same canonical form)."""


@users.command("list")
@DATABASE_URL
@_LIMIT
def users_list(database_url: str | None, limit: int) -> None:
    """Users, the oldest first, with their status and live sessions."""
    settings = command_settings(database_url)

    async def run(db: Database) -> list[User]:
        return await admin.list_users(AccountStore(db), window=_window(settings), limit=limit)

    found = asyncio.run(with_schema(settings, run))
    click.echo(f"{'id':<22}  {'email':<40}  {'created':<19}  {'sessions':>8}  status")
    for user in found:
        click.echo(
            f"{user.id:<22}  {user.email_address:<40}  {when(user.created_at):<19}  "
            f"{user.live_sessions:>8}  {_status(user)}"
        )


@users.command("show")
@click.argument("user")
@DATABASE_URL
def users_show(user: str, database_url: str | None) -> None:
    """One user: id, address, creation, status and live sessions."""
    settings = command_settings(database_url)

    async def run(db: Database) -> User:
        return await admin.find_user(AccountStore(db), user, window=_window(settings))

    found = asyncio.run(with_schema(settings, run))
    for name, value in (
        ("id", found.id),
        ("email", found.email_address),
        ("canonical", found.email_canonical),
        ("created", when(found.created_at)),
        ("status", _status(found)),
        ("live sessions", str(found.live_sessions)),
    ):
        click.echo(f"{name + ':':<15}{value}")


@users.command("disable")
@click.argument("user")
@DATABASE_URL
def users_disable(user: str, database_url: str | None) -> None:
    """Refuse the user's logins and end every session it has, at once."""
    settings = command_settings(database_url)

    async def run(db: Database) -> tuple[User, list[EndedSession] | None]:
        accounts = AccountStore(db)
        window = _window(settings)
        found = await admin.find_user(accounts, user, window=window)
        ended = await admin.disable_user(accounts, found.id, window=window)
        if ended is not None:
            await report(
                db,
                [
                    operator_event("user.disabled", window.now, found.id, count=len(ended)),
                    *_revoked(ended, at=window.now, user_id=found.id),
                ],
            )
        return found, ended

    found, ended = asyncio.run(with_schema(settings, run))
    if ended is None:
        click.echo(f"user {found.id} was already disabled")
    else:
        click.echo(f"user {found.id} disabled; {len(ended)} sessions ended")


@users.command("enable")
@click.argument("user")
@DATABASE_URL
def users_enable(user: str, database_url: str | None) -> None:
    """Let a disabled user sign in again. Sessions ended by the disable stay ended."""
    settings = command_settings(database_url)

    async def run(db: Database) -> tuple[User, list[EndedSession] | None]:
        accounts = AccountStore(db)
        window = _window(settings)
        found = await admin.find_user(accounts, user, window=window)
        ended = await admin.enable_user(accounts, found.id, now=window.now)
        if ended is not None:
            await report(
                db,
                [
                    operator_event("user.enabled", window.now, found.id),
                    *_revoked(ended, at=window.now, user_id=found.id),
                ],
            )
        return found, ended

    found, ended = asyncio.run(with_schema(settings, run))
    click.echo(f"user {found.id} {'enabled' if ended is not None else 'was not disabled'}")


@users.command("delete")
@click.argument("user")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@DATABASE_URL
def users_delete(user: str, yes: bool, database_url: str | None) -> None:
    """Erase the user: its sessions and refresh tokens, the attempts and mail for its address,
    and the user row. Audit rows stay, without their client address."""
    settings = command_settings(database_url)

    async def look_up(db: Database) -> User:
        return await admin.find_user(AccountStore(db), user, window=_window(settings))

    found = asyncio.run(with_schema(settings, look_up))
    if not yes:
        click.confirm(
            f"Erase user {found.id} <{found.email_address}> and everything of it?", abort=True
        )

    async def erase(db: Database) -> Erasure:
        erased = await admin.delete_user(AccountStore(db), found)
        # The erased id: pseudonymous now that no row ties it to an address.
        event = operator_event("user.deleted", SystemClock().now(), found.id)
        await report(db, [event])
        return erased

    erased = asyncio.run(with_schema(settings, erase))
    click.echo(f"erased user {found.id}:")
    for table, count in erased.deleted:
        click.echo(f"  {table:<16}{count:>6} deleted")
    click.echo(f"  {'audit_events':<16}{erased.audit_rows_cleared:>6} kept, client address cleared")


@click.group()
def sessions() -> None:
    """Live sessions: list and revoke."""


@sessions.command("list")
@click.option("--user", "user", default=None, help="Only this user's (id or email address).")
@_LIMIT
@DATABASE_URL
def sessions_list(user: str | None, limit: int, database_url: str | None) -> None:
    """Live sessions, the newest first (never any token)."""
    settings = command_settings(database_url)

    async def run(db: Database) -> list[SessionListing]:
        accounts = AccountStore(db)
        window = _window(settings)
        user_id = (
            None if user is None else (await admin.find_user(accounts, user, window=window)).id
        )
        return await admin.list_sessions(accounts, user_id=user_id, window=window, limit=limit)

    listed = asyncio.run(with_schema(settings, run))
    click.echo(
        f"{'id':<22}  {'user':<22}  {'email':<32}  {'device':<20}  {'created':<19}  "
        f"{'last used':<19}  expires"
    )
    for session in listed:
        device = (session.device_name or "-")[:20]
        click.echo(
            f"{session.id:<22}  {session.user_id:<22}  {session.email_address:<32}  "
            f"{device:<20}  {when(session.created_at):<19}  {when(session.last_used_at):<19}  "
            f"{when(session.expires_at)}"
        )


@sessions.command("revoke")
@click.argument("session_id", required=False)
@click.option("--user", "user", default=None, help="With --all: every session of this user.")
@click.option("--all", "every", is_flag=True, help="Every live session of --user.")
@DATABASE_URL
def sessions_revoke(
    session_id: str | None, user: str | None, every: bool, database_url: str | None
) -> None:
    """End one session (ID), or every session of a user (--user ID --all), at once."""
    if (session_id is None) == (user is None) or (user is not None) != every:
        raise click.UsageError("name one session ID, or --user with --all")
    settings = command_settings(database_url)

    async def run(db: Database) -> list[EndedSession]:
        accounts = AccountStore(db)
        window = _window(settings)
        user_id = (
            None if user is None else (await admin.find_user(accounts, user, window=window)).id
        )
        ended = await admin.revoke_sessions(
            accounts, session_id=session_id, user_id=user_id, window=window
        )
        await report(
            db,
            [
                operator_event(
                    "session.revoked",
                    window.now,
                    session.user_id,
                    session_id=session.id,
                    reason=admin.REVOKED_BY_ADMIN,
                )
                for session in ended
            ],
        )
        return ended

    ended = asyncio.run(with_schema(settings, run))
    if session_id is not None and not ended:
        raise click.ClickException(f"no live session {session_id}")
    click.echo(f"{len(ended)} sessions ended")


def _revoked(ended: list[EndedSession], *, at: int, user_id: str) -> list[SecurityEvent]:
    """The events of sessions that disabling or enabling the user ended."""
    return [
        operator_event(
            "session.revoked", at, user_id, session_id=session.id, reason=admin.USER_DISABLED
        )
        for session in ended
    ]
