"""HTTP side of the error contract: status, body and headers for each stable code (SPEC.md §9)."""

from __future__ import annotations

from protocol.errors import ErrorCode, InvalidGrant, SplitlinkError

DPOP_ALGS = "ES256 EdDSA"


class RateLimited(SplitlinkError):
    code = ErrorCode.RATE_LIMITED

    def __init__(self, retry_after: int) -> None:
        super().__init__("too many requests; retry later")
        self.retry_after = max(1, retry_after)


class TemporarilyUnavailable(SplitlinkError):
    code = ErrorCode.TEMPORARILY_UNAVAILABLE

    def __init__(self, description: str = "the server is busy; retry later", retry_after: int = 2):
        super().__init__(description)
        self.retry_after = retry_after


class UseDPoPNonce(SplitlinkError):
    """The proof lacks a fresh server nonce; `nonce` is the one to use (RFC 9449 §8)."""

    code = ErrorCode.USE_DPOP_NONCE

    def __init__(self, nonce: str) -> None:
        super().__init__("a fresh DPoP nonce is required; retry with the DPoP-Nonce provided")
        self.nonce = nonce


class RequestTooLarge(SplitlinkError):
    code = ErrorCode.REQUEST_TOO_LARGE


class UnsupportedMediaType(SplitlinkError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class UnsupportedGrantType(SplitlinkError):
    code = ErrorCode.UNSUPPORTED_GRANT_TYPE


class ResourceError(SplitlinkError):
    """An error at a DPoP-protected resource: answered with 401 and a DPoP challenge.

    `error=None` is the challenge for a request that carried no credentials (RFC 6750 §3.1).
    """

    def __init__(
        self, code: ErrorCode | None, description: str, *, nonce: str | None = None
    ) -> None:
        super().__init__(description)
        self.challenge_error = code
        self.nonce = nonce
        if code is not None:
            self.code = code


_STATUS = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.INVALID_CLIENT: 401,
    ErrorCode.INVALID_GRANT: 400,
    ErrorCode.UNSUPPORTED_GRANT_TYPE: 400,
    ErrorCode.INVALID_TOKEN: 401,
    ErrorCode.INVALID_DPOP_PROOF: 400,
    ErrorCode.USE_DPOP_NONCE: 400,
    ErrorCode.UNSUPPORTED_TOKEN_TYPE: 400,
    ErrorCode.INVALID_EMAIL: 400,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.TEMPORARILY_UNAVAILABLE: 503,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.REQUEST_TOO_LARGE: 413,
    ErrorCode.SERVER_ERROR: 500,
}


def _sanitize(text: str) -> str:
    # RFC 6749 §5.2: error_description uses %x20-21 / %x23-5B / %x5D-7E only.
    return "".join(ch if 0x20 <= ord(ch) <= 0x7E and ch not in '"\\' else "'" for ch in text)


def error_response_parts(exc: SplitlinkError) -> tuple[int, dict[str, str], dict[str, str]]:
    """Return (status, JSON body, headers) for an error."""
    body = {"error": exc.code.value, "error_description": _sanitize(exc.description)}
    if isinstance(exc, InvalidGrant) and exc.attempt_state is not None:
        # An additive member (RFC 6749 §5.2 allows extensions), for clients that lost the
        # answer to their completion (SPEC.md §6.2 step 7.4).
        body["attempt_state"] = exc.attempt_state.value
    headers: dict[str, str] = {}
    status = _STATUS.get(exc.code, 400)
    if isinstance(exc, ResourceError):
        status = 401 if exc.code != ErrorCode.INVALID_REQUEST else 400
        if exc.challenge_error is None:
            headers["WWW-Authenticate"] = f'DPoP algs="{DPOP_ALGS}"'
            body = {
                "error": ErrorCode.INVALID_TOKEN.value,
                "error_description": body["error_description"],
            }
        else:
            headers["WWW-Authenticate"] = (
                f'DPoP error="{exc.code.value}", '
                f'error_description="{body["error_description"]}", algs="{DPOP_ALGS}"'
            )
    extra = getattr(exc, "headers", None)
    if isinstance(extra, dict):
        headers.update(extra)
    nonce = getattr(exc, "nonce", None)
    if isinstance(nonce, str):
        headers["DPoP-Nonce"] = nonce
    if isinstance(exc, RateLimited | TemporarilyUnavailable):
        headers["Retry-After"] = str(exc.retry_after)
    return status, body, headers
