"""`splitlink_client.testing` as a test suite enables it: a separate pytest run with
`pytest_plugins = ["splitlink_client.testing"]` signs in at a real `splitlink serve`, reading
the link from the development mailbox or from the SMTP sink the fixtures start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from splitlink_client.smtp_sink import free_port
from support.processes import running_server_process

pytestmark = pytest.mark.slow

CONFTEST = 'pytest_plugins = ["splitlink_client.testing"]\n'
SUITE = """
def test_sign_in_as_an_address(splitlink_sign_in):
    client = splitlink_sign_in("Dana@Example.com", device_name="kit phone", alg="ES256")
    me = client.me()
    assert me["user"]["email"] == "Dana@example.com"
    assert me["session"]["device_name"] == "kit phone"
    assert me["session"]["key_alg"] == "ES256"
    assert client.refresh() > 0
    assert client.me()["session"]["id"] == me["session"]["id"]


def test_two_devices_of_one_user_see_each_other(splitlink_sign_in):
    first = splitlink_sign_in("erin@example.com", device_name="one")
    second = splitlink_sign_in("erin@example.com", device_name="two")
    names = sorted(s["device_name"] for s in second.sessions()["sessions"])
    assert names == ["one", "two"]
    first.logout()
    assert [s["device_name"] for s in second.sessions()["sessions"]] == ["two"]


def test_a_fresh_user(splitlink_signed_in):
    assert splitlink_signed_in.me()["user"]["email"].startswith("test-")
"""


def _run_suite(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(CONFTEST)
    (suite / "test_app.py").write_text(SUITE)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options],
        cwd=suite,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_fixtures_sign_in_through_the_development_mailbox(tmp_path: Path) -> None:
    with running_server_process(tmp_path, workers=1) as server:
        result = _run_suite(
            tmp_path,
            f"--splitlink-server={server.url}",
            f"--splitlink-mailbox={server.mail_dir}",
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_the_fixtures_sign_in_through_their_smtp_sink(tmp_path: Path) -> None:
    port = free_port()
    env = {"SPLITLINK_SMTP_URL": f"smtp+insecure://127.0.0.1:{port}"}
    with running_server_process(tmp_path, workers=1, extra_env=env) as server:
        result = _run_suite(
            tmp_path, f"--splitlink-server={server.url}", f"--splitlink-smtp-port={port}"
        )
        mailbox = list(server.mail_dir.glob("*.eml")) if server.mail_dir.exists() else []
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    assert mailbox == []  # every link came over SMTP


def test_a_login_mail_that_never_comes_fails_the_test_with_mail_not_received(
    tmp_path: Path,
) -> None:
    with running_server_process(tmp_path, workers=1) as server:
        result = _run_suite(
            tmp_path,
            f"--splitlink-server={server.url}",
            f"--splitlink-mailbox={tmp_path / 'elsewhere'}",
            "--splitlink-mail-timeout=0.5",
            "-k",
            "fresh_user",
        )
    assert result.returncode == 1
    assert "mail_not_received" in result.stdout
