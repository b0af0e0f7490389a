"""What the commands share: their settings, the database they open, how times are shown, and
how an operator's action is reported."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from server.audit import audit_record
from server.clock import system_random_bytes
from server.events import SecurityEvent, log_event
from server.keyring import Keyring
from server.production import ProductionRefused
from server.settings import Settings, settings_from_environment
from server.signing_keys import SecretDoesNotOpenKeys, open_keyring
from server.storage.audit import AuditStore
from server.storage.database import Database, database_for
from server.storage.migrate import SchemaBehind, require_current_schema
from server.storage.signing_keys import SigningKeyStore

T = TypeVar("T")

DATABASE_URL = click.option(
    "--database-url", default=None, help="Overrides SPLITLINK_DATABASE_URL."
)


def command_settings(database_url: str | None) -> Settings:
    if database_url:
        # Workers are separate processes: they read the same value from the environment.
        os.environ["SPLITLINK_DATABASE_URL"] = database_url
    try:
        return settings_from_environment(os.environ)
    except (ValidationError, ValueError) as exc:
        raise click.ClickException(f"invalid settings:\n{exc}") from exc


async def with_database(
    settings: Settings, action: Callable[[Database, Keyring], Awaitable[T]]
) -> T:
    """`action` on the database at the head revision, with the keyring that opens its keys."""
    db = database_for(settings)
    await db.connect()
    try:
        await require_current_schema(db)
        keyring = await open_keyring(
            SigningKeyStore(db), settings, random_bytes=system_random_bytes
        )
        return await action(db, keyring)
    except (SchemaBehind, SecretDoesNotOpenKeys, ProductionRefused) as exc:
        # Said plainly, without a traceback: each names what is wrong and what to do.
        raise click.ClickException(str(exc)) from exc
    finally:
        await db.disconnect()


async def nothing(db: Database, keyring: Keyring) -> None:
    return None


async def with_schema(settings: Settings, action: Callable[[Database], Awaitable[T]]) -> T:
    """`action` on the database at the head revision, without the root secret: for commands
    that read or change rows but open nothing sealed."""
    db = database_for(settings)
    await db.connect()
    try:
        await require_current_schema(db)
        return await action(db)
    except SchemaBehind as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        await db.disconnect()


def when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


async def report(db: Database, events: list[SecurityEvent]) -> None:
    """An operator's action in the log and the audit trail. The action is done by now: a trail
    that cannot be written is said, and fails nothing."""
    for event in events:
        log_event(event)
    try:
        await AuditStore(db).append([audit_record(event) for event in events])
    except Exception as exc:
        click.echo(f"warning: the audit trail was not written: {type(exc).__name__}", err=True)


def operator_event(name: str, at: int, user_id: str, **fields: Any) -> SecurityEvent:
    """An operator's event: whose it is, and no client address (it came from this host)."""
    return SecurityEvent(name=name, at=at, fields=fields, subject=user_id)
