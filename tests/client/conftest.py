from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from client_fake_server import ISSUER, FakeClock, FakeServer
from splitlink_client import SplitlinkClient


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> FakeServer:
    return FakeServer(clock)


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "config" / "splitlink" / "device.json"


@pytest.fixture
def http(server: FakeServer) -> Iterator[httpx.Client]:
    with httpx.Client(transport=server.transport) as client:
        yield client


@pytest.fixture
def client(http: httpx.Client, state_path: Path, clock: FakeClock) -> SplitlinkClient:
    return SplitlinkClient(ISSUER, state_path, http=http, clock=clock)
