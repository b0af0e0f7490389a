"""`splitlink migrate`: the schema at the head revision, and a signing key (docs/design.md §4)."""

from __future__ import annotations

import asyncio

import click

from server.cli.common import DATABASE_URL, command_settings, with_database
from server.clock import SystemClock, system_random_bytes
from server.keyring import Keyring
from server.signing_keys import ensure_signing_key
from server.storage.database import Database
from server.storage.migrate import head_revision
from server.storage.migrate import migrate as apply_migrations
from server.storage.signing_keys import SigningKeyStore


@click.command()
@DATABASE_URL
def migrate(database_url: str | None) -> None:
    """Bring the database schema up to date and make sure a signing key exists."""
    settings = command_settings(database_url)

    apply_migrations(settings.database_url)

    async def run(db: Database, keyring: Keyring) -> None:
        await ensure_signing_key(
            SigningKeyStore(db), keyring, clock=SystemClock(), random_bytes=system_random_bytes
        )

    asyncio.run(with_database(settings, run))
    click.echo(f"schema at revision {head_revision()}; a signing key exists")
