"""SIGTERM stops a server without losing or repeating mail: the hand-off under way finishes and
is recorded, nothing more is claimed, and another server delivers the rest exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from splitlink_client.client import SplitlinkClient
from support import backends
from support.harness import running_server
from support.processes import running_server_process
from support.smtp_sink import Delivery, SmtpSink, smtp_sink

pytestmark = pytest.mark.slow

MESSAGES = 3


def _wait_for(sink: SmtpSink, count: int, timeout: float = 20.0) -> list[Delivery]:
    deadline = time.monotonic() + timeout
    while len(sink.deliveries) < count:
        assert time.monotonic() < deadline, f"{len(sink.deliveries)} of {count} delivered"
        time.sleep(0.05)
    return sink.deliveries


def test_sigterm_finishes_the_hand_off_under_way_and_another_server_sends_the_rest_once(
    tmp_path: Path,
) -> None:
    with smtp_sink(tmp_path / "smtp", tls="starttls") as sink:
        # The mail server takes each message, then answers only 1.5 s later.
        sink.recorder.slow = ("DATA", 1.5)
        env = {
            f"SPLITLINK_{name.upper()}": str(value)
            for name, value in sink.settings(smtp_timeout=5.0).items()
        } | {"SPLITLINK_OUTBOX_CONCURRENCY": "1"}
        with running_server_process(tmp_path / "first", workers=1, extra_env=env) as first:
            for n in range(MESSAGES):
                with SplitlinkClient(first.url, tmp_path / f"device{n}.json") as client:
                    client.start_login(f"user{n}@example.com")
            _wait_for(sink, 1)
            # The first message is taken and its reply is on its way.
            os.killpg(first.process.pid, signal.SIGTERM)
            # uvicorn raises the signal again once it has shut down.
            assert first.process.wait(timeout=20) in (0, -signal.SIGTERM)
            rows = backends.query(
                first.database_url,
                "SELECT status, lease_until FROM outbox ORDER BY created_at, id",
            )
            first_log = first.log()
        assert len(sink.deliveries) == 1
        assert sorted(status for status, _ in rows) == ["queued", "queued", "sent"]
        assert all(lease is None for _, lease in rows), "a lease outlived the server"
        assert "Traceback" not in first_log

        second_env = env | {"SPLITLINK_DATA_DIR": str(first.data_dir)}
        (tmp_path / "second").mkdir()
        with running_server_process(
            tmp_path / "second",
            workers=1,
            extra_env=second_env,
            database_url=first.database_url,
        ) as second:
            deliveries = _wait_for(sink, MESSAGES)
            time.sleep(2)  # anything sent twice would arrive meanwhile
            assert httpx.get(second.url + "/readyz").status_code == 200
        deliveries = sink.deliveries
    recipients = sorted(rcpt for d in deliveries for rcpt in d.rcpt_tos)
    assert recipients == [f"user{n}@example.com" for n in range(MESSAGES)]


class _Hanging:
    """A mail server that takes the message and never answers."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def send(self, *, recipient: str, message: bytes, message_key: str) -> None:
        self.entered.set()
        await asyncio.Event().wait()


@pytest.mark.anyio
async def test_a_hand_off_cut_short_by_shutdown_releases_its_row_at_once(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        hanging = _Hanging()
        server.app.state.outbox._transport = hanging
        response = await server.start(server.device(), "ivy@example.com")
        assert response.status_code == 202
        dispatch = asyncio.create_task(server.app.state.outbox.dispatch_due())
        await asyncio.wait_for(hanging.entered.wait(), 5)
        dispatch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dispatch
        ((outbox_id, status, lease, not_before),) = server.query(
            "SELECT id, status, lease_until, not_before FROM outbox"
        )
        tries = server.query(
            "SELECT outcome, detail FROM outbox_tries WHERE outbox_id = ?", outbox_id
        )
    assert (status, lease) == ("queued", None)
    assert not_before <= server.clock.now()
    assert tries == [("retry", "interrupted by shutdown")]
