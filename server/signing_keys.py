"""The server's access-token signing keys: sealed in the database, published as a JWKS.

Ed25519 keys, named by their RFC 7638 thumbprint (`kid`). The newest key that is not retiring
signs. `splitlink keys rotate` adds a key and gives the previous ones a retirement time after the
longest access-token lifetime, so every token they signed still verifies until it expires; after
that they leave the JWKS and verify nothing (SPEC.md §6.3).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from protocol.encoding import b64url_decode
from protocol.keys import PublicKey, SigningKey
from server.clock import Clock, RandomBytes
from server.keyring import (
    Keyring,
    SealError,
    create_development_secret,
    development_secret_path,
    read_root_secret,
)
from server.production import ProductionRefused
from server.settings import Settings
from server.storage.signing_keys import SealedSigningKey, SigningKeyListing

logger = logging.getLogger("splitlink.keys")

_SEAL_CONTEXT = "signing-key:"
# An unknown kid makes a worker reload its keys at most this often.
MIN_RELOAD_INTERVAL = 5.0


class SigningKeyRows(Protocol):
    """Where the sealed keys rest: read back, added to, retired."""

    async def newest(self) -> SealedSigningKey | None: ...

    async def count_unretired(self) -> int: ...

    async def insert(
        self, *, kid: str, alg: str, public_jwk: str, sealed_private_key: str, now: int
    ) -> None: ...

    async def retire_all_but(self, *, kid: str, retire_at: int) -> None: ...

    async def listing(self) -> list[SigningKeyListing]: ...

    async def usable(self, *, now: int) -> list[SealedSigningKey]: ...


class SecretDoesNotOpenKeys(RuntimeError):
    """The root secret is not the one that sealed this database's signing keys."""


_START_AFRESH = (
    "or, to start afresh, delete the database (its users and sessions go with it) and run "
    "`splitlink migrate`"
)


async def open_keyring(
    rows: SigningKeyRows, settings: Settings, *, random_bytes: RandomBytes
) -> Keyring:
    """The keyring of the root secret that sealed this database's signing keys (SPEC.md §5.5).

    A development secret is created only for a database that holds no key yet: one created
    beside keys sealed with a lost secret would open nothing and hide the loss."""
    newest = await rows.newest()
    root = read_root_secret(settings)
    if root is None and settings.production:
        # A development secret would seal production's keys with a file on one host.
        raise ProductionRefused(
            "SPLITLINK_SECRET_KEY is unset: production never creates a development secret; set "
            "the root secret (the same on every host) before any command"
        )
    if root is None:
        if newest is not None:
            path = development_secret_path(settings)
            raise SecretDoesNotOpenKeys(
                f"the development secret {path} is missing, and a new secret does not open this "
                f"database's signing keys, which the missing one sealed. Restore {path} (or set "
                f"SPLITLINK_SECRET_KEY to that secret), {_START_AFRESH}."
            )
        root = create_development_secret(settings, random_bytes=random_bytes)
    keyring = Keyring.from_root(root)
    if newest is not None:
        try:
            keyring.open(newest.sealed_private_key, context=_SEAL_CONTEXT + newest.kid)
        except SealError as exc:
            source = (
                "SPLITLINK_SECRET_KEY"
                if settings.secret_key is not None
                else str(development_secret_path(settings))
            )
            raise SecretDoesNotOpenKeys(
                f"the secret in {source} does not open this database's signing keys: they were "
                f"sealed with another secret. Restore the secret the database was created "
                f"with, {_START_AFRESH}."
            ) from exc
    return keyring


@dataclass(frozen=True)
class ServerKey:
    kid: str
    key: SigningKey
    created_at: int


@dataclass(frozen=True)
class KeySet:
    current: ServerKey
    verification_keys: dict[str, PublicKey]
    jwks: dict[str, list[dict[str, str]]]


