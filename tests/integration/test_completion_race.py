"""Concurrent completions of one attempt through separate connections to 2 workers: exactly one
wins (SPEC.md §8.1; attacks.md C2)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from support.processes import mail_link, running_server_process

from protocol.dpop import create_dpop_proof
from protocol.encoding import b64url_encode
from protocol.keys import SigningKey
from server.login import GRANT_TYPE_MAGIC_LINK

pytestmark = pytest.mark.slow

RACERS = 12


def test_concurrent_completions_of_one_attempt_yield_exactly_one_session(tmp_path: Path) -> None:
    with running_server_process(tmp_path, workers=2) as server:
        key = SigningKey.generate("EdDSA", random_bytes=os.urandom)

        def proof(path: str) -> str:
            return create_dpop_proof(
                key=key,
                method="POST",
                url=server.url + path,
                iat=int(time.time()),
                jti=b64url_encode(os.urandom(16)),
            )

        started = httpx.post(
            server.url + "/v1/login/start",
            json={"email": "race@example.com"},
            headers={"DPoP": proof("/v1/login/start")},
        ).json()
        email_half = mail_link(server.wait_for_mail(1)[0]).rsplit("email_half=", 1)[1]
        form = {
            "grant_type": GRANT_TYPE_MAGIC_LINK,
            "attempt_id": started["attempt_id"],
            "device_half": started["device_half"],
            "email_half": email_half,
        }
        # One client per racer: separate TCP connections, spread over both workers.
        clients = [httpx.Client(base_url=server.url, timeout=30) for _ in range(RACERS)]
        proofs = [proof("/oauth2/token") for _ in range(RACERS)]
        for client in clients:  # open every connection before the start line
            assert client.get("/.well-known/jwks.json").status_code == 200
        barrier = threading.Barrier(RACERS)
        statuses: list[int] = []
        bodies: list[dict[str, str]] = []
        lock = threading.Lock()

        def race(i: int) -> None:
            barrier.wait()
            response = clients[i].post("/oauth2/token", data=form, headers={"DPoP": proofs[i]})
            with lock:
                statuses.append(response.status_code)
                bodies.append(response.json())

        threads = [threading.Thread(target=race, args=(i,)) for i in range(RACERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for client in clients:
            client.close()

        assert sorted(statuses) == [200] + [400] * (RACERS - 1), (statuses, bodies)
        assert {b["error"] for b in bodies if "error" in b} == {"invalid_grant"}
        with sqlite3.connect(server.data_dir / "splitlink.db") as db:
            assert db.execute("SELECT COUNT(*) FROM sessions").fetchone() == (1,)
            assert db.execute("SELECT COUNT(*) FROM refresh_tokens").fetchone() == (1,)
            assert db.execute("SELECT COUNT(*) FROM users").fetchone() == (1,)
        pids = {
            line.split("[")[1].split("]")[0]
            for line in server.log().splitlines()
            if "Started server process" in line
        }
        assert len(pids) == 2
