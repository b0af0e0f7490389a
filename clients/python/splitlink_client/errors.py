"""The client's errors: one root, `ClientError`, on top of protocol's `SplitlinkError`.

A server refusal carries the server's `error` code, its `error_description`, the HTTP status and
`Retry-After` (RFC 6749 §5.2, RFC 6585 §4). A `LocalError` is a refusal made on this device before
any request went out (no pending login, a link for another attempt, an unsafe state file).
"""

from __future__ import annotations

from protocol.errors import ErrorCode, SplitlinkError

_KNOWN_CODES = frozenset(code.value for code in ErrorCode)
# Codes the client uses for failures that have no server error body.
INVALID_RESPONSE = "invalid_response"
MAIL_NOT_RECEIVED = "mail_not_received"


class ClientError(SplitlinkError):
    """A request the server refused, a response the client cannot use, or a local refusal.

    `error` is the server's code as sent (it may be one protocol does not know); `code` is the
    matching `ErrorCode`, or SERVER_ERROR for an unknown one. `status` is None when no HTTP
    response was received. `attempt_state` is the `attempt_state` member of a completion's
    `invalid_grant` (SPEC.md §6.2): `consumed`, `locked` or `expired`, else None.
    """

    def __init__(
        self,
        error: str,
        description: str,
        *,
        status: int | None = None,
        retry_after: int | None = None,
        attempt_state: str | None = None,
    ) -> None:
        super().__init__(description)
        self.error = error
        self.status = status
        self.retry_after = retry_after
        self.attempt_state = attempt_state
        self.code = ErrorCode(error) if error in _KNOWN_CODES else ErrorCode.SERVER_ERROR

    def __str__(self) -> str:
        return f"{self.error}: {self.description}"


class LocalError(ClientError):
    """Refused on the device before any request: the command cannot run in the current state."""

    def __init__(self, description: str) -> None:
        super().__init__(ErrorCode.INVALID_REQUEST.value, description)


class StateFileError(LocalError):
    """The device state file is unreadable, corrupt, or readable by other users."""


class MailNotReceived(ClientError):
    """A test waited for a login mail that did not arrive in time (`splitlink_client.testing`)."""

    def __init__(self, description: str) -> None:
        super().__init__(MAIL_NOT_RECEIVED, description)
