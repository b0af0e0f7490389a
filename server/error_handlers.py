"""The application's exception handlers: every error answers in the JSON of RFC 6749 §5.2 with a
stable code (SPEC.md §9), and an unexpected one is logged without its details reaching the
client."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from protocol.errors import ErrorCode, SplitlinkError
from server.errors import error_response_parts

logger = logging.getLogger("splitlink")


async def splitlink_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, SplitlinkError):  # pragma: no cover - registered for this type only
        raise exc
    status, body, headers = error_response_parts(exc)
    return JSONResponse(body, status_code=status, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(
        status, ErrorCode.INVALID_REQUEST
    )
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    return JSONResponse(
        {"error": code.value, "error_description": "no such endpoint or method"},
        status_code=status,
        headers=headers,  # 405 keeps its Allow header (RFC 9110 §15.5.6)
    )


async def unexpected_error(request: Request, exc: Exception) -> Response:
    # Answered outside RequestLogMiddleware, whose request id is read back from the scope.
    request_id = request.scope.get("state", {}).get("request_id")
    # The path as a quoted literal: a decoded %0A must not start a line of its own in the log.
    logger.error(
        "unexpected %s on %s %r",
        type(exc).__name__,
        request.method,
        request.url.path,
        extra={"request_id": request_id},
    )
    # Answered by the outermost error middleware, outside SecurityHeadersMiddleware.
    return JSONResponse(
        {"error": ErrorCode.SERVER_ERROR.value, "error_description": "internal error"},
        status_code=500,
        headers={
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            **({"X-Request-ID": request_id} if request_id else {}),
        },
    )
