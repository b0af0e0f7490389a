"""A served worker keeps what exists after its startup out of Python's cyclic garbage collector
(docs/design.md §9): a full collection then walks only what was made since, instead of stalling the
event loop for tens of milliseconds (README, Performance). Processes that build many apps, such
as these tests, must not."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from support import harness
from support.fakes import FakeClock

from server.app import create_app_from_environment

pytestmark = pytest.mark.anyio


async def test_a_worker_made_from_the_environment_freezes_its_startup_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = harness.test_settings(tmp_path)
    await harness.prepare_database(settings, FakeClock())
    for name, value in {
        "SPLITLINK_PUBLIC_URL": harness.PUBLIC_URL,
        "SPLITLINK_DATABASE_URL": settings.database_url,
        "SPLITLINK_DATA_DIR": str(tmp_path),
        "SPLITLINK_DEV_MAILBOX_CONSOLE": "false",
    }.items():
        monkeypatch.setenv(name, value)
    assert gc.get_freeze_count() == 0
    app = create_app_from_environment()
    try:
        async with app.router.lifespan_context(app):
            frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()
    # The modules, settings, templates and services of a started worker.
    assert frozen > 10_000


async def test_an_app_built_in_a_test_process_freezes_nothing(tmp_path: Path) -> None:
    async with harness.running_server(tmp_path) as server:
        assert (await server.client.get("/.well-known/jwks.json")).status_code == 200
        assert gc.get_freeze_count() == 0
