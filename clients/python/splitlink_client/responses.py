"""Reading server responses: JSON bodies, OAuth error bodies (RFC 6749 §5.2), DPoP challenges
(RFC 9449 §7.1, §8, §9) and token responses. Server text is made printable before it is kept."""

from __future__ import annotations

import re
from typing import Any

import httpx

from protocol.encoding import parse_json_object
from protocol.errors import ErrorCode, MalformedInput
from splitlink_client.errors import INVALID_RESPONSE, ClientError

MAX_SERVER_TEXT = 300
_AUTH_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*"((?:[^"\\]|\\.)*)"')
_STATUS_DEFAULT_CODES = {
    401: ErrorCode.INVALID_TOKEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.REQUEST_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.TEMPORARILY_UNAVAILABLE,
}


def printable(text: str) -> str:
    """Server text without control characters (no terminal escapes), bounded in length."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned[:MAX_SERVER_TEXT]


def json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        return parse_json_object(response.content, field="response body")
    except MalformedInput as exc:
        raise ClientError(
            INVALID_RESPONSE,
            f"{response.request.method} {response.request.url.path}: {exc.description}",
            status=response.status_code,
        ) from exc


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        return parse_json_object(response.content)
    except MalformedInput:
        return {}


def _error_fields(response: httpx.Response) -> tuple[str | None, str | None]:
    """`error` and `error_description` from the JSON body, else from WWW-Authenticate."""
    body = _error_body(response)
    error = body.get("error")
    description = body.get("error_description")
    if isinstance(error, str) and error:
        return error, description if isinstance(description, str) else None
    params = dict(_AUTH_PARAM.findall(response.headers.get("WWW-Authenticate", "")))
    return params.get("error") or None, params.get("error_description")


def _attempt_state(response: httpx.Response) -> str | None:
    """Why a proven completion was refused (SPEC.md §6.2); only ever sent with invalid_grant."""
    value = _error_body(response).get("attempt_state")
    return printable(value) if isinstance(value, str) and value else None


def is_nonce_challenge(response: httpx.Response) -> bool:
    """RFC 9449 §8 and §9: the server wants a proof carrying the nonce it sent."""
    if response.status_code not in (400, 401) or not response.headers.get("DPoP-Nonce"):
        return False
    error, _ = _error_fields(response)
    return error == ErrorCode.USE_DPOP_NONCE.value


def retry_after(response: httpx.Response) -> int | None:
    value = response.headers.get("Retry-After", "").strip()
    return int(value) if value.isdigit() else None


def error_from_response(response: httpx.Response) -> ClientError:
    status = response.status_code
    error, description = _error_fields(response)
    if error is None:
        default = _STATUS_DEFAULT_CODES.get(status)
        if default is None:
            default = ErrorCode.SERVER_ERROR if status >= 500 else ErrorCode.INVALID_REQUEST
        error = default.value
    return ClientError(
        printable(error),
        printable(description) if description else f"the server answered HTTP {status}",
        status=status,
        retry_after=retry_after(response),
        attempt_state=_attempt_state(response) if error == ErrorCode.INVALID_GRANT else None,
    )


def require_string(body: dict[str, Any], name: str, response: httpx.Response) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ClientError(
            INVALID_RESPONSE, f"the response lacks {name}", status=response.status_code
        )
    return value


def require_positive_int(body: dict[str, Any], name: str, response: httpx.Response) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ClientError(
            INVALID_RESPONSE,
            f"the response's {name} must be a positive integer",
            status=response.status_code,
        )
    return value
