"""The `splitlink` command: serve, migrate, keys, and the administration commands (users,
sessions, outbox, audit, doctor). Each command lives in the module of its concern."""

from __future__ import annotations

from typing import Any

import click

from protocol.errors import SplitlinkError


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


# Imported here, after `main`: each module's commands are added to it below.
from server.cli import accounts, audit, doctor, keys, mail, migrate, serve  # noqa: E402

for command in (
    migrate.migrate,
    keys.keys,
    accounts.users,
    accounts.sessions,
    audit.audit,
    doctor.doctor,
    mail.outbox,
    serve.serve,
):
    main.add_command(command)
