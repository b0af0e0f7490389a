"""`SPLITLINK_ENV=production` refuses settings fit only for a developer's machine, naming every
problem at once, and starts (with a warning for a SQLite database) once they are fixed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support.processes import BIN, ROOT, running_server_process

pytestmark = pytest.mark.slow

SECRET = "q8Xc2m1T0Z9yWJ3l3pD3Cwz7vYV4Q0uWmQ4zj1U9b3s"  # 32 bytes, base64url


def _serve(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SPLITLINK_")}
    env |= {
        "PYTHONPATH": str(ROOT),
        "SPLITLINK_DATA_DIR": str(tmp_path / "var"),
        "SPLITLINK_ENV": "production",
        **{f"SPLITLINK_{name.upper()}": value for name, value in settings.items()},
    }
    return subprocess.run(
        [str(BIN / "splitlink"), "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_development_settings_naming_each_problem_on_a_line(
    tmp_path: Path,
) -> None:
    result = _serve(tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    problems = [line for line in lines if line.startswith("  - ")]
    assert len(problems) == 3, result.stderr
    assert any("SPLITLINK_PUBLIC_URL" in p and "https://" in p for p in problems)
    assert any("SPLITLINK_SECRET_KEY is unset" in p and "32" in p for p in problems)
    assert any("SPLITLINK_SMTP_URL is unset" in p for p in problems)
    assert not (tmp_path / "var" / "secret.key").exists()


def test_production_refuses_a_short_secret_and_mail_in_clear_to_another_host(
    tmp_path: Path,
) -> None:
    result = _serve(
        tmp_path,
        public_url="https://auth.example.com",
        secret_key="too-short",
        smtp_url="smtp+insecure://relay.example.com:25",
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert len(problems) == 2, result.stderr
    assert any("holds 9 bytes" in p and "at least 32" in p for p in problems)
    assert any("without TLS to relay.example.com" in p for p in problems)


def test_a_plain_relay_on_this_host_is_allowed_in_production(tmp_path: Path) -> None:
    result = _serve(
        tmp_path,
        public_url="https://auth.example.com",
        secret_key=SECRET,
        smtp_url="smtp+insecure://127.0.0.1:25",
        # Not migrated: the refusal that remains is the schema's, after the production checks.
        database_url=f"sqlite:///{tmp_path / 'none.db'}",
    )
    assert "refusing to start in production" not in result.stderr
    assert "splitlink migrate" in result.stderr


def test_production_starts_when_fixed_logs_json_and_warns_that_sqlite_serves_one_host(
    tmp_path: Path,
) -> None:
    with running_server_process(
        tmp_path,
        workers=1,
        public_url="https://auth.example.com",
        extra_env={
            "SPLITLINK_ENV": "production",
            "SPLITLINK_SECRET_KEY": SECRET,
            "SPLITLINK_SMTP_URL": "smtps://user:pass@127.0.0.1:1",
        },
    ) as server:
        log = server.log()
    records = [json.loads(line) for line in log.splitlines()]
    warnings = [r for r in records if r["level"] == "WARNING"]
    assert any("SQLite" in r["message"] and "one host" in r["message"] for r in warnings)
    assert "pass" not in " ".join(r["message"] for r in records if "SMTP" in r["message"])


def _production_env(tmp_path: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SPLITLINK_")}
    return env | {
        "PYTHONPATH": str(ROOT),
        "SPLITLINK_DATA_DIR": str(tmp_path / "var"),
        "SPLITLINK_ENV": "production",
    }


def test_the_uvicorn_factory_refuses_what_serve_refuses(tmp_path: Path) -> None:
    """`uvicorn --factory server.app:create_app_from_environment` is an entry point too."""
    result = subprocess.run(
        [str(BIN / "python"), "-c", "from server.app import create_app_from_environment as f; f()"],
        env=_production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "refusing to start in production" in result.stderr
    assert "SPLITLINK_PUBLIC_URL" in result.stderr
    assert not (tmp_path / "var" / "secret.key").exists()


def test_migrate_in_production_never_creates_a_development_secret(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "splitlink"), "migrate"],
        env=_production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "never creates a development secret" in result.stderr
    assert not (tmp_path / "var" / "secret.key").exists()
