"""The signing keys' store on both backends: sealed keys kept, listed, retired, and read back
while they still verify (SPEC.md §6.3)."""

from __future__ import annotations

import pytest
from support.backends import query

from server.storage.database import Database
from server.storage.signing_keys import SigningKeyStore

pytestmark = pytest.mark.anyio


async def _insert(store: SigningKeyStore, kid: str, *, now: int) -> None:
    await store.insert(
        kid=kid, alg="EdDSA", public_jwk='{"kty":"OKP"}', sealed_private_key=f"s-{kid}", now=now
    )


async def test_an_inserted_key_is_kept_with_its_public_and_sealed_halves(
    database: Database, database_url: str
) -> None:
    await _insert(SigningKeyStore(database), "k1", now=5)
    assert query(
        database_url,
        "SELECT kid, alg, public_jwk, sealed_private_key, created_at, retired_at FROM signing_keys",
    ) == [("k1", "EdDSA", '{"kty":"OKP"}', "s-k1", 5, None)]


async def test_the_newest_key_is_the_one_created_last_retired_or_not(database: Database) -> None:
    store = SigningKeyStore(database)
    assert await store.newest() is None
    await _insert(store, "k1", now=1)
    await _insert(store, "k2", now=2)
    await store.retire_all_but(kid="k1", retire_at=3)
    newest = await store.newest()
    assert newest is not None
    assert (newest.kid, newest.sealed_private_key, newest.retired_at) == ("k2", "s-k2", 3)


async def test_unretired_keys_are_counted(database: Database) -> None:
    store = SigningKeyStore(database)
    assert await store.count_unretired() == 0
    await _insert(store, "k1", now=1)
    await _insert(store, "k2", now=2)
    await store.retire_all_but(kid="k2", retire_at=10)
    assert await store.count_unretired() == 1


async def test_retiring_gives_every_other_unretired_key_its_time_and_keeps_earlier_times(
    database: Database, database_url: str
) -> None:
    store = SigningKeyStore(database)
    await _insert(store, "k1", now=1)
    await store.retire_all_but(kid="k2", retire_at=5)
    await _insert(store, "k2", now=2)
    await _insert(store, "k3", now=3)
    await store.retire_all_but(kid="k3", retire_at=9)
    assert query(database_url, "SELECT kid, retired_at FROM signing_keys ORDER BY kid") == [
        ("k1", 5),
        ("k2", 9),
        ("k3", None),
    ]


async def test_the_listing_shows_every_key_oldest_first_without_anything_sealed(
    database: Database,
) -> None:
    store = SigningKeyStore(database)
    await _insert(store, "k2", now=2)
    await _insert(store, "k1", now=1)
    await store.retire_all_but(kid="k2", retire_at=4)
    listing = await store.listing()
    assert [(k.kid, k.alg, k.created_at, k.retired_at) for k in listing] == [
        ("k1", "EdDSA", 1, 4),
        ("k2", "EdDSA", 2, None),
    ]
    assert not any(hasattr(k, "sealed_private_key") for k in listing)


async def test_usable_keys_are_those_not_retired_by_now_newest_first(database: Database) -> None:
    store = SigningKeyStore(database)
    await _insert(store, "k1", now=1)
    await store.retire_all_but(kid="none", retire_at=10)
    await _insert(store, "k2", now=2)
    await _insert(store, "k3", now=3)
    assert [k.kid for k in await store.usable(now=9)] == ["k3", "k2", "k1"]
    assert [k.kid for k in await store.usable(now=10)] == ["k3", "k2"]
