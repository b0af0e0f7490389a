"""A root secret that does not open the database's keys stops the server before it starts, with
advice and without a traceback; no second secret is ever written beside such a database
(SPEC.md §5.5)."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest
from support import harness
from support.backends import query
from support.fakes import FakeClock, RecordingTransport
from support.processes import BIN, ROOT, free_port

from server.app import create_app
from server.signing_keys import SecretDoesNotOpenKeys

pytestmark = pytest.mark.slow


def _environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    data_dir = tmp_path / "var"
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "SPLITLINK_DATA_DIR": str(data_dir),
        "SPLITLINK_DATABASE_URL": f"sqlite:///{data_dir / 'splitlink.db'}",
        **settings,
    }


def _splitlink(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "splitlink"), *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _splitlink(env, "serve", "--port", str(free_port()), "--workers", "1")


def _assert_refused_with_advice(done: subprocess.CompletedProcess[str]) -> None:
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output and "SealError" not in output
    assert "does not open this database's signing keys" in output
    assert "restore" in output.lower()
    assert "delete the database" in output


def test_a_lost_development_secret_stops_serve_with_advice(tmp_path: Path) -> None:
    env = _environment(tmp_path)
    assert _splitlink(env, "migrate").returncode == 0
    secret = tmp_path / "var" / "secret.key"
    secret.unlink()
    done = _serve(env)
    _assert_refused_with_advice(done)
    assert str(secret) in done.stderr
    # Nothing left behind: a secret beside keys it cannot open would only hide the loss.
    assert not secret.exists()


def test_migrate_writes_no_new_secret_beside_a_sealed_database(tmp_path: Path) -> None:
    env = _environment(tmp_path)
    assert _splitlink(env, "migrate").returncode == 0
    secret = tmp_path / "var" / "secret.key"
    secret.unlink()
    _assert_refused_with_advice(_splitlink(env, "migrate"))
    assert not secret.exists()
    database = env["SPLITLINK_DATABASE_URL"]
    assert query(database, "SELECT COUNT(*) FROM signing_keys") == [(1,)]


def test_a_configured_secret_that_sealed_nothing_here_stops_serve(tmp_path: Path) -> None:
    env = _environment(tmp_path)
    assert _splitlink(env, "migrate").returncode == 0
    other = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    done = _serve({**env, "SPLITLINK_SECRET_KEY": other})
    _assert_refused_with_advice(done)
    assert other not in done.stdout + done.stderr
    assert "SPLITLINK_SECRET_KEY" in done.stderr


@pytest.mark.anyio
async def test_a_worker_refuses_a_secret_that_does_not_open_the_keys(tmp_path: Path) -> None:
    # A worker started without `splitlink serve` (uvicorn --factory) checks the same.
    settings = harness.test_settings(tmp_path)
    await harness.prepare_database(settings, FakeClock())
    (tmp_path / "secret.key").unlink()
    app = create_app(settings, mail_transport=RecordingTransport(), background_tasks=False)
    with pytest.raises(SecretDoesNotOpenKeys):
        async with app.router.lifespan_context(app):
            pass  # pragma: no cover - startup is refused
    assert not (tmp_path / "secret.key").exists()
