"""`splitlink outbox [list]|retry`: mail in the outbox, never its contents (docs/design.md
§12.2)."""

from __future__ import annotations

import asyncio

import click

from server import admin
from server.cli.common import DATABASE_URL, command_settings, when, with_database, with_schema
from server.clock import SystemClock
from server.keyring import Keyring
from server.storage.accounts import AccountStore, MailOverview, MailTry
from server.storage.database import Database

OUTBOX_STATUSES = admin.OUTBOX_STATUSES

_OUTBOX_LIMIT = click.option(
    "--limit", default=10, show_default=True, type=click.IntRange(1, 1000), help="Rows per status."
)
_OUTBOX_ID = click.option(
    "--id", "outbox_id", default=None, help="Show every try of this row instead."
)


@click.group(invoke_without_command=True)
@DATABASE_URL
@_OUTBOX_LIMIT
@_OUTBOX_ID
@click.pass_context
def outbox(ctx: click.Context, database_url: str | None, limit: int, outbox_id: str | None) -> None:
    """Mail in the outbox. Without a command: the same as `outbox list`."""
    if ctx.invoked_subcommand is None:
        _show_outbox(database_url, limit, outbox_id)


@outbox.command("list")
@DATABASE_URL
@_OUTBOX_LIMIT
@_OUTBOX_ID
def outbox_list(database_url: str | None, limit: int, outbox_id: str | None) -> None:
    """Counts, and the latest rows of each status (never their contents)."""
    _show_outbox(database_url, limit, outbox_id)


@outbox.command("retry")
@click.argument("outbox_id")
@DATABASE_URL
def outbox_retry(outbox_id: str, database_url: str | None) -> None:
    """Make a backed-off or given-up message due now (not a sent or stale one)."""
    settings = command_settings(database_url)

    async def run(db: Database) -> str:
        return await admin.retry_mail(AccountStore(db), outbox_id, now=SystemClock().now())

    outcome = asyncio.run(with_schema(settings, run))
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
    settings = command_settings(database_url)
    if outbox_id is not None:

        async def read_tries(db: Database, keyring: Keyring) -> list[MailTry]:
            return await admin.mail_tries(AccountStore(db), outbox_id)

        _show_tries(outbox_id, asyncio.run(with_database(settings, read_tries)))
        return

    async def read(db: Database, keyring: Keyring) -> MailOverview:
        return await admin.mail_overview(AccountStore(db), limit=limit)

    _show_overview(asyncio.run(with_database(settings, read)))


def _show_tries(outbox_id: str, tries: list[MailTry]) -> None:
    click.echo(f"tries of {outbox_id}:")
    for attempt in tries:
        detail = attempt.detail or ""
        click.echo(
            f"  {attempt.try_number:>3}  {when(attempt.tried_at)}  {attempt.outcome:<9} {detail}"
        )
    if not tries:
        click.echo("  none recorded")


def _show_overview(overview: MailOverview) -> None:
    counts = overview.counts
    click.echo("   ".join(f"{status}: {counts.get(status, 0)}" for status in OUTBOX_STATUSES))
    for status in OUTBOX_STATUSES:
        messages = overview.latest[status]
        if not messages:
            continue
        click.echo(f"\n{status} (latest {len(messages)} of {counts.get(status, 0)})")
        click.echo(
            f"  {'id':<22}  {'kind':<10}  {'recipient':<32}  {'tries':>5}  {'created':<19}  "
            f"{'next try':<19}  last error"
        )
        for message in messages:
            next_try = when(message.not_before) if status == "queued" else "-"
            error = (message.last_error or "").replace("\n", " ")[:80]
            click.echo(
                f"  {message.id:<22}  {message.kind:<10}  {message.recipient:<32}  "
                f"{message.tries:>5}  {when(message.created_at):<19}  {next_try:<19}  {error}"
            )
