"""`splitlink keys list|rotate`: the access-token signing keys (SPEC.md §6.3)."""

from __future__ import annotations

import asyncio

import click

from server.cli.common import DATABASE_URL, command_settings, when, with_database
from server.clock import SystemClock, system_random_bytes
from server.keyring import Keyring
from server.signing_keys import list_signing_keys, rotate_signing_key
from server.storage.database import Database
from server.storage.signing_keys import SigningKeyListing, SigningKeyStore


@click.group()
def keys() -> None:
    """Access-token signing keys."""


@keys.command("list")
@DATABASE_URL
def keys_list(database_url: str | None) -> None:
    """List signing keys: the newest active key signs; retiring keys still verify."""
    settings = command_settings(database_url)

    async def run(db: Database, keyring: Keyring) -> list[SigningKeyListing]:
        return await list_signing_keys(SigningKeyStore(db))

    rows = asyncio.run(with_database(settings, run))
    now = SystemClock().now()
    active = [r for r in rows if r.retired_at is None]
    signer = max(active, key=lambda r: (r.created_at, r.kid)).kid if active else None
    click.echo(f"{'kid':<45} {'alg':<6} {'created':<20} status")
    for row in rows:
        if row.kid == signer:
            status = "signing"
        elif row.retired_at is None:
            status = "verifying"
        elif row.retired_at > now:
            status = f"verifying until {when(row.retired_at)}"
        else:
            status = "retired"
        click.echo(f"{row.kid:<45} {row.alg:<6} {when(row.created_at):<20} {status}")


@keys.command("rotate")
@DATABASE_URL
def keys_rotate(database_url: str | None) -> None:
    """Add a signing key. Previous keys verify until tokens they signed have expired."""
    settings = command_settings(database_url)
    # Tokens last access_token_lifetime; a minute more covers workers that reload late.
    retire_after = settings.access_token_lifetime + 60

    async def run(db: Database, keyring: Keyring) -> str:
        return await rotate_signing_key(
            SigningKeyStore(db),
            keyring,
            clock=SystemClock(),
            random_bytes=system_random_bytes,
            retire_after=retire_after,
        )

    kid = asyncio.run(with_database(settings, run))
    click.echo(f"new signing key {kid}; previous keys retire in {retire_after} s")
