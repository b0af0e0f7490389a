"""The device's state file: the private key, the pending login and the tokens.

The file holds secrets (a private key, a login half, tokens), so it is created with mode 0600,
replaced atomically (temporary file in the same directory, fsync, rename, fsync of the directory)
and refused on load when its mode gives the group or other users any access, as OpenSSH does.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.encoding import parse_json_object
from protocol.errors import SplitlinkError
from protocol.keys import SigningKey
from splitlink_client.errors import StateFileError

STATE_VERSION = 1
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
MAX_STATE_BYTES = 1 << 20


@dataclass(frozen=True)
class PendingLogin:
    """A started login waiting for the emailed link: the device half stays here."""

    issuer: str
    attempt_id: str
    email: str
    expires_at: int
    device_half: str = field(repr=False)


@dataclass(frozen=True)
class TokenSet:
    """DPoP-bound tokens, usable only at `issuer` and only with the device key."""

    issuer: str
    expires_at: int
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)


@dataclass
class DeviceState:
    key: SigningKey | None = None
    pending: PendingLogin | None = None
    tokens: TokenSet | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "private_jwk": None if self.key is None else self.key.private_jwk(),
            "pending": None
            if self.pending is None
            else {
                "issuer": self.pending.issuer,
                "attempt_id": self.pending.attempt_id,
                "device_half": self.pending.device_half,
                "email": self.pending.email,
                "expires_at": self.pending.expires_at,
            },
            "tokens": None
            if self.tokens is None
            else {
                "issuer": self.tokens.issuer,
                "access_token": self.tokens.access_token,
                "refresh_token": self.tokens.refresh_token,
                "expires_at": self.tokens.expires_at,
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeviceState:
        """Raise StateFileError for anything but a state this version wrote."""
        if data.get("version") != STATE_VERSION:
            raise StateFileError(f"unsupported state file version {data.get('version')!r}")
        key = None
        jwk = data.get("private_jwk")
        if jwk is not None:
            if not isinstance(jwk, dict):
                raise StateFileError("private_jwk must be an object")
            try:
                key = SigningKey.from_private_jwk(jwk)
            except SplitlinkError as exc:
                raise StateFileError(f"the stored device key is invalid: {exc}") from exc
        pending = _optional_object(data, "pending")
        tokens = _optional_object(data, "tokens")
        return cls(
            key=key,
            pending=None
            if pending is None
            else PendingLogin(
                issuer=_str(pending, "issuer"),
                attempt_id=_str(pending, "attempt_id"),
                device_half=_str(pending, "device_half"),
                email=_str(pending, "email"),
                expires_at=_int(pending, "expires_at"),
            ),
            tokens=None
            if tokens is None
            else TokenSet(
                issuer=_str(tokens, "issuer"),
                access_token=_str(tokens, "access_token"),
                refresh_token=_str(tokens, "refresh_token"),
                expires_at=_int(tokens, "expires_at"),
            ),
        )


def _optional_object(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = data.get(name)
    if value is not None and not isinstance(value, dict):
        raise StateFileError(f"{name} must be an object")
    return value


def _str(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise StateFileError(f"{name} must be a non-empty string")
    return value


def _int(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise StateFileError(f"{name} must be an integer")
    return value


def load_state(path: Path) -> DeviceState:
    """Read the state file; a missing file is an empty state.

    Raises StateFileError when the file is not a regular file, belongs to another user, grants
    the group or other users any permission, or does not hold a valid state.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return DeviceState()
    except OSError as exc:
        raise StateFileError(f"cannot open state file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise StateFileError(f"state file {path} is not a regular file")
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            raise StateFileError(f"state file {path} belongs to another user")
        permissions = stat.S_IMODE(info.st_mode)
        if permissions & 0o077:
            raise StateFileError(
                f"state file {path} has mode {permissions:04o}, so other users may read the "
                f"device key and tokens; run `chmod 600 {path}` if the file is yours"
            )
        raw = file.read(MAX_STATE_BYTES + 1)
    if len(raw) > MAX_STATE_BYTES:
        raise StateFileError(f"state file {path} is too large")
    try:
        data = parse_json_object(raw, field="state file")
    except SplitlinkError as exc:
        raise StateFileError(f"state file {path} is corrupt: {exc}") from exc
    return DeviceState.from_json(data)


def save_state(path: Path, state: DeviceState) -> None:
    """Replace the state file atomically; the file is never readable by anyone else."""
    payload = json.dumps(state.to_json(), indent=2, sort_keys=True).encode() + b"\n"
    directory = path.parent
    directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    # mkstemp creates the file with O_EXCL and mode 0600.
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), FILE_MODE)
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
