"""`RequestMetricsMiddleware`: every HTTP answer counted by route template, method and status,
and timed by route template (pure ASGI, as server/middleware.py explains)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.http import route_template
from server.metrics import (
    HTTP_REQUEST_DURATION,
    HTTP_REQUESTS,
    HTTP_REQUESTS_IN_PROGRESS,
    method_label,
)


class RequestMetricsMiddleware:
    """Outermost of the application's middleware, so that it sees every answer's final status.
    An exception that escapes is answered 500 by Starlette's error middleware, outside this one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        HTTP_REQUESTS_IN_PROGRESS.inc()
        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            HTTP_REQUESTS_IN_PROGRESS.dec()
            route = route_template(scope)
            method = method_label(str(scope.get("method", "")))
            HTTP_REQUESTS.labels(route=route, method=method, status=str(status)).inc()
            HTTP_REQUEST_DURATION.labels(route=route).observe(time.perf_counter() - started)