async def create_signing_key(
    rows: SigningKeyRows, keyring: Keyring, *, clock: Clock, random_bytes: RandomBytes
) -> str:
    key = SigningKey.generate("EdDSA", random_bytes=random_bytes)
    kid = key.public.thumbprint
    sealed = keyring.seal(
        b64url_decode(key.private_jwk()["d"]),
        context=_SEAL_CONTEXT + kid,
        random_bytes=random_bytes,
    )
    await rows.insert(
        kid=kid,
        alg=key.alg,
        public_jwk=json.dumps(dict(key.public.jwk)),
        sealed_private_key=sealed,
        now=clock.now(),
    )
    return kid


async def ensure_signing_key(
    rows: SigningKeyRows, keyring: Keyring, *, clock: Clock, random_bytes: RandomBytes
) -> None:
    if await rows.count_unretired() == 0:
        await create_signing_key(rows, keyring, clock=clock, random_bytes=random_bytes)


async def rotate_signing_key(
    rows: SigningKeyRows,
    keyring: Keyring,
    *,
    clock: Clock,
    random_bytes: RandomBytes,
    retire_after: int,
) -> str:
    """Add a signing key; the keys it replaces verify for `retire_after` more seconds."""
    kid = await create_signing_key(rows, keyring, clock=clock, random_bytes=random_bytes)
    await rows.retire_all_but(kid=kid, retire_at=clock.now() + retire_after)
    return kid


async def list_signing_keys(rows: SigningKeyRows) -> list[SigningKeyListing]:
    return await rows.listing()


async def load_key_set(rows: SigningKeyRows, keyring: Keyring, *, now: int) -> KeySet:
    keys: list[ServerKey] = []
    signers: list[ServerKey] = []
    for sealed in await rows.usable(now=now):
        private = keyring.open(sealed.sealed_private_key, context=_SEAL_CONTEXT + sealed.kid)
        key = SigningKey.from_private_bytes(sealed.alg, private)
        if key.public.thumbprint != sealed.kid:
            raise RuntimeError(f"signing key {sealed.kid} does not match its kid")
        server_key = ServerKey(kid=sealed.kid, key=key, created_at=sealed.created_at)
        keys.append(server_key)
        if sealed.retired_at is None:
            signers.append(server_key)
    if not signers:
        raise RuntimeError("no signing key: run `splitlink migrate` first")
    return KeySet(
        current=signers[0],
        verification_keys={k.kid: k.key.public for k in keys},
        jwks={
            "keys": [
                {**k.key.public.jwk, "kid": k.kid, "alg": k.key.alg, "use": "sig"} for k in keys
            ]
        },
    )


class ServerKeys:
    """This worker's view of the signing keys, reloaded periodically and on an unknown kid."""

    def __init__(
        self, rows: SigningKeyRows, keyring: Keyring, *, clock: Clock, key_set: KeySet
    ) -> None:
        self._rows = rows
        self._keyring = keyring
        self._clock = clock
        self.key_set = key_set
        self._last_reload = time.monotonic()
        # When the key set was last read successfully (time.monotonic()): readiness checks it.
        self.loaded_at = self._last_reload

    @classmethod
    async def load(cls, rows: SigningKeyRows, keyring: Keyring, *, clock: Clock) -> ServerKeys:
        key_set = await load_key_set(rows, keyring, now=clock.now())
        return cls(rows, keyring, clock=clock, key_set=key_set)

    def verification_keys(self) -> Mapping[str, PublicKey]:
        return self.key_set.verification_keys

    async def refresh_if_stale(self) -> None:
        """Nothing to do: a background task reloads every key_refresh_interval."""

    async def reload(self, *, force: bool = False) -> bool:
        """Reload from the database; without `force`, at most every MIN_RELOAD_INTERVAL s."""
        if not force and time.monotonic() - self._last_reload < MIN_RELOAD_INTERVAL:
            return False
        self._last_reload = time.monotonic()
        self.key_set = await load_key_set(self._rows, self._keyring, now=self._clock.now())
        self.loaded_at = time.monotonic()
        return True
