"""`splitlink audit tail|export`: the audit trail as JSON lines (docs/design.md §4)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from datetime import UTC, datetime
from typing import Any

import click

from server.audit import as_json_line
from server.cli.common import DATABASE_URL, command_settings, with_schema
from server.storage.audit import AuditStore
from server.storage.database import Database


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


@click.group()
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
@DATABASE_URL
def audit_tail(count: int, follow: bool, interval: float, database_url: str | None) -> None:
    """The newest N rows, oldest first."""
    settings = command_settings(database_url)

    async def run(db: Database) -> None:
        trail = AuditStore(db)
        last = 0
        for row in await trail.latest(count=count):
            click.echo(as_json_line(row))
            last = row.id
        if not follow:
            return
        if count == 0:
            newest = await trail.latest(count=1)
            last = newest[0].id if newest else 0
        while True:
            for row in await trail.after(after_id=last):
                click.echo(as_json_line(row))
                last = row.id
            sys.stdout.flush()
            await asyncio.sleep(interval)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(with_schema(settings, run))


@audit.command("export")
@click.option("--since", type=_Time(), default=None, help="From this time on (included).")
@click.option("--until", type=_Time(), default=None, help="Before this time (excluded).")
@DATABASE_URL
def audit_export(since: int | None, until: int | None, database_url: str | None) -> None:
    """Every row between two times, oldest first."""
    settings = command_settings(database_url)

    async def run(db: Database) -> None:
        trail = AuditStore(db)
        last = 0
        while True:
            rows = await trail.between(since=since, until=until, after_id=last)
            for row in rows:
                click.echo(as_json_line(row))
                last = row.id
            if not rows:
                return

    asyncio.run(with_schema(settings, run))
