"""pytest fixtures that sign in against a splitlink server in development.

Enable them in the top `conftest.py` of a test suite:

    pytest_plugins = ["splitlink_client.testing"]

    def test_profile(splitlink_sign_in):
        client = splitlink_sign_in("alice@example.com", device_name="test phone")
        assert client.me()["user"]["email"] == "alice@example.com"

The server is `--splitlink-server` (or `SPLITLINK_SERVER`, default `http://127.0.0.1:8000`). Its
mail is read from its development mailbox, `--splitlink-mailbox` (default
`$SPLITLINK_DATA_DIR/mail`, else `var/mail`), or, with `--splitlink-smtp-port PORT`, from an SMTP
sink these fixtures start on that port (the server then runs with
`SPLITLINK_SMTP_URL=smtp+insecure://127.0.0.1:PORT`; the sink needs `splitlink-client[testing]`).
A suite that starts its own server overrides `splitlink_server_url` and `splitlink_mailbox`.
The fixtures can also be imported one by one instead; the options then keep their defaults.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest

from protocol.keys import Algorithm
from splitlink_client.cli import DEFAULT_SERVER
from splitlink_client.client import SplitlinkClient
from splitlink_client.login_mail import (
    DEFAULT_MAIL_TIMEOUT_SECONDS,
    LoginMail,
    LoginMailbox,
    MailboxDirectory,
    read_login_mail,
    wait_for_login_mail,
)
from splitlink_client.mailbox_sign_in import sign_in

if TYPE_CHECKING:
    from splitlink_client.smtp_sink import SmtpSink

__all__ = [
    "LoginMail",
    "LoginMailbox",
    "MailboxDirectory",
    "SignIn",
    "read_login_mail",
    "sign_in",
    "splitlink_mailbox",
    "splitlink_server_url",
    "splitlink_sign_in",
    "splitlink_signed_in",
    "splitlink_smtp_sink",
    "wait_for_login_mail",
]


class SignIn(Protocol):
    """`splitlink_sign_in(email, ...)`: a client signed in as `email` with a new device key."""

    def __call__(
        self, email: str, *, device_name: str | None = None, alg: Algorithm | None = None
    ) -> SplitlinkClient: ...


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("splitlink", "splitlink sign-in fixtures")
    group.addoption(
        "--splitlink-server",
        default=None,
        help=f"The server to sign in at (env SPLITLINK_SERVER; default {DEFAULT_SERVER}).",
    )
    group.addoption(
        "--splitlink-mailbox",
        default=None,
        help="The server's development mailbox directory (default $SPLITLINK_DATA_DIR/mail, "
        "else var/mail).",
    )
    group.addoption(
        "--splitlink-mail-timeout",
        type=float,
        default=DEFAULT_MAIL_TIMEOUT_SECONDS,
        help="Seconds to wait for a login mail (default %(default)s).",
    )
    group.addoption(
        "--splitlink-smtp-port",
        type=int,
        default=None,
        help="Start an SMTP sink on this port and read the server's mail there.",
    )


@pytest.fixture(scope="session")
def splitlink_server_url(pytestconfig: pytest.Config) -> str:
    """The server the fixtures sign in at."""
    option: str | None = pytestconfig.getoption("splitlink_server", default=None)
    return option or os.environ.get("SPLITLINK_SERVER") or DEFAULT_SERVER


@pytest.fixture(scope="session")
def splitlink_smtp_sink(pytestconfig: pytest.Config) -> Iterator[SmtpSink]:
    """An SMTP sink on `--splitlink-smtp-port` (a free port without it), for the whole test run."""
    # Imported here: only this fixture needs aiosmtpd, the `testing` extra.
    from splitlink_client.smtp_sink import SmtpSink

    port: int | None = pytestconfig.getoption("splitlink_smtp_port", default=None)
    with SmtpSink(port=port or 0) as sink:
        yield sink


@pytest.fixture(scope="session")
def splitlink_mailbox(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> LoginMailbox:
    """Where the server's login mail is read: the SMTP sink when `--splitlink-smtp-port` is
    given, else the development mailbox directory."""
    if pytestconfig.getoption("splitlink_smtp_port", default=None) is not None:
        sink: LoginMailbox = request.getfixturevalue("splitlink_smtp_sink")
        return sink
    option: str | None = pytestconfig.getoption("splitlink_mailbox", default=None)
    if option is not None:
        return MailboxDirectory(Path(option))
    return MailboxDirectory(Path(os.environ.get("SPLITLINK_DATA_DIR", "var")) / "mail")


@pytest.fixture
def splitlink_sign_in(
    splitlink_server_url: str,
    splitlink_mailbox: LoginMailbox,
    tmp_path_factory: pytest.TempPathFactory,
    pytestconfig: pytest.Config,
) -> Iterator[SignIn]:
    """Signs in, each call with a new device key in a state file of its own; the clients are
    closed after the test (their sessions stay open at the server)."""
    clients: list[SplitlinkClient] = []
    timeout: float = pytestconfig.getoption(
        "splitlink_mail_timeout", default=DEFAULT_MAIL_TIMEOUT_SECONDS
    )

    def sign_in_as(
        email: str, *, device_name: str | None = None, alg: Algorithm | None = None
    ) -> SplitlinkClient:
        state_path = tmp_path_factory.mktemp("splitlink-device") / "device.json"
        client = sign_in(
            server_url=splitlink_server_url,
            email=email,
            mailbox=splitlink_mailbox,
            state_path=state_path,
            device_name=device_name,
            alg=alg,
            timeout=timeout,
        )
        clients.append(client)
        return client

    yield sign_in_as
    for client in clients:
        client.close()


@pytest.fixture
def splitlink_signed_in(splitlink_sign_in: SignIn) -> SplitlinkClient:
    """A client signed in as a new address of its own (`test-<random>@example.com`)."""
    return splitlink_sign_in(f"test-{secrets.token_hex(8)}@example.com", device_name="pytest")
