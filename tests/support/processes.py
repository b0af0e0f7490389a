"""Real server processes: `splitlink migrate` then `splitlink serve` on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    url: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    database_url: str
    public_url: str

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    def wait_for_mail(self, count: int = 1, timeout: float = 10.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            files = sorted(self.mail_dir.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
            if len(files) >= count:
                return [
                    message_from_bytes(f.read_bytes(), _class=EmailMessage, policy=SMTP)
                    for f in files
                ]
            time.sleep(0.05)
        raise AssertionError(f"fewer than {count} messages in {self.mail_dir}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def mail_link(message: EmailMessage) -> str | None:
    """The login link in a message; None for mail without one (notices)."""
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    words = str(part.get_content()).split()
    return next((word for word in words if "#attempt_id=" in word), None)


@contextmanager
def running_server_process(
    tmp_path: Path,
    *,
    workers: int = 2,
    extra_env: dict[str, str] | None = None,
    database_url: str | None = None,
    preexec: Callable[[], None] | None = None,
    public_url: str | None = None,
) -> Iterator[ServerProcess]:
    """`public_url` differs from the listening URL for several processes behind one name."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "var"
    env = {
        **os.environ,
        # The server under test is this checkout's, whatever the virtualenv was installed from.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "SPLITLINK_PUBLIC_URL": public_url or url,
        "SPLITLINK_DATA_DIR": str(data_dir),
        "SPLITLINK_DATABASE_URL": database_url or f"sqlite:///{data_dir / 'splitlink.db'}",
        "SPLITLINK_OUTBOX_POLL_INTERVAL": "0.1",
        **(extra_env or {}),
    }
    data_dir = Path(env["SPLITLINK_DATA_DIR"])
    subprocess.run([str(BIN / "splitlink"), "migrate"], env=env, check=True, capture_output=True)
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(BIN / "splitlink"), "serve", "--port", str(port), "--workers", str(workers)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
        )
    server = ServerProcess(
        url=url,
        data_dir=data_dir,
        env=env,
        process=process,
        log_path=log_path,
        database_url=env["SPLITLINK_DATABASE_URL"],
        public_url=env["SPLITLINK_PUBLIC_URL"],
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/.well-known/oauth-authorization-server").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("server did not start:\n" + server.log())
            time.sleep(0.1)
        # Every worker must be up before a race can use them all.
        time.sleep(0.5 if workers > 1 else 0)
        yield server
    finally:
        # A test may have stopped the server itself.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
