"""A small, bounded login-and-refresh load from several threads, recording every answer."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from support.processes import ServerProcess
from support.races import HttpDevice, email_half_of


@dataclass
class LoadResult:
    statuses: Counter[str] = field(default_factory=Counter)
    retry_after_missing: int = 0
    secrets: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, response: httpx.Response | None, label: str) -> None:
        with self.lock:
            if response is None:
                self.statuses[f"{label}:connection-error"] += 1
                return
            self.statuses[f"{label}:{response.status_code}"] += 1
            if response.status_code == 503 and "retry-after" not in response.headers:
                self.retry_after_missing += 1

    @property
    def codes(self) -> set[int]:
        return {int(k.rsplit(":", 1)[1]) for k in self.statuses if k[-1].isdigit()}


def _post(client: httpx.Client, path: str, **kwargs: object) -> httpx.Response | None:
    try:
        return client.post(path, **kwargs)  # type: ignore[arg-type]
    except httpx.TransportError:
        return None


def _one_user(server: ServerProcess, n: int, result: LoadResult, stop: threading.Event) -> None:
    device = HttpDevice.new(server)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        i = 0
        while not stop.is_set():
            i += 1
            email = f"load{n}-{i}@example.com"
            start = _post(
                client,
                "/v1/login/start",
                json={"email": email},
                headers={"DPoP": device.proof("POST", "/v1/login/start")},
            )
            result.record(start, "start")
            if start is None or start.status_code != 202:
                time.sleep(0.05)
                continue
            started = start.json()
            try:
                half = email_half_of(server, started["attempt_id"], timeout=10)
            except AssertionError:
                result.record(None, "mail")
                continue
            with result.lock:
                result.secrets += [started["device_half"], half]
            complete = _post(
                client,
                "/oauth2/token",
                data=device.completion_form(started, half),
                headers={"DPoP": device.proof("POST", "/oauth2/token")},
            )
            result.record(complete, "complete")
            if complete is None or complete.status_code != 200:
                continue
            tokens = complete.json()
            for _ in range(2):
                refresh = _post(
                    client,
                    "/oauth2/token",
                    data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                    headers={"DPoP": device.proof("POST", "/oauth2/token")},
                )
                result.record(refresh, "refresh")
                if refresh is not None and refresh.status_code == 200:
                    tokens = refresh.json()
            with result.lock:
                result.secrets += [tokens["refresh_token"], tokens["access_token"]]


def run_load(
    server: ServerProcess, *, users: int, stop: threading.Event
) -> tuple[LoadResult, list[threading.Thread]]:
    result = LoadResult()
    threads = [
        threading.Thread(target=_one_user, args=(server, n, result, stop), daemon=True)
        for n in range(users)
    ]
    for thread in threads:
        thread.start()
    return result, threads
