"""What the login routes hand to the flow (server/login.py), and what it answers."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from protocol.dpop import VerifiedDPoPProof
from protocol.errors import MalformedInput

MAX_DEVICE_NAME_LENGTH = 64


@dataclass(frozen=True, slots=True)
class StartLogin:
    """A start (SPEC.md §6.1), from the JSON body of POST /v1/login/start."""

    # Raw JSON values: refused input still counts against the limits, which come first.
    email: object
    device_name: object
    proof: VerifiedDPoPProof
    client_ip: str


@dataclass(frozen=True, slots=True)
class CompleteLogin:
    """A completion (SPEC.md §6.2), from the form of the magic-link grant."""

    # The form's values as sent: the per-IP limit counts before they are parsed.
    attempt_id: str | None
    device_half: str | None
    email_half: str | None
    proof: VerifiedDPoPProof
    client_ip: str


@dataclass(frozen=True, slots=True)
class StartedLogin:
    attempt_id: str
    device_half: str
    expires_in: int
    check_phrase: str

    def __repr__(self) -> str:
        return f"StartedLogin(attempt_id={self.attempt_id!r}, expires_in={self.expires_in})"


class CompletionRefusal(StrEnum):
    """Why a completion was refused; the value is the reason of its `login.failed` event."""

    UNKNOWN_ATTEMPT = "unknown_attempt"
    MISMATCH = "mismatch"
    CONSUMED = "consumed"
    LOCKED = "locked"
    EXPIRED = "expired"
    NO_ACCOUNT = "no_account"
    USER_DISABLED = "user_disabled"

    @property
    def tells_state(self) -> bool:
        """Whether the answer names the attempt's state: only to a request with the attempt's
        key and both halves (SPEC.md §6.2, `attempt_state`)."""
        return self in (
            CompletionRefusal.CONSUMED,
            CompletionRefusal.LOCKED,
            CompletionRefusal.EXPIRED,
        )


def parse_device_name(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedInput("device_name must be a string")
    name = value.strip()
    if not name or len(name) > MAX_DEVICE_NAME_LENGTH:
        raise MalformedInput(f"device_name must have 1 to {MAX_DEVICE_NAME_LENGTH} characters")
    # Control and format characters (CR, LF, bidi overrides) could forge lines in the email;
    # a lone surrogate (Cs) cannot be stored or sent as UTF-8.
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in name):
        raise MalformedInput("device_name must not contain control characters")
    return name
