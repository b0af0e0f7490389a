"""The `splitlink` command: serve, migrate, keys, and the administration commands (users,
sessions, outbox, audit, doctor)."""

from __future__ import annotations

import asyncio
import contextlib
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

from protocol.errors import SplitlinkError
from server import admin
from server import audit as audit_trail
from server.audit import audit_record, write_records
from server.clock import SystemClock, system_random_bytes
from server.doctor import examine
from server.events import SecurityEvent, log_event
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


class _Commands(click.Group):
    """Every command that fails says why in one line and exits non-zero, never with a
    traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except SplitlinkError as exc:
            raise click.ClickException(exc.description) from exc
        except Exception as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


@click.group(cls=_Commands)
def main() -> None:
    """splitlink: password-less sign-in with split-secret email links and DPoP-bound sessions."""


_DATABASE_URL = click.option(
    "--database-url", default=None, help="Overrides SPLITLINK_DATABASE_URL."
)


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


async def _with_schema(settings: Settings, action: Callable[[Database], Awaitable[T]]) -> T:
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


async def _report(db: Database, events: list[SecurityEvent]) -> None:
    """An operator's action in the log and the audit trail. The action is done by now: a trail
    that cannot be written is said, and fails nothing."""
    for event in events:
        log_event(event)
    try:
        await write_records(db, [audit_record(event) for event in events])
    except Exception as exc:
        click.echo(f"warning: the audit trail was not written: {type(exc).__name__}", err=True)


def _event(name: str, at: int, user_id: str, **fields: Any) -> SecurityEvent:
    """An operator's event: whose it is, and no client address (it came from this host)."""
    return SecurityEvent(name=name, at=at, fields=fields, subject=user_id)


def _window(settings: Settings) -> admin.Window:
    return admin.Window(now=SystemClock().now(), idle_timeout=settings.session_idle_timeout)


def _status(user: admin.User) -> str:
    return "active" if user.disabled_at is None else f"disabled since {_when(user.disabled_at)}"


@main.group()
def users() -> None:
    """Accounts: list, show, disable, enable, delete. A user is named by its id or by its email
    address (in any spelling of the same canonical form)."""


@users.command("list")
@_DATABASE_URL
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Rows at most.",
)
def users_list(database_url: str | None, limit: int) -> None:
    """Users, the oldest first, with their status and live sessions."""
    settings = _settings(database_url)

    async def run(db: Database) -> list[admin.User]:
        return await admin.list_users(db, window=_window(settings), limit=limit)

    found = asyncio.run(_with_schema(settings, run))
    click.echo(f"{'id':<22}  {'email':<40}  {'created':<19}  {'sessions':>8}  status")
    for user in found:
        click.echo(
            f"{user.id:<22}  {user.email_address:<40}  {_when(user.created_at):<19}  "
            f"{user.live_sessions:>8}  {_status(user)}"
        )


@users.command("show")
@click.argument("user")
@_DATABASE_URL
def users_show(user: str, database_url: str | None) -> None:
    """One user: id, address, creation, status and live sessions."""
    settings = _settings(database_url)

    async def run(db: Database) -> admin.User:
        return await admin.find_user(db, user, window=_window(settings))

    found = asyncio.run(_with_schema(settings, run))
    for name, value in (
        ("id", found.id),
        ("email", found.email_address),
        ("canonical", found.email_canonical),
        ("created", _when(found.created_at)),
        ("status", _status(found)),
        ("live sessions", str(found.live_sessions)),
    ):
        click.echo(f"{name + ':':<15}{value}")


@users.command("disable")
@click.argument("user")
@_DATABASE_URL
def users_disable(user: str, database_url: str | None) -> None:
    """Refuse the user's logins and end every session it has, at once."""
    settings = _settings(database_url)

    async def run(db: Database) -> tuple[admin.User, list[admin.EndedSession] | None]:
        window = _window(settings)
        found = await admin.find_user(db, user, window=window)
        ended = await admin.disable_user(db, found.id, window=window)
        if ended is not None:
            await _report(
                db,
                [
                    _event("user.disabled", window.now, found.id, count=len(ended)),
                    *(
                        _event(
                            "session.revoked",
                            window.now,
                            found.id,
                            session_id=session.id,
                            reason=admin.USER_DISABLED,
                        )
                        for session in ended
                    ),
                ],
            )
        return found, ended

    found, ended = asyncio.run(_with_schema(settings, run))
    if ended is None:
        click.echo(f"user {found.id} was already disabled")
    else:
        click.echo(f"user {found.id} disabled; {len(ended)} sessions ended")


