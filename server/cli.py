"""The `splitlink` command: serve, migrate, keys, outbox."""

from __future__ import annotations

import asyncio
import logging
import logging.config
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
import uvicorn
from pydantic import ValidationError

from server.clock import SystemClock, system_random_bytes
from server.keyring import Keyring
from server.logs import LOG_LEVELS, serve_log_config
from server.metrics_directory import MULTIPROCESS_DIR_VARIABLE, metrics_directory
from server.production import ProductionRefused, production_warnings, refuse_unsafe_production
from server.settings import LogLevel, Settings, settings_from_environment
from server.signing_keys import (
    SecretDoesNotOpenKeys,
    ensure_signing_key,
    list_signing_keys,
    open_keyring,
    rotate_signing_key,
)
from server.storage.database import Database, database_for
from server.storage.migrate import SchemaBehind, head_revision, require_current_schema
from server.storage.migrate import migrate as apply_migrations

T = TypeVar("T")

logger = logging.getLogger("splitlink.serve")


def _settings(database_url: str | None) -> Settings:
    if database_url:
        # Workers are separate processes: they read the same value from the environment.
        os.environ["SPLITLINK_DATABASE_URL"] = database_url
    try:
        return settings_from_environment(os.environ)
    except (ValidationError, ValueError) as exc:
        raise click.ClickException(f"invalid settings:\n{exc}") from exc


@click.group()
def main() -> None:
    """splitlink: password-less sign-in with split-secret email links and DPoP-bound sessions."""


@main.command()
@click.option("--database-url", default=None, help="Overrides SPLITLINK_DATABASE_URL.")
def migrate(database_url: str | None) -> None:
    """Bring the database schema up to date and make sure a signing key exists."""
    settings = _settings(database_url)

    apply_migrations(settings.database_url)

    async def run(db: Database, keyring: Keyring) -> None:
        await ensure_signing_key(db, keyring, clock=SystemClock(), random_bytes=system_random_bytes)

    asyncio.run(_with_database(settings, run))
    click.echo(f"schema at revision {head_revision()}; a signing key exists")


@main.group()
def keys() -> None:
    """Access-token signing keys."""


async def _with_database(
    settings: Settings, action: Callable[[Database, Keyring], Awaitable[T]]
) -> T:
    db = database_for(settings)
    await db.connect()
    try:
        await require_current_schema(db)
        keyring = await open_keyring(db, settings, random_bytes=system_random_bytes)
        return await action(db, keyring)
    except (SchemaBehind, SecretDoesNotOpenKeys, ProductionRefused) as exc:
        # Said plainly, without a traceback: each names what is wrong and what to do.
        raise click.ClickException(str(exc)) from exc
    finally:
        await db.disconnect()


async def _nothing(db: Database, keyring: Keyring) -> None:
    return None


@keys.command("list")
@click.option("--database-url", default=None, help="Overrides SPLITLINK_DATABASE_URL.")
def keys_list(database_url: str | None) -> None:
    """List signing keys: the newest active key signs; retiring keys still verify."""
    settings = _settings(database_url)

    async def run(db: Database, keyring: Keyring) -> list[dict[str, Any]]:
        return await list_signing_keys(db)

    rows = asyncio.run(_with_database(settings, run))
    now = SystemClock().now()
    active = [r for r in rows if r["retired_at"] is None]
    signer = max(active, key=lambda r: (r["created_at"], r["kid"]))["kid"] if active else None
    click.echo(f"{'kid':<45} {'alg':<6} {'created':<20} status")
    for row in rows:
        if row["kid"] == signer:
            status = "signing"
        elif row["retired_at"] is None:
            status = "verifying"
        elif row["retired_at"] > now:
            status = f"verifying until {_when(row['retired_at'])}"
        else:
            status = "retired"
        click.echo(f"{row['kid']:<45} {row['alg']:<6} {_when(row['created_at']):<20} {status}")


@keys.command("rotate")
@click.option("--database-url", default=None, help="Overrides SPLITLINK_DATABASE_URL.")
def keys_rotate(database_url: str | None) -> None:
    """Add a signing key. Previous keys verify until tokens they signed have expired."""
    settings = _settings(database_url)
    # Tokens last access_token_lifetime; a minute more covers workers that reload late.
    retire_after = settings.access_token_lifetime + 60

    async def run(db: Database, keyring: Keyring) -> str:
        return await rotate_signing_key(
            db,
            keyring,
            clock=SystemClock(),
            random_bytes=system_random_bytes,
            retire_after=retire_after,
        )

    kid = asyncio.run(_with_database(settings, run))
    click.echo(f"new signing key {kid}; previous keys retire in {retire_after} s")


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


OUTBOX_STATUSES = ("queued", "sent", "expired", "abandoned")


