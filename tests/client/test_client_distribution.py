"""The client is a distribution of its own: its wheel, installed into an empty virtualenv with
only the dependencies it declares, imports and runs without any part of the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PIP = Path(sys.executable).parent / "pip"
# Top-level modules of the server and of what only the server depends on.
SERVER_MODULES = [
    "server",
    "starlette",
    "uvicorn",
    "databases",
    "alembic",
    "sqlalchemy",
    "psycopg",
    "asyncpg",
    "aiosqlite",
    "pydantic",
    "pydantic_settings",
    "aiosmtplib",
    "qrcode",
]
PROBE = """
import importlib.util, json, sys
import {modules}
print(json.dumps({{
    "loaded": sorted({{name.split(".")[0] for name in sys.modules}}),
    "importable": [m for m in {server_modules!r} if importlib.util.find_spec(m) is not None],
    "client_file": sys.modules["splitlink_client"].__file__,
    "protocol_file": sys.modules["protocol"].__file__,
}}))
"""


def _run(*args: str | Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _install(python: Path, requirement: str, wheelhouse: Path) -> None:
    """Install from the wheels at hand; fetch missing dependency wheels once into the cache."""
    offline = [PIP, "--python", python, "install", "--quiet", "--no-index"]
    links = ["--find-links", wheelhouse]
    attempt = subprocess.run(
        [str(arg) for arg in [*offline, *links, requirement]], capture_output=True, check=False
    )
    if attempt.returncode != 0:
        _run(PIP, "download", "--quiet", "--dest", wheelhouse, requirement)
        # Only dependencies are kept: the client's own wheel is built afresh each time.
        for own in wheelhouse.glob("splitlink_client-*"):
            own.unlink()
        _run(*offline, *links, requirement)


def _probe(python: Path, modules: str, cwd: Path) -> dict[str, object]:
    code = PROBE.format(modules=modules, server_modules=SERVER_MODULES)
    # -I: neither the working directory nor PYTHONPATH can lend the checkout's modules.
    result = subprocess.run(
        [str(python), "-I", "-c", code], capture_output=True, text=True, cwd=cwd, check=False
    )
    assert result.returncode == 0, result.stderr
    probed: dict[str, object] = json.loads(result.stdout)
    return probed


def test_the_client_wheel_installs_alone_and_loads_no_server_module(
    tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    assert pytestconfig.cache is not None
    wheelhouse = pytestconfig.cache.mkdir("client-wheelhouse")
    # The wheel is built from the source tree; its build files go to tmp_path, not beside it.
    build_config = tmp_path / "build.cfg"
    build_config.write_text(
        f"[build]\nbuild_base = {tmp_path / 'build'}\n[egg_info]\negg_base = {tmp_path}\n"
    )
    dist = tmp_path / "dist"
    _run(
        PIP,
        "wheel",
        "--quiet",
        "--no-deps",
        "--wheel-dir",
        dist,
        ROOT / "clients" / "python",
        env={**os.environ, "DIST_EXTRA_CONFIG": str(build_config)},
    )
    (wheel,) = dist.glob("splitlink_client-*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"

    _install(python, str(wheel), wheelhouse)
    base = _probe(python, "splitlink_client, splitlink_client.cli", tmp_path)
    assert "--server" in _run(venv / "bin" / "splitlink-client", "--help")

    _install(python, f"{wheel}[testing]", wheelhouse)
    testing = _probe(
        python,
        "splitlink_client, splitlink_client.testing, splitlink_client.smtp_sink",
        tmp_path,
    )
    for probed in (base, testing):
        assert str(probed["client_file"]).startswith(str(venv))
        assert str(probed["protocol_file"]).startswith(str(venv))
        assert probed["importable"] == []
        loaded = set(probed["loaded"])  # type: ignore[call-overload]
        assert loaded.isdisjoint(SERVER_MODULES), loaded & set(SERVER_MODULES)
    # Without the extra, the plain client needs no test framework.
    assert "pytest" not in set(base["loaded"])  # type: ignore[call-overload]
    assert wheel.name.startswith("splitlink_client-0.1.0-")
