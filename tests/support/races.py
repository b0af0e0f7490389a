"""Races through real, separate connections to a multi-worker server (docs/design.md §10)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from protocol.dpop import create_dpop_proof
from protocol.encoding import b64url_encode
from protocol.keys import SigningKey
from server.login import GRANT_TYPE_MAGIC_LINK
from support.processes import ServerProcess, mail_link


@dataclass
class HttpDevice:
    server: ServerProcess
    key: SigningKey

    @classmethod
    def new(cls, server: ServerProcess) -> HttpDevice:
        return cls(server, SigningKey.generate("EdDSA", random_bytes=os.urandom))

    def proof(self, method: str, path: str, access_token: str | None = None) -> str:
        return create_dpop_proof(
            key=self.key,
            method=method,
            url=self.server.public_url + path,
            iat=int(time.time()),
            jti=b64url_encode(os.urandom(16)),
            access_token=access_token,
        )

    def start(self, email: str) -> dict[str, str]:
        response = httpx.post(
            self.server.url + "/v1/login/start",
            json={"email": email},
            headers={"DPoP": self.proof("POST", "/v1/login/start")},
        )
        assert response.status_code == 202, response.text
        body: dict[str, str] = response.json()
        return body

    def completion_form(self, started: dict[str, str], email_half: str) -> dict[str, str]:
        return {
            "grant_type": GRANT_TYPE_MAGIC_LINK,
            "attempt_id": started["attempt_id"],
            "device_half": started["device_half"],
            "email_half": email_half,
        }

    def login(self, email: str, mail_count: int = 1) -> dict[str, str]:
        started = self.start(email)
        half = email_half_of(self.server, started["attempt_id"], mail_count)
        response = httpx.post(
            self.server.url + "/oauth2/token",
            data=self.completion_form(started, half),
            headers={"DPoP": self.proof("POST", "/oauth2/token")},
        )
        assert response.status_code == 200, response.text
        tokens: dict[str, str] = response.json()
        return tokens


def email_half_of(
    server: ServerProcess, attempt_id: str, mail_count: int = 1, timeout: float = 10.0
) -> str:
    """The email half from the dev mailbox message for `attempt_id`, waiting for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in server.wait_for_mail(mail_count, timeout=timeout):
            link = mail_link(message)
            if link is not None and attempt_id in link:
                return link.rsplit("email_half=", 1)[1]
        time.sleep(0.05)
    raise AssertionError(f"no mail for attempt {attempt_id}")


def race(
    server: ServerProcess, requests: list[Callable[[httpx.Client], httpx.Response]]
) -> list[httpx.Response]:
    """Open one connection per request, then release them all at once; answers in order."""
    clients = [httpx.Client(base_url=server.url, timeout=60) for _ in requests]
    try:
        for client in clients:
            assert client.get("/.well-known/jwks.json").status_code == 200
        barrier = threading.Barrier(len(requests))
        answers: list[httpx.Response | None] = [None] * len(requests)

        def run(i: int) -> None:
            barrier.wait()
            answers[i] = requests[i](clients[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for client in clients:
            client.close()
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]
