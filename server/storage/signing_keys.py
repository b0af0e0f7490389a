"""Rows of `signing_keys`: each access-token signing key, its private half sealed with the root
secret (server/signing_keys.py opens and seals; this module only keeps)."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.keys import SUPPORTED_ALGORITHMS, Algorithm
from server.storage.database import Database, Row


@dataclass(frozen=True, slots=True)
class SealedSigningKey:
    """A key as it rests: its private half sealed, under the context of its kid."""

    kid: str
    alg: Algorithm
    sealed_private_key: str
    created_at: int
    retired_at: int | None

    def __repr__(self) -> str:
        return f"SealedSigningKey(kid={self.kid!r}, alg={self.alg!r})"


@dataclass(frozen=True, slots=True)
class SigningKeyListing:
    """A key as `splitlink keys list` shows it: nothing sealed."""

    kid: str
    alg: str
    created_at: int
    retired_at: int | None


def _algorithm(name: str) -> Algorithm:
    for alg in SUPPORTED_ALGORITHMS:
        if alg == name:
            return alg
    raise ValueError(f"signing key algorithm {name!r} is not supported")


def _sealed(row: Row) -> SealedSigningKey:
    return SealedSigningKey(
        kid=row["kid"],
        alg=_algorithm(row["alg"]),
        sealed_private_key=row["sealed_private_key"],
        created_at=int(row["created_at"]),
        retired_at=None if row["retired_at"] is None else int(row["retired_at"]),
    )


_COLUMNS = "kid, alg, sealed_private_key, created_at, retired_at"


class SigningKeyStore:
    """`server.signing_keys.SigningKeyRows` on the database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def newest(self) -> SealedSigningKey | None:
        """The key created last, retired or not: the one whose seal tells which secret sealed
        this database's keys."""
        async with self._db.autocommit() as conn:
            row = await conn.fetch_one(
                f"SELECT {_COLUMNS} FROM signing_keys ORDER BY created_at DESC, kid LIMIT 1"  # noqa: S608
            )
        return None if row is None else _sealed(row)

    async def count_unretired(self) -> int:
        async with self._db.autocommit() as conn:
            row = await conn.fetch_one(
                "SELECT COUNT(*) AS n FROM signing_keys WHERE retired_at IS NULL"
            )
        return 0 if row is None else int(row["n"])

    async def insert(
        self, *, kid: str, alg: str, public_jwk: str, sealed_private_key: str, now: int
    ) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO signing_keys (kid, alg, public_jwk, sealed_private_key, created_at) "
                "VALUES (:kid, :alg, :jwk, :sealed, :now)",
                {
                    "kid": kid,
                    "alg": alg,
                    "jwk": public_jwk,
                    "sealed": sealed_private_key,
                    "now": now,
                },
            )

    async def retire_all_but(self, *, kid: str, retire_at: int) -> None:
        """Give every unretired key but `kid` its retirement time."""
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE signing_keys SET retired_at = :retire_at "
                "WHERE retired_at IS NULL AND kid <> :kid",
                {"retire_at": retire_at, "kid": kid},
            )

    async def listing(self) -> list[SigningKeyListing]:
        """Every key, the oldest first."""
        async with self._db.autocommit() as conn:
            rows = await conn.fetch_all(
                "SELECT kid, alg, created_at, retired_at FROM signing_keys ORDER BY created_at, kid"
            )
        return [
            SigningKeyListing(
                kid=row["kid"],
                alg=row["alg"],
                created_at=int(row["created_at"]),
                retired_at=None if row["retired_at"] is None else int(row["retired_at"]),
            )
            for row in rows
        ]

    async def usable(self, *, now: int) -> list[SealedSigningKey]:
        """The keys that still verify at `now`, the newest first."""
        async with self._db.autocommit() as conn:
            rows = await conn.fetch_all(
                f"SELECT {_COLUMNS} FROM signing_keys "  # noqa: S608
                "WHERE retired_at IS NULL OR retired_at > :now ORDER BY created_at DESC, kid",
                {"now": now},
            )
        return [_sealed(row) for row in rows]
