"""`splitlink doctor`: what to fix in a deployment, check by check (server/doctor.py)."""

from __future__ import annotations

import asyncio

import click

from server.cli.common import DATABASE_URL, command_settings
from server.doctor import examine


@click.command()
@DATABASE_URL
def doctor(database_url: str | None) -> None:
    """Check the configuration, the database, its schema, the signing keys, the SMTP server (no
    mail is sent) and the clock; say what to fix. Exits non-zero if any check fails."""
    try:
        settings = command_settings(database_url)
    except click.ClickException as exc:
        click.echo(f"FAIL  {'configuration':<14}{' '.join(exc.message.split())}")
        raise SystemExit(1) from exc
    findings = asyncio.run(examine(settings))
    for finding in findings:
        click.echo(f"{finding.status.upper():<6}{finding.check:<14}{finding.detail}")
    if any(finding.status == "fail" for finding in findings):
        raise SystemExit(1)
