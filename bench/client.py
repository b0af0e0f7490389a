"""A small HTTP/1.1 client over raw asyncio streams: keep-alive, one request at a time per
connection, about 30 µs of client CPU per request (httpx spends far more, and on a 2-core machine
every microsecond the generator spends is taken from the server)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass


class HttpError(Exception):
    pass


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        # How often this connection was opened: more than once means the server closed it and
        # the worker that holds it may have changed (bench.placement).
        self.opened = 0

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, limit=1 << 20
            )
            self.opened += 1
        return self._reader, self._writer

    def local_port(self) -> int | None:
        """The client's port while the connection is open."""
        if self._writer is None:
            return None
        return int(self._writer.get_extra_info("sockname")[1])

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Answer:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if content_type is not None:
            lines.append(f"Content-Type: {content_type}")
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        for attempt in range(2):
            reader, writer = await self._open()
            started = time.perf_counter()
            try:
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                # A keep-alive connection the server closed: open a new one, once.
                await self.close()
                if attempt:
                    raise HttpError(f"{method} {path}: {exc}") from exc
                continue
            status, answer_headers = _parse_head(head)
            length = answer_headers.get("content-length")
            if length is None:
                raise HttpError(f"{method} {path}: answer without Content-Length")
            payload = await reader.readexactly(int(length)) if int(length) else b""
            seconds = time.perf_counter() - started
            if answer_headers.get("connection", "").lower() == "close":
                await self.close()
            return Answer(status, answer_headers, payload, seconds)
        raise HttpError("unreachable")  # pragma: no cover


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    text = head.decode("latin-1")
    status_line, *header_lines = text.split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HttpError(f"not an HTTP answer: {status_line!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers
