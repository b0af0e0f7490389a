"""The `splitlink-client` CLI over the fake server: output, exit codes, no secrets printed."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from client_fake_server import ISSUER, FakeClock, FakeServer
from splitlink_client import load_state
from splitlink_client.cli import CliEnvironment, cli

from protocol.encoding import b64url_encode
from protocol.link import build_login_link

EMAIL = "alice@example.com"


class CliRunnerCall:
    """Invoke the CLI with the fake server's transport injected through the context object."""

    def __init__(self, server: FakeServer, clock: FakeClock, state_path: Path) -> None:
        self.server = server
        self.clock = clock
        self.state_path = state_path
        self.runner = CliRunner()

    def __call__(
        self, *args: str, input: str | None = None, env: dict[str, str | None] | None = None
    ) -> Result:
        base = ["--server", ISSUER, "--state", str(self.state_path)]
        return self.runner.invoke(
            cli,
            [*base, *args] if env is None else list(args),
            input=input,
            env=env,
            obj=CliEnvironment(transport=self.server.transport, clock=self.clock),
        )


@pytest.fixture
def run(server: FakeServer, clock: FakeClock, state_path: Path) -> CliRunnerCall:
    return CliRunnerCall(server, clock, state_path)


def _secrets(run: CliRunnerCall) -> list[str]:
    key = load_state(run.state_path).key
    assert key is not None
    return [*run.server.issued_secrets(), key.private_jwk()["d"]]


def test_cli_login_complete_me_flow(run: CliRunnerCall, server: FakeServer) -> None:
    login = run("login", EMAIL, "--device-name", "laptop", "--alg", "ES256")
    assert login.exit_code == 0, login.output
    assert f"A sign-in link was sent to {EMAIL}" in login.output
    assert "splitlink-client complete" in login.output
    assert "Created a new ES256 device key" in login.output
    assert stat.S_IMODE(run.state_path.stat().st_mode) == 0o600

    complete = run("complete", server.outbox[EMAIL])
    assert complete.exit_code == 0, complete.output
    assert complete.output == f"Signed in as {EMAIL}.\n"

    me = run("me")
    assert me.exit_code == 0, me.output
    body = json.loads(me.output)
    assert body["user"] == {"email": EMAIL}
    assert body["session"]["device_name"] == "laptop"

    for secret in _secrets(run):
        assert secret not in login.output + complete.output + me.output


def test_cli_complete_reads_the_link_from_a_prompt_when_omitted(
    run: CliRunnerCall, server: FakeServer
) -> None:
    assert run("login", EMAIL).exit_code == 0
    result = run("complete", input=server.outbox[EMAIL] + "\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Signed in as {EMAIL}.\n"
    assert server.outbox[EMAIL] not in result.output


def test_cli_refresh_sessions_and_logout(run: CliRunnerCall, server: FakeServer) -> None:
    run("login", EMAIL)
    run("complete", server.outbox[EMAIL])
    refreshed = run("refresh")
    assert refreshed.exit_code == 0, refreshed.output
    assert "expires in 300 s" in refreshed.output
    listed = run("sessions")
    assert listed.exit_code == 0
    assert len(json.loads(listed.output)["sessions"]) == 1
    out = run("logout")
    assert (out.exit_code, out.output) == (0, "Signed out.\n")
    assert load_state(run.state_path).tokens is None
    for secret in _secrets(run):
        assert secret not in refreshed.output + listed.output


def test_cli_logout_all(run: CliRunnerCall, server: FakeServer) -> None:
    run("login", EMAIL)
    run("complete", server.outbox[EMAIL])
    out = run("logout", "--all")
    assert out.exit_code == 0, out.output
    assert server.seen[-1].request.url.path == "/v1/logout/all"


def test_cli_server_refusal_exits_1_with_code_and_description(run: CliRunnerCall) -> None:
    result = run("login", "not-an-address")
    assert result.exit_code == 1
    assert result.stderr == "error: invalid_email: not an email address\n"
    assert result.stdout == ""


def test_cli_rate_limit_shows_retry_after(run: CliRunnerCall, server: FakeServer) -> None:
    server.overrides["/v1/login/start"] = httpx.Response(
        429,
        json={"error": "rate_limited", "error_description": "slow down"},
        headers={"Retry-After": "42"},
    )
    result = run("login", EMAIL)
    assert result.exit_code == 1
    assert result.stderr == "error: rate_limited: slow down (retry after 42 s)\n"


def test_cli_link_for_another_attempt_exits_2_before_any_request(
    run: CliRunnerCall, server: FakeServer
) -> None:
    run("login", EMAIL)
    before = len(server.seen)
    link = build_login_link(
        public_url=ISSUER,
        attempt_id=b64url_encode(b"\x01" * 16),
        email_half=b64url_encode(b"\x02" * 32),
    )
    result = run("complete", link)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: invalid_request: the link belongs to another")
    assert len(server.seen) == before


def test_cli_me_when_not_signed_in_exits_2(run: CliRunnerCall) -> None:
    result = run("me")
    assert result.exit_code == 2
    assert "not signed in" in result.stderr


@pytest.mark.parametrize(
    "args",
    [["login"], ["frobnicate"], ["login", EMAIL, "--alg", "RS256"], ["logout", "--everywhere"]],
)
def test_cli_usage_errors_exit_2(run: CliRunnerCall, args: list[str]) -> None:
    assert run(*args).exit_code == 2


def test_cli_refuses_an_insecure_state_file(run: CliRunnerCall, server: FakeServer) -> None:
    run("login", EMAIL)
    run.state_path.chmod(0o644)
    result = run("complete", server.outbox[EMAIL])
    assert result.exit_code == 2
    assert "mode 0644" in result.stderr
    assert "chmod 600" in result.stderr
    assert not server.requests_to("/oauth/token")


def test_cli_reads_server_and_state_from_the_environment(
    run: CliRunnerCall, server: FakeServer, tmp_path: Path
) -> None:
    state = tmp_path / "from-env.json"
    result = run(
        "login", EMAIL, env={"SPLITLINK_SERVER": ISSUER, "SPLITLINK_CLIENT_STATE": str(state)}
    )
    assert result.exit_code == 0, result.output
    assert load_state(state).pending is not None


def test_cli_defaults_to_local_server_and_state_under_home(
    clock: FakeClock, tmp_path: Path
) -> None:
    local = FakeServer(clock, issuer="http://127.0.0.1:8000")
    result = CliRunner().invoke(
        cli,
        ["login", EMAIL],
        env={"HOME": str(tmp_path), "SPLITLINK_SERVER": None, "SPLITLINK_CLIENT_STATE": None},
        obj=CliEnvironment(transport=local.transport, clock=clock),
    )
    assert result.exit_code == 0, result.output
    state = tmp_path / ".config" / "splitlink" / "device.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert local.requests_to("/v1/login/start")
