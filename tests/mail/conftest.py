from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.smtp_sink import SmtpSink, smtp_sink


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    """A running SMTP server that requires STARTTLS and takes AUTH, with its own certificate."""
    with smtp_sink(tmp_path / "smtp", tls="starttls") as running:
        yield running
