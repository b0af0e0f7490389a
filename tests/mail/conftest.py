from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.backends import BACKENDS
from support.smtp_sink import SmtpSink, smtp_sink


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Outbox tests that touch the claim run on the SQLite file and on PostgreSQL."""
    name: str = request.param
    return name


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    """A running SMTP server that requires STARTTLS and takes AUTH, with its own certificate."""
    with smtp_sink(tmp_path / "smtp", tls="starttls") as running:
        yield running
