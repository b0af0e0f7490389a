"""A real login: `splitlink serve` with 2 workers on a SQLite file, the reference client, the
dev mailbox (SPEC.md §6)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from splitlink_client.client import SplitlinkClient
from splitlink_client.errors import ClientError
from splitlink_client.testing import MailboxDirectory, sign_in, wait_for_login_mail
from support.processes import mail_link, running_server_process

from protocol.dpop import create_dpop_proof
from protocol.encoding import b64url_encode
from protocol.keys import Algorithm, SigningKey

pytestmark = pytest.mark.slow


def _proof(key: SigningKey, url: str, token: str, jti: str | None = None) -> str:
    return create_dpop_proof(
        key=key,
        method="GET",
        url=url,
        iat=int(time.time()),
        jti=jti or b64url_encode(os.urandom(16)),
        access_token=token,
    )


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_reference_client_logs_in_and_calls_me(tmp_path: Path, alg: Algorithm) -> None:
    with running_server_process(tmp_path) as server:
        state = tmp_path / "device.json"
        mailbox = MailboxDirectory(server.mail_dir)
        with sign_in(
            server_url=server.url,
            email="Alice@Example.com",
            device_name="Alice's phone",
            alg=alg,
            mailbox=mailbox,
            state_path=state,
        ) as client:
            me = client.me()
        # One login mail, to the address as typed; `sign_in` completed the attempt with its link.
        (mail,) = mailbox.login_mails()
        assert mail.recipient == "Alice@example.com"
        assert me["user"]["email"] == "Alice@example.com"
        assert me["session"]["key_alg"] == alg
        assert oct(state.stat().st_mode & 0o777) == "0o600"


def test_me_refuses_missing_foreign_and_replayed_proofs(tmp_path: Path) -> None:
    with running_server_process(tmp_path) as server:
        with sign_in(
            server_url=server.url,
            email="bob@example.com",
            mailbox=MailboxDirectory(server.mail_dir),
            state_path=tmp_path / "device.json",
        ) as client:
            token = client.state.tokens.access_token  # type: ignore[union-attr]
            key = client.state.key
        me_url = server.url + "/v1/me"
        auth = {"Authorization": f"DPoP {token}"}
        assert httpx.get(me_url, headers=auth).status_code == 401
        other = SigningKey.generate("EdDSA", random_bytes=os.urandom)
        foreign = httpx.get(me_url, headers={**auth, "DPoP": _proof(other, me_url, token)})
        assert foreign.status_code == 401
        proof = _proof(key, me_url, token)
        assert httpx.get(me_url, headers={**auth, "DPoP": proof}).status_code == 200
        # Replayed, on whichever worker answers: the replay store is shared through the database.
        for _ in range(4):
            replay = httpx.get(me_url, headers={**auth, "DPoP": proof})
            assert replay.status_code == 401
            assert 'error="invalid_dpop_proof"' in replay.headers["www-authenticate"]


def test_nothing_secret_rests_in_the_database_or_the_server_log(tmp_path: Path) -> None:
    # The console copy of the dev mailbox is mail delivery, so it is switched off here: what
    # remains on the server's output is its log, which must hold no secret.
    with running_server_process(
        tmp_path, extra_env={"SPLITLINK_DEV_MAILBOX_CONSOLE": "false"}
    ) as server:
        state = tmp_path / "device.json"
        with SplitlinkClient(server.url, state) as client:
            started = client.start_login("carol@example.com")
            pending = client.state.pending
            mailbox = MailboxDirectory(server.mail_dir)
            link = wait_for_login_mail(mailbox, attempt_id=started.attempt_id).link
            client.complete_login(link)
            client.me()
            tokens = client.state.tokens
        assert pending is not None and tokens is not None
        with sqlite3.connect(server.data_dir / "splitlink.db") as db:
            dump = "\n".join(db.iterdump())
        log = server.log()
        email_half = link.rsplit("email_half=", 1)[1]
        assert "POST /oauth2/token" in log
        for secret in (pending.device_half, email_half, tokens.access_token, tokens.refresh_token):
            assert secret not in dump
            assert secret not in log


class _LosesFirstCompletionAnswer(httpx.BaseTransport):
    """Sends every request, but drops the answer to the first completion, as a network would."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.lost = 0

    def close(self) -> None:
        self._inner.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if request.url.path == "/oauth2/token" and not self.lost:
            response.read()
            response.close()
            self.lost += 1
            raise httpx.ReadError("connection reset", request=request)
        return response


def test_a_client_whose_completion_answer_was_lost_learns_the_attempt_is_consumed(
    tmp_path: Path,
) -> None:
    # SPEC.md §2.3, §6.2: the retry is refused with attempt_state consumed, and the client
    # drops the pending login instead of retrying it for ever.
    transport = _LosesFirstCompletionAnswer()
    with running_server_process(tmp_path) as server, httpx.Client(transport=transport) as http:
        client = SplitlinkClient(server.url, tmp_path / "device.json", http=http)
        client.start_login("carol@example.com")
        link = mail_link(server.wait_for_mail(1)[0])
        with pytest.raises(ClientError) as lost:
            client.complete_login(link)
        assert lost.value.error == "temporarily_unavailable"
        assert client.state.pending is not None
        with pytest.raises(ClientError) as retried:
            client.complete_login(link)
    assert (retried.value.error, retried.value.attempt_state) == ("invalid_grant", "consumed")
    assert client.state.pending is None
    assert transport.lost == 1