@main.command()
@click.option("--database-url", default=None, help="Overrides SPLITLINK_DATABASE_URL.")
@click.option(
    "--limit", default=10, show_default=True, type=click.IntRange(1, 1000), help="Rows per status."
)
@click.option("--id", "outbox_id", default=None, help="Show every try of this row instead.")
def outbox(database_url: str | None, limit: int, outbox_id: str | None) -> None:
    """Mail in the outbox: counts, and the latest rows of each status (never their contents)."""
    settings = _settings(database_url)

    async def read(
        db: Database, keyring: Keyring
    ) -> tuple[dict[str, int], dict[str, list[Any]], list[Any]]:
        async with db.autocommit() as conn:
            counts = {
                row["status"]: int(row["n"])
                for row in await conn.fetch_all(
                    "SELECT status, COUNT(*) AS n FROM outbox GROUP BY status"
                )
            }
            latest = {
                status: await conn.fetch_all(
                    "SELECT id, kind, recipient, tries, not_before, created_at, sent_at, "
                    "last_error FROM outbox WHERE status = :status "
                    "ORDER BY created_at DESC, id DESC LIMIT :limit",
                    {"status": status, "limit": limit},
                )
                for status in OUTBOX_STATUSES
            }
            tries = (
                await conn.fetch_all(
                    "SELECT try_number, tried_at, outcome, detail FROM outbox_tries "
                    "WHERE outbox_id = :id ORDER BY try_number",
                    {"id": outbox_id},
                )
                if outbox_id is not None
                else []
            )
        return counts, latest, tries

    counts, latest, tries = asyncio.run(_with_database(settings, read))
    if outbox_id is not None:
        click.echo(f"tries of {outbox_id}:")
        for row in tries:
            detail = row["detail"] or ""
            click.echo(
                f"  {row['try_number']:>3}  {_when(row['tried_at'])}  {row['outcome']:<9} {detail}"
            )
        if not tries:
            click.echo("  none recorded")
        return
    click.echo("   ".join(f"{status}: {counts.get(status, 0)}" for status in OUTBOX_STATUSES))
    for status in OUTBOX_STATUSES:
        rows = latest[status]
        if not rows:
            continue
        click.echo(f"\n{status} (latest {len(rows)} of {counts.get(status, 0)})")
        click.echo(
            f"  {'id':<22}  {'kind':<10}  {'recipient':<32}  {'tries':>5}  {'created':<19}  "
            f"{'next try':<19}  last error"
        )
        for row in rows:
            next_try = _when(row["not_before"]) if status == "queued" else "-"
            error = (row["last_error"] or "").replace("\n", " ")[:80]
            click.echo(
                f"  {row['id']:<22}  {row['kind']:<10}  {row['recipient']:<32}  "
                f"{row['tries']:>5}  {_when(row['created_at']):<19}  {next_try:<19}  {error}"
            )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--database-url", default=None, help="Overrides SPLITLINK_DATABASE_URL.")
@click.option(
    "--log-level",
    default=None,
    type=click.Choice(LOG_LEVELS),
    help="Overrides SPLITLINK_LOG_LEVEL (default info).",
)
def serve(
    host: str, port: int, workers: int, database_url: str | None, log_level: LogLevel | None
) -> None:
    """Run the HTTP server. Its log, security events included, goes to stderr."""
    settings = _settings(database_url)
    level = log_level or settings.log_level
    log_config = serve_log_config(level, settings.effective_log_format)
    # The same log as the workers', for what is said before they start.
    logging.config.dictConfig(log_config)
    if settings.production:
        try:
            refuse_unsafe_production(settings)
        except ProductionRefused as exc:
            raise click.ClickException(str(exc)) from None
        for warning in production_warnings(settings):
            logger.warning("%s", warning)
    _refuse_a_taken_port(host, port)
    # Before the workers start: the schema and the secret are checked once, and a development
    # secret is created once, so that they all share it.
    asyncio.run(_with_database(settings, _nothing))
    _announce(settings, host=host, port=port, workers=workers)
    sys.stdout.flush()
    with metrics_directory(settings.data_dir) as metrics_dir:
        # Set before prometheus-client is imported, which happens when uvicorn loads the app in
        # each worker: every worker then counts into this directory, and a scrape sums them
        # (server/metrics.py).
        os.environ[MULTIPROCESS_DIR_VARIABLE] = str(metrics_dir)
        uvicorn.run(
            "server.app:create_app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=log_config,
            log_level=level,
            access_log=False,
            timeout_keep_alive=settings.http_keep_alive_timeout,
            limit_concurrency=settings.http_concurrency_limit,
            timeout_graceful_shutdown=settings.shutdown_timeout,
            proxy_headers=False,
            server_header=False,
        )


def _refuse_a_taken_port(host: str, port: int) -> None:
    """Say which port is taken and how to choose another, instead of uvicorn's traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As uvicorn binds: a port whose last connections wait out TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {host} port {port}: {exc.strerror or exc}. Choose another "
                "port (--port 8500, or `make run PORT=8500`) and set SPLITLINK_PUBLIC_URL to "
                "match (make run does)"
            ) from exc


def _announce(settings: Settings, *, host: str, port: int, workers: int) -> None:
    """Where this server listens, where clients are told to go, and whether those can meet."""
    shown = f"[{host}]" if ":" in host else host
    listening = f"http://{shown}:{port}"
    logger.info(
        "listening on %s (%d worker%s); the public URL is %s",
        listening,
        workers,
        "" if workers == 1 else "s",
        settings.public_url,
    )
    public = urlsplit(settings.public_url)
    # An https public URL always has a TLS proxy in front (serve speaks plain HTTP), whose port
    # is its own; a plain http one on another port is almost always a slip.
    public_port = public.port or 80
    if public.scheme == "http" and public_port != port:
        logger.warning(
            "listening on port %d, but SPLITLINK_PUBLIC_URL is %s (port %d): clients, emailed "
            "links and DPoP proofs use the public URL; set SPLITLINK_PUBLIC_URL=http://%s:%d "
            "unless a proxy forwards port %d here",
            port,
            settings.public_url,
            public_port,
            public.hostname,
            port,
            public_port,
        )
