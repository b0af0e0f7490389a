"""`splitlink serve` writes its log, security events included, to its output (SPEC.md §6.12), and
no secret ever reaches it."""

from __future__ import annotations

from pathlib import Path

import pytest
from splitlink_client.client import SplitlinkClient
from support.processes import mail_link, running_server_process

from server.keyring import DEV_SECRET_FILE

pytestmark = pytest.mark.slow


def test_serve_logs_security_events_and_the_mail_transport_but_no_secret(tmp_path: Path) -> None:
    # The console copy of the dev mailbox is mail delivery, with the link in it, so it is off:
    # what remains on the output is the log.
    with running_server_process(
        tmp_path, workers=2, extra_env={"SPLITLINK_DEV_MAILBOX_CONSOLE": "false"}
    ) as server:
        with SplitlinkClient(server.url, tmp_path / "device.json") as client:
            started = client.start_login("dana@example.com")
            pending = client.state.pending
            device_key = client.state.key
            link = mail_link(server.wait_for_mail(1)[0])
            assert link is not None
            client.complete_login(link)
            tokens = client.state.tokens
            session_id = client.me()["session"]["id"]
            client.logout()
        log = server.log()
        root_secret = (server.data_dir / DEV_SECRET_FILE).read_text().strip()
    assert pending is not None and tokens is not None and device_key is not None
    jkt = device_key.public.thumbprint
    lines = log.splitlines()

    def logged(*words: str) -> bool:
        return any(all(word in line for word in words) for line in lines)

    assert logged("mail: development mailbox in", str(server.mail_dir))
    assert logged("login.started", f"attempt_id={started.attempt_id}", f"jkt={jkt}")
    assert logged("login.completed", f"attempt_id={started.attempt_id}", f"jkt={jkt}")
    assert logged("session.revoked", f"session_id={session_id}", "reason=logout")
    email_half = link.rsplit("email_half=", 1)[1]
    for secret in (
        pending.device_half,
        email_half,
        tokens.access_token,
        tokens.refresh_token,
        device_key.private_jwk()["d"],
        root_secret,
    ):
        assert secret not in log
