"""`splitlink-client`: sign in from a terminal with a device key kept in a local state file.

Exit codes: 0 success, 1 the server refused (or could not be reached), 2 usage or a refusal made
on this device before any request. Tokens, halves and the private key are never printed.

Tests inject the HTTP transport, clock and randomness by passing a `CliEnvironment` as click's
context object: `CliRunner().invoke(cli, args, obj=CliEnvironment(transport=...))`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import click
import httpx

from protocol.errors import ErrorCode, SplitlinkError
from protocol.keys import SUPPORTED_ALGORITHMS, Algorithm
from splitlink_client.client import DEFAULT_TIMEOUT_SECONDS, SplitlinkClient
from splitlink_client.errors import ClientError, LocalError
from splitlink_client.proofs import Clock, RandomBytes, system_clock, system_random

DEFAULT_SERVER = "http://127.0.0.1:8000"
DEFAULT_STATE = "~/.config/splitlink/device.json"
EXIT_REFUSED = 1
EXIT_USAGE = 2
_ALGORITHMS: dict[str, Algorithm] = {alg: alg for alg in SUPPORTED_ALGORITHMS}

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class CliEnvironment:
    """What the CLI takes from the outside world; tests replace parts of it."""

    transport: httpx.BaseTransport | None = None
    clock: Clock = system_clock
    random_bytes: RandomBytes = system_random


def _refusals(
    command: Callable[Concatenate[SplitlinkClient, P], R],
) -> Callable[Concatenate[SplitlinkClient, P], R]:
    """Turn client errors into `error: <code>: <description>` and the documented exit code."""

    @functools.wraps(command)
    def wrapper(client: SplitlinkClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(client, *args, **kwargs)
        except ClientError as exc:
            hint = f" (retry after {exc.retry_after} s)" if exc.retry_after is not None else ""
            click.echo(f"error: {exc.error}: {exc.description}{hint}", err=True)
            if exc.status is None and exc.error == ErrorCode.TEMPORARILY_UNAVAILABLE.value:
                # No answer at all: most often no server listens there, or it listens elsewhere.
                click.echo(
                    f"hint: is the server running at {client.server_url}? Point the client at "
                    "another one with --server URL or SPLITLINK_SERVER=URL (the server's "
                    "SPLITLINK_PUBLIC_URL).",
                    err=True,
                )
            raise click.exceptions.Exit(
                EXIT_USAGE if isinstance(exc, LocalError) else EXIT_REFUSED
            ) from exc
        except SplitlinkError as exc:
            click.echo(f"error: {exc.code.value}: {exc.description}", err=True)
            raise click.exceptions.Exit(EXIT_REFUSED) from exc

    return wrapper


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--server",
    envvar="SPLITLINK_SERVER",
    default=DEFAULT_SERVER,
    show_default=True,
    help="The splitlink server (its issuer URL). Env: SPLITLINK_SERVER.",
)
@click.option(
    "--state",
    "state_path",
    envvar="SPLITLINK_CLIENT_STATE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    show_default=DEFAULT_STATE,
    help="The device state file (private key and tokens). Env: SPLITLINK_CLIENT_STATE.",
)
@click.pass_context
def cli(ctx: click.Context, server: str, state_path: Path | None) -> None:
    """Password-less sign-in with a key that never leaves this device."""
    env = ctx.obj if isinstance(ctx.obj, CliEnvironment) else CliEnvironment()
    http = ctx.with_resource(httpx.Client(transport=env.transport, timeout=DEFAULT_TIMEOUT_SECONDS))
    ctx.obj = SplitlinkClient(
        server,
        state_path if state_path is not None else Path(DEFAULT_STATE).expanduser(),
        http=http,
        clock=env.clock,
        random_bytes=env.random_bytes,
    )


@cli.command()
@click.argument("email")
@click.option("--device-name", help="A name for this device, shown in the session list.")
@click.option(
    "--alg",
    type=click.Choice(SUPPORTED_ALGORITHMS),
    default=None,
    help="Algorithm of the device key when it is created (default EdDSA).",
)
@click.pass_obj
@_refusals
def login(client: SplitlinkClient, email: str, device_name: str | None, alg: str | None) -> None:
    """Start signing in as EMAIL: the server emails a link."""
    started = client.start_login(email, device_name, alg=None if alg is None else _ALGORITHMS[alg])
    if started.key_created:
        click.echo(f"Created a new {started.alg} device key in {client.state_path}.")
    minutes = max(1, started.expires_in // 60)
    click.echo(f"A sign-in link was sent to {started.email}; it expires in {minutes} min.")
    click.echo("Copy the link from the email, then run `splitlink-client complete` and paste it.")


@cli.command()
@click.argument("link", required=False)
@click.pass_obj
@_refusals
def complete(client: SplitlinkClient, link: str | None) -> None:
    """Finish signing in with the emailed LINK (prompted for when omitted, which keeps it out of
    the shell history and the process list)."""
    if link is None or link == "-":
        link = click.prompt("Paste the link from the email", hide_input=True, err=True)
    signed_in = client.complete_login(link)
    click.echo(f"Signed in as {signed_in.email}.")


@cli.command()
@click.pass_obj
@_refusals
def me(client: SplitlinkClient) -> None:
    """Show the signed-in user and this session."""
    _print_json(client.me())


@cli.command()
@click.pass_obj
@_refusals
def refresh(client: SplitlinkClient) -> None:
    """Get new tokens with the refresh token."""
    expires_in = client.refresh()
    click.echo(f"Tokens refreshed; the access token expires in {expires_in} s.")


@cli.command()
@click.pass_obj
@_refusals
def sessions(client: SplitlinkClient) -> None:
    """List the user's sessions."""
    _print_json(client.sessions())


@cli.command()
@click.option("--all", "everywhere", is_flag=True, help="End every session of the user.")
@click.pass_obj
@_refusals
def logout(client: SplitlinkClient, everywhere: bool) -> None:
    """End this session (or all of them) and forget its tokens."""
    if everywhere:
        client.logout_all()
        click.echo("Signed out of every session.")
    else:
        client.logout()
        click.echo("Signed out.")


def main() -> None:
    cli(prog_name="splitlink-client")
