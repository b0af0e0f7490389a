"""Server secrets: the root secret, the keys derived from it, and sealing of data at rest.

One root secret (configuration, or a development file created on first run) yields independent
keys by HKDF with distinct labels: the HMAC key for stored hashes, and the AES-256-GCM key that
seals what must be kept but must not rest in plain form (queued mail, signing keys).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.encoding import b64url_decode, b64url_encode
from protocol.errors import MalformedInput
from server.clock import RandomBytes
from server.settings import Settings

_NONCE_BYTES = 12
DEV_SECRET_FILE = "secret.key"
MIN_ROOT_SECRET_BYTES = 32


class SealError(Exception):
    """A sealed value could not be opened: wrong key, wrong context or tampering."""


def _derive(root: bytes, label: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode()).derive(root)


@dataclass(frozen=True)
class Keyring:
    hmac_key: bytes
    seal_key: bytes
    nonce_key: bytes

    def __repr__(self) -> str:
        return "Keyring(...)"

    @classmethod
    def from_root(cls, root: bytes) -> Keyring:
        if len(root) < 32:
            raise ValueError("the root secret must hold at least 32 bytes")
        return cls(
            hmac_key=_derive(root, "splitlink/v1/hmac"),
            seal_key=_derive(root, "splitlink/v1/seal"),
            nonce_key=_derive(root, "splitlink/v1/dpop-nonce"),
        )

    def seal(self, plaintext: bytes, *, context: str, random_bytes: RandomBytes) -> str:
        nonce = random_bytes(_NONCE_BYTES)
        sealed = AESGCM(self.seal_key).encrypt(nonce, plaintext, context.encode())
        return b64url_encode(nonce + sealed)

    def open(self, sealed: str, *, context: str) -> bytes:
        try:
            data = b64url_decode(sealed, field="sealed value")
            return AESGCM(self.seal_key).decrypt(
                data[:_NONCE_BYTES], data[_NONCE_BYTES:], context.encode()
            )
        except (MalformedInput, InvalidTag, ValueError) as exc:
            raise SealError("sealed value cannot be opened") from exc


def development_secret_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / DEV_SECRET_FILE


def decode_root_secret(text: str) -> bytes:
    """`SPLITLINK_SECRET_KEY` as bytes: base64url if it decodes as such, else its own text."""
    try:
        return b64url_decode(text, field="SPLITLINK_SECRET_KEY")
    except MalformedInput:
        return text.encode()


def read_root_secret(settings: Settings) -> bytes | None:
    """The configured secret, or the development secret in data_dir; None if there is neither."""
    if settings.secret_key is not None:
        root = decode_root_secret(settings.secret_key.get_secret_value())
        if len(root) < MIN_ROOT_SECRET_BYTES:
            raise ValueError(
                f"SPLITLINK_SECRET_KEY must hold at least {MIN_ROOT_SECRET_BYTES} bytes"
            )
        return root
    path = development_secret_path(settings)
    if not path.exists():
        return None
    return b64url_decode(path.read_text().strip(), field=str(path))


def create_development_secret(settings: Settings, *, random_bytes: RandomBytes) -> bytes:
    """Create the development secret (0600) unless another process just did; return it."""
    path = development_secret_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return b64url_decode(path.read_text().strip(), field=str(path))
    with os.fdopen(fd, "w") as handle:
        handle.write(b64url_encode(random_bytes(32)) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return b64url_decode(path.read_text().strip(), field=str(path))
