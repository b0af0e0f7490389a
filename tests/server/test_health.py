"""`/healthz` and `/readyz`: cheap, unauthenticated, read-only, and silent about the configuration
(SPEC.md §1.4; README "Operating splitlink")."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import psycopg
import pytest
from support import backends
from support.harness import Harness
from support.processes import running_server_process

from server.health import check_readiness

READY = {"status": "ready", "failed": []}


def _not_ready(*failed: str) -> dict[str, object]:
    return {"status": "not_ready", "failed": list(failed)}


@pytest.mark.anyio
async def test_a_healthy_server_is_alive_and_ready_and_probing_writes_nothing(
    server: Harness,
) -> None:
    before = server.dump_database()
    for _ in range(3):
        alive = await server.client.get("/healthz")
        ready = await server.client.get("/readyz")
        assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
        assert (ready.status_code, ready.json()) == (200, READY)
    assert ready.headers["cache-control"] == "no-store"
    assert server.dump_database() == before


@pytest.mark.anyio
async def test_a_message_due_for_too_long_makes_the_server_not_ready(server: Harness) -> None:
    response = await server.start(server.device(), "gus@example.com")
    assert response.status_code == 202
    server.clock.advance(server.settings.outbox_stuck_after - 5)
    assert (await server.client.get("/readyz")).status_code == 200
    server.clock.advance(10)
    ready = await server.client.get("/readyz")
    assert (ready.status_code, ready.json()) == (503, _not_ready("outbox"))
    await server.deliver()
    assert (await server.client.get("/readyz")).status_code == 200


@pytest.mark.anyio
async def test_a_schema_behind_this_server_makes_it_not_ready(server: Harness) -> None:
    backends.execute(server.database_url, "UPDATE alembic_version SET version_num = '0001'")
    ready = await server.client.get("/readyz")
    assert (ready.status_code, ready.json()) == (503, _not_ready("schema"))


@pytest.mark.anyio
async def test_signing_keys_not_reloaded_for_three_intervals_make_the_server_not_ready(
    server: Harness,
) -> None:
    svc = server.app.state.services
    assert (await check_readiness(svc)).ready
    svc.keys.loaded_at -= 3 * server.settings.key_refresh_interval + 1
    assert (await check_readiness(svc)).failed == ("signing_key",)
    await svc.keys.reload(force=True)
    assert (await check_readiness(svc)).ready


def _probe(url: str) -> tuple[int, dict[str, object], str]:
    response = httpx.get(url + "/readyz", timeout=10)
    return response.status_code, response.json(), response.text


@pytest.mark.slow
def test_a_removed_sqlite_file_makes_the_server_not_ready_and_says_nothing_more(
    tmp_path: Path,
) -> None:
    with running_server_process(tmp_path, workers=1) as server:
        assert _probe(server.url)[:2] == (200, READY)
        database = Path(server.database_url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        status, body, text = _probe(server.url)
        alive = httpx.get(server.url + "/healthz")
    assert (status, body) == (503, _not_ready("database"))
    assert alive.status_code == 200
    for revealing in (str(tmp_path), "sqlite", "splitlink.db", "http"):
        assert revealing not in text


@pytest.mark.slow
def test_a_postgresql_database_dropped_under_the_server_makes_it_not_ready(
    tmp_path: Path,
) -> None:
    with (
        backends.postgres_database() as database_url,
        running_server_process(tmp_path, workers=1, database_url=database_url) as server,
    ):
        assert _probe(server.url)[:2] == (200, READY)
        name = database_url.rsplit("/", 1)[1]
        with psycopg.connect(os.environ[backends.POSTGRES_ENV], autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        status, body, text = _probe(server.url)
    assert (status, body) == (503, _not_ready("database"))
    assert "postgres" not in text
