"""One error root with stable codes (SPEC.md §9).

Codes are part of the wire contract: clients switch on them, tests and vectors assert them.
Messages are for people and may change. HTTP status is chosen by the server, not here.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # RFC 6749 §5.2
    INVALID_REQUEST = "invalid_request"
    INVALID_CLIENT = "invalid_client"
    INVALID_GRANT = "invalid_grant"
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
    # RFC 6750 §3.1
    INVALID_TOKEN = "invalid_token"
    # RFC 9449 §12.2
    INVALID_DPOP_PROOF = "invalid_dpop_proof"
    USE_DPOP_NONCE = "use_dpop_nonce"
    # RFC 7009 §2.2.1
    UNSUPPORTED_TOKEN_TYPE = "unsupported_token_type"
    # splitlink
    INVALID_EMAIL = "invalid_email"
    RATE_LIMITED = "rate_limited"
    TEMPORARILY_UNAVAILABLE = "temporarily_unavailable"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    REQUEST_TOO_LARGE = "request_too_large"
    SERVER_ERROR = "server_error"


class SplitlinkError(Exception):
    """Root of every error splitlink raises on purpose. `code` is stable; the message is not."""

    code: ErrorCode = ErrorCode.SERVER_ERROR

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class MalformedInput(SplitlinkError):
    """Input that is not well-formed: bad encoding, wrong JSON type, missing field."""

    code = ErrorCode.INVALID_REQUEST


class InvalidDPoPProof(SplitlinkError):
    """A DPoP proof failed a check of RFC 9449 §4.3."""

    code = ErrorCode.INVALID_DPOP_PROOF


class InvalidKey(InvalidDPoPProof):
    """A public key that is not an accepted device key (SPEC.md §4.2)."""


class InvalidSignature(SplitlinkError):
    """A signature did not verify. Callers translate it into the error of their context."""

    code = ErrorCode.INVALID_REQUEST


class InvalidToken(SplitlinkError):
    """An access token failed a check of RFC 9068 §4."""

    code = ErrorCode.INVALID_TOKEN


class UnknownSigningKey(InvalidToken):
    """The token names a `kid` the verifier does not know (yet): a reason to refresh the keys."""


class AttemptState(StrEnum):
    """Why a login attempt can no longer be completed: the `attempt_state` member of an
    `invalid_grant` answer to a completion with the attempt's key and both halves (SPEC.md §6.2)."""

    CONSUMED = "consumed"
    LOCKED = "locked"
    EXPIRED = "expired"


class InvalidGrant(SplitlinkError):
    """A grant (split secret or refresh token) that cannot be redeemed (RFC 6749 §5.2).

    `attempt_state` is set only for a completion that proved the attempt's key and both halves.
    """

    code = ErrorCode.INVALID_GRANT

    def __init__(self, description: str, *, attempt_state: AttemptState | None = None) -> None:
        super().__init__(description)
        self.attempt_state = attempt_state


class InvalidEmail(SplitlinkError):
    """An email address outside the accepted grammar (SPEC.md §5)."""

    code = ErrorCode.INVALID_EMAIL
