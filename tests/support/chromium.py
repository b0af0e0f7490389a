"""Headless Chromium for the landing page's renders: screenshots with the command-line flags,
and the page's layout read over the DevTools protocol.

The layout is read by the browser itself (`Runtime.evaluate` through `--remote-debugging-pipe`),
so the page under test stays as served, without a script, under its own CSP; the viewport is set
by device emulation, which, unlike `--window-size` for `--dump-dom`, has no minimum width.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]
TIMEOUT_SECONDS = 60.0


def require_chromium() -> Path:
    """The browser; without it the test is skipped, or fails where `CI` is set."""
    if not CHROMIUM.exists():
        message = f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


def screenshot(url: str, *, width: int, height: int, path: Path, profile: Path) -> None:
    subprocess.run(
        [
            str(require_chromium()),
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={path}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=TIMEOUT_SECONDS,
    )


@dataclass(frozen=True)
class Layout:
    scroll_width: int
    client_width: int
    body_font_px: float
    body_background: str
    widest_element: int


MEASURE = """JSON.stringify({
  scroll_width: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
  client_width: document.documentElement.clientWidth,
  body_font_px: parseFloat(getComputedStyle(document.body).fontSize),
  body_background: getComputedStyle(document.body).backgroundColor,
  widest_element: Math.max(...[...document.body.querySelectorAll('*')].map(
    e => Math.ceil(e.getBoundingClientRect().right))),
})"""


def _above_four(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 5)
    os.close(fd)
    return moved


class _Pipe:
    """The DevTools protocol over the pipes Chromium reads (fd 3) and writes (fd 4)."""

    def __init__(self, profile: Path) -> None:
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # Above fd 4, so that placing one end at 3 or 4 cannot overwrite the other.
        to_browser_read = _above_four(to_browser_read)
        from_browser_write = _above_four(from_browser_write)
        # The browser reads commands from fd 3 and writes to fd 4; bash (whose redirections,
        # unlike dash's, take fds above 9) puts the pipes there.
        self._process = subprocess.Popen(
            [
                "/bin/bash",
                "-c",
                f'exec "$@" 3<&{to_browser_read} 4>&{from_browser_write}',
                "bash",
                str(require_chromium()),
                *FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            pass_fds=(to_browser_read, from_browser_write),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result
            self.events.append(reply)

    def wait_for(self, method: str) -> None:
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while not any(event.get("method") == method for event in self.events):
            assert time.monotonic() < deadline, f"no {method} from Chromium"
            self.events.append(self._read())

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_browser, 65536)
            assert chunk, "Chromium closed the DevTools pipe"
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def close(self) -> None:
        # The browser may close the pipe before it answers.
        with contextlib.suppress(AssertionError, OSError):
            self.call("Browser.close")
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


def measure_layout(url: str, *, width: int, height: int, profile: Path) -> Layout:
    """The page's layout at a phone-like (`mobile`, honouring the viewport meta tag) or desktop
    viewport of `width` x `height` CSS pixels."""
    pipe = _Pipe(profile)
    try:
        target = pipe.call("Target.createTarget", url="about:blank")["targetId"]
        session = pipe.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        pipe.call(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=width < 600,
        )
        pipe.call("Page.enable", session)
        pipe.call("Page.navigate", session, url=url)
        pipe.wait_for("Page.loadEventFired")
        evaluated = pipe.call("Runtime.evaluate", session, expression=MEASURE, returnByValue=True)
        values: dict[str, Any] = json.loads(evaluated["result"]["value"])
        return Layout(**values)
    finally:
        pipe.close()
