"""The server's access-token signing keys: kept sealed in the database, published as a JWKS.

Ed25519 keys, named by their RFC 7638 thumbprint (`kid`). The newest unretired key signs; every
unretired key verifies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from protocol.encoding import b64url_decode
from protocol.keys import PublicKey, SigningKey
from server.clock import Clock, RandomBytes
from server.keyring import Keyring
from server.storage.database import Database

_SEAL_CONTEXT = "signing-key:"


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
    db: Database, keyring: Keyring, *, clock: Clock, random_bytes: RandomBytes
) -> str:
    key = SigningKey.generate("EdDSA", random_bytes=random_bytes)
    kid = key.public.thumbprint
    sealed = keyring.seal(
        b64url_decode(key.private_jwk()["d"]),
        context=_SEAL_CONTEXT + kid,
        random_bytes=random_bytes,
    )
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO signing_keys (kid, alg, public_jwk, sealed_private_key, created_at) "
            "VALUES (:kid, :alg, :jwk, :sealed, :now)",
            {
                "kid": kid,
                "alg": key.alg,
                "jwk": json.dumps(dict(key.public.jwk)),
                "sealed": sealed,
                "now": clock.now(),
            },
        )
    return kid


async def ensure_signing_key(
    db: Database, keyring: Keyring, *, clock: Clock, random_bytes: RandomBytes
) -> None:
    async with db.autocommit() as conn:
        row = await conn.fetch_one(
            "SELECT COUNT(*) AS n FROM signing_keys WHERE retired_at IS NULL"
        )
    if row is None or int(row["n"]) == 0:
        await create_signing_key(db, keyring, clock=clock, random_bytes=random_bytes)


async def load_key_set(db: Database, keyring: Keyring) -> KeySet:
    async with db.autocommit() as conn:
        rows = await conn.fetch_all(
            "SELECT kid, alg, sealed_private_key, created_at FROM signing_keys "
            "WHERE retired_at IS NULL ORDER BY created_at DESC, kid"
        )
    if not rows:
        raise RuntimeError("no signing key: run `splitlink migrate` first")
    keys = []
    for row in rows:
        private = keyring.open(row["sealed_private_key"], context=_SEAL_CONTEXT + row["kid"])
        key = SigningKey.from_private_bytes(row["alg"], private)
        if key.public.thumbprint != row["kid"]:
            raise RuntimeError(f"signing key {row['kid']} does not match its kid")
        keys.append(ServerKey(kid=row["kid"], key=key, created_at=int(row["created_at"])))
    return KeySet(
        current=keys[0],
        verification_keys={k.kid: k.key.public for k in keys},
        jwks={
            "keys": [
                {**k.key.public.jwk, "kid": k.kid, "alg": k.key.alg, "use": "sig"} for k in keys
            ]
        },
    )
