"""A server a person can move: `make run PORT=…`, the URL `serve` announces and its warning when
the public URL names another port, and the client's hint when nothing answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from support.processes import BIN, ROOT, free_port, running_server_process

pytestmark = pytest.mark.slow


def _own_environment(tmp_path: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SPLITLINK_")}
    return env | {
        "PYTHONPATH": str(ROOT),
        "SPLITLINK_DATA_DIR": str(tmp_path / "var"),
        "SPLITLINK_DEV_MAILBOX_CONSOLE": "false",
    }


def test_make_run_with_a_port_serves_there_under_a_matching_public_url(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "make.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            # This environment's programs, and no reinstall of them.
            [
                "make",
                "-C",
                str(ROOT),
                "-o",
                ".venv/.installed",
                "run",
                f"PORT={port}",
                f"BIN={BIN}",
            ],
            env=_own_environment(tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                metadata = httpx.get(
                    f"http://127.0.0.1:{port}/.well-known/oauth-authorization-server"
                )
                break
            except httpx.TransportError:
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    assert metadata.json()["issuer"] == f"http://127.0.0.1:{port}"
    log = log_path.read_text()
    assert f"listening on http://127.0.0.1:{port}" in log
    assert "warning" not in log.lower()


def test_serve_warns_when_the_public_url_names_another_port(tmp_path: Path) -> None:
    other = free_port()
    with running_server_process(
        tmp_path, workers=1, public_url=f"http://127.0.0.1:{other}"
    ) as server:
        log = server.log()
    port = server.url.rsplit(":", 1)[1]
    assert (
        f"listening on {server.url} (1 worker); the public URL is http://127.0.0.1:{other}" in log
    )
    assert f"set SPLITLINK_PUBLIC_URL=http://127.0.0.1:{port}" in log


def test_serve_names_a_taken_port_and_how_to_choose_another(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(BIN / "splitlink"), "serve", "--port", str(port)],
            env=_own_environment(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1 port {port}" in result.stderr
    assert "make run PORT=" in result.stderr


def test_the_client_says_how_to_point_it_at_another_server_when_none_answers(
    tmp_path: Path,
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [
            str(BIN / "splitlink-client"),
            "--state",
            str(tmp_path / "device.json"),
            "login",
            "hana@example.com",
        ],
        env=_own_environment(tmp_path) | {"SPLITLINK_SERVER": nowhere},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"is the server running at {nowhere}?" in result.stderr
    assert "--server URL or SPLITLINK_SERVER=URL" in result.stderr
