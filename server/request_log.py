"""One log line per HTTP request, and the request id that ties it to everything else the request
logs (server/request_id.py). Pure ASGI, like server/middleware.py.

The line holds the method, the route's path template (`/v1/sessions/{session_id}`, never the
path with its ids), the status, the duration and the client address; never a query string,
a header value or a body, where secrets travel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.http import client_ip, route_template
from server.request_id import HEADER, bind_request_id, request_id_for, unbind_request_id
from server.settings import IPNetwork

logger = logging.getLogger("splitlink.requests")

_HEADER = HEADER.encode()
_FORWARDED_FOR = b"x-forwarded-for"


class RequestLogMiddleware:
    """Gives each request its id (answered in `X-Request-ID`) and logs its line when it ends."""

    def __init__(self, app: ASGIApp, *, trusted_proxies: Sequence[IPNetwork]) -> None:
        self.app = app
        self._trusted_proxies = list(trusted_proxies)
        self._warned_forwarded_for = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = None
        for name, value in scope["headers"]:
            if name == _HEADER:
                incoming = value.decode("latin-1")
            elif name == _FORWARDED_FOR and not self._trusted_proxies:
                self._warn_forwarded_for_ignored()
        peer = scope["client"][0] if scope.get("client") else None
        request_id = request_id_for(incoming, peer=peer, trusted_proxies=self._trusted_proxies)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500  # unless a response starts

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (_HEADER, request_id.encode())]
            await send(message)

        token = bind_request_id(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._log(scope, request_id, status, time.perf_counter() - started)
            unbind_request_id(token)

    def _log(self, scope: Scope, request_id: str, status: int, seconds: float) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        route = route_template(scope)
        client = client_ip(Request(scope), self._trusted_proxies)
        duration_ms = round(seconds * 1000, 1)
        logger.info(
            "%s %s %d %.1f ms client %s",
            scope["method"],
            route,
            status,
            duration_ms,
            client,
            extra={
                "method": scope["method"],
                "route": route,
                "status": status,
                "duration_ms": duration_ms,
                "client": client,
                "request_id": request_id,
            },
        )

    def _warn_forwarded_for_ignored(self) -> None:
        if self._warned_forwarded_for:
            return
        self._warned_forwarded_for = True
        logger.warning(
            "X-Forwarded-For arrives but SPLITLINK_TRUSTED_PROXIES is empty: the header is "
            "ignored, and rate limits count the proxy's address for every client; list the "
            "proxies' networks in SPLITLINK_TRUSTED_PROXIES (warned once per process)"
        )