@users.command("enable")
@click.argument("user")
@_DATABASE_URL
def users_enable(user: str, database_url: str | None) -> None:
    """Let a disabled user sign in again. Sessions ended by the disable stay ended."""
    settings = _settings(database_url)

    async def run(db: Database) -> tuple[admin.User, bool]:
        window = _window(settings)
        found = await admin.find_user(db, user, window=window)
        changed = await admin.enable_user(db, found.id)
        if changed:
            await _report(db, [_event("user.enabled", window.now, found.id)])
        return found, changed

    found, changed = asyncio.run(_with_schema(settings, run))
    click.echo(f"user {found.id} {'enabled' if changed else 'was not disabled'}")


@users.command("delete")
@click.argument("user")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_DATABASE_URL
def users_delete(user: str, yes: bool, database_url: str | None) -> None:
    """Erase the user: its sessions and refresh tokens, the attempts and mail for its address,
    and the user row. Audit rows stay, without their client address."""
    settings = _settings(database_url)

    async def look_up(db: Database) -> admin.User:
        return await admin.find_user(db, user, window=_window(settings))

    found = asyncio.run(_with_schema(settings, look_up))
    if not yes:
        click.confirm(
            f"Erase user {found.id} <{found.email_address}> and everything of it?", abort=True
        )

    async def erase(db: Database) -> dict[str, int]:
        counts = await admin.delete_user(db, found)
        # The erased id: pseudonymous now that no row ties it to an address.
        event = _event("user.deleted", SystemClock().now(), found.id)
        await _report(db, [event])
        return counts

    counts = asyncio.run(_with_schema(settings, erase))
    audit_rows = counts.pop("audit_events")
    click.echo(f"erased user {found.id}:")
    for table, count in counts.items():
        click.echo(f"  {table:<16}{count:>6} deleted")
    click.echo(f"  {'audit_events':<16}{audit_rows:>6} kept, client address cleared")


@main.group()
def sessions() -> None:
    """Live sessions: list and revoke."""


@sessions.command("list")
@click.option("--user", "user", default=None, help="Only this user's (id or email address).")
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Rows at most.",
)
@_DATABASE_URL
def sessions_list(user: str | None, limit: int, database_url: str | None) -> None:
    """Live sessions, the newest first (never any token)."""
    settings = _settings(database_url)

    async def run(db: Database) -> list[Any]:
        window = _window(settings)
        user_id = None if user is None else (await admin.find_user(db, user, window=window)).id
        return await admin.list_sessions(db, user_id=user_id, window=window, limit=limit)

    rows = asyncio.run(_with_schema(settings, run))
    click.echo(
        f"{'id':<22}  {'user':<22}  {'email':<32}  {'device':<20}  {'created':<19}  "
        f"{'last used':<19}  expires"
    )
    for row in rows:
        device = (row["device_name"] or "-")[:20]
        click.echo(
            f"{row['id']:<22}  {row['user_id']:<22}  {row['email_address']:<32}  {device:<20}  "
            f"{_when(row['created_at']):<19}  {_when(row['last_used_at']):<19}  "
            f"{_when(row['expires_at'])}"
        )


@sessions.command("revoke")
@click.argument("session_id", required=False)
@click.option("--user", "user", default=None, help="With --all: every session of this user.")
@click.option("--all", "every", is_flag=True, help="Every live session of --user.")
@_DATABASE_URL
def sessions_revoke(
    session_id: str | None, user: str | None, every: bool, database_url: str | None
) -> None:
    """End one session (ID), or every session of a user (--user ID --all), at once."""
    if (session_id is None) == (user is None) or (user is not None) != every:
        raise click.UsageError("name one session ID, or --user with --all")
    settings = _settings(database_url)

    async def run(db: Database) -> list[admin.EndedSession]:
        window = _window(settings)
        user_id = None if user is None else (await admin.find_user(db, user, window=window)).id
        ended = await admin.revoke_sessions(
            db, session_id=session_id, user_id=user_id, window=window
        )
        await _report(
            db,
            [
                _event(
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

    ended = asyncio.run(_with_schema(settings, run))
    if session_id is not None and not ended:
        raise click.ClickException(f"no live session {session_id}")
    click.echo(f"{len(ended)} sessions ended")


class _Time(click.ParamType):  # type: ignore[type-arg]
    """A moment: seconds since the epoch, or an ISO 8601 date or time (UTC unless it says)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if text.isascii() and text.isdigit():
            return int(text)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{value!r} is neither seconds since the epoch nor an ISO 8601 time")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp())


@main.group()
def audit() -> None:
    """The audit trail of security events, as JSON lines."""


@audit.command("tail")
@click.option(
    "-n",
    "count",
    default=20,
    show_default=True,
    type=click.IntRange(0, 100_000),
    help="How many of the newest rows.",
)
@click.option("--follow", is_flag=True, help="Then print new rows as they come, until stopped.")
@click.option(
    "--interval", default=1.0, show_default=True, type=click.FloatRange(0.05, 60), hidden=True
)
@_DATABASE_URL
def audit_tail(count: int, follow: bool, interval: float, database_url: str | None) -> None:
    """The newest N rows, oldest first."""
    settings = _settings(database_url)

    async def run(db: Database) -> None:
        last = 0
        for row in await audit_trail.latest_rows(db, count=count):
            click.echo(audit_trail.as_json_line(row))
            last = int(row["id"])
        if not follow:
            return
        if count == 0:
            newest = await audit_trail.latest_rows(db, count=1)
            last = int(newest[0]["id"]) if newest else 0
        while True:
            for row in await audit_trail.rows_after(db, after_id=last):
                click.echo(audit_trail.as_json_line(row))
                last = int(row["id"])
            sys.stdout.flush()
            await asyncio.sleep(interval)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_with_schema(settings, run))


@audit.command("export")
@click.option("--since", type=_Time(), default=None, help="From this time on (included).")
@click.option("--until", type=_Time(), default=None, help="Before this time (excluded).")
@_DATABASE_URL
def audit_export(since: int | None, until: int | None, database_url: str | None) -> None:
    """Every row between two times, oldest first."""
    settings = _settings(database_url)

    async def run(db: Database) -> None:
        last = 0
        while True:
            rows = await audit_trail.rows_between(db, since=since, until=until, after_id=last)
            for row in rows:
                click.echo(audit_trail.as_json_line(row))
                last = int(row["id"])
            if not rows:
                return

    asyncio.run(_with_schema(settings, run))


@main.command()
@_DATABASE_URL
def doctor(database_url: str | None) -> None:
    """Check the configuration, the database, its schema, the signing keys, the SMTP server (no
    mail is sent) and the clock; say what to fix. Exits non-zero if any check fails."""
    try:
        settings = _settings(database_url)
    except click.ClickException as exc:
        click.echo(f"FAIL  {'configuration':<14}{' '.join(exc.message.split())}")
        raise SystemExit(1) from exc
    findings = asyncio.run(examine(settings))
    for finding in findings:
        click.echo(f"{finding.status.upper():<6}{finding.check:<14}{finding.detail}")
    if any(finding.status == "fail" for finding in findings):
        raise SystemExit(1)


OUTBOX_STATUSES = ("queued", "sent", "expired", "abandoned")

_OUTBOX_LIMIT = click.option(
    "--limit", default=10, show_default=True, type=click.IntRange(1, 1000), help="Rows per status."
)
_OUTBOX_ID = click.option(
    "--id", "outbox_id", default=None, help="Show every try of this row instead."
)


@main.group(invoke_without_command=True)
@_DATABASE_URL
@_OUTBOX_LIMIT
@_OUTBOX_ID
@click.pass_context
def outbox(ctx: click.Context, database_url: str | None, limit: int, outbox_id: str | None) -> None:
    """Mail in the outbox. Without a command: the same as `outbox list`."""
    if ctx.invoked_subcommand is None:
        _show_outbox(database_url, limit, outbox_id)


@outbox.command("list")
@_DATABASE_URL
@_OUTBOX_LIMIT
@_OUTBOX_ID
def outbox_list(database_url: str | None, limit: int, outbox_id: str | None) -> None:
    """Counts, and the latest rows of each status (never their contents)."""
    _show_outbox(database_url, limit, outbox_id)


@outbox.command("retry")
@click.argument("outbox_id")
@_DATABASE_URL
def outbox_retry(outbox_id: str, database_url: str | None) -> None:
    """Make a backed-off or given-up message due now (not a sent or stale one)."""
    settings = _settings(database_url)

    async def run(db: Database) -> str:
        return await admin.retry_mail(db, outbox_id, now=SystemClock().now())

    outcome = asyncio.run(_with_schema(settings, run))
    refusals = {
        "unknown": f"no message {outbox_id} in the outbox",
        "sent": f"message {outbox_id} was sent already",
        "expired": f"message {outbox_id} is stale: its login can no longer be completed",
        "order_dropped": f"message {outbox_id} was refused for good; its content was dropped",
    }
    if outcome in refusals:
        raise click.ClickException(refusals[outcome])
    click.echo(f"message {outbox_id} is due now")


def _show_outbox(database_url: str | None, limit: int, outbox_id: str | None) -> None:
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
