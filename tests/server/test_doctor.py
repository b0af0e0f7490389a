"""`splitlink doctor` (docs/design.md §4): every check says OK or what to fix, and the command exits
non-zero when one fails. It sends no mail."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support.backends import database_url_for, execute
from support.processes import BIN, ROOT
from support.smtp_sink import smtp_sink

from server import doctor
from server.settings import Settings
from server.storage.migrate import migrate


def run_doctor(
    database_url: str, data_dir: Path, **settings: str
) -> tuple[int, dict[str, tuple[str, str]]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "SPLITLINK_DATABASE_URL": database_url,
        "SPLITLINK_DATA_DIR": str(data_dir),
        **{f"SPLITLINK_{name.upper()}": value for name, value in settings.items()},
    }
    result = subprocess.run(
        [str(BIN / "splitlink"), "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    checks = {}
    for line in result.stdout.splitlines():
        status, check, detail = line[:6].strip(), line[6:20].strip(), line[20:]
        checks[check] = (status, detail)
    return result.returncode, checks


def migrated(database_url: str, data_dir: Path, **settings: str) -> None:
    env = {
        **os.environ,
        "SPLITLINK_DATABASE_URL": database_url,
        "SPLITLINK_DATA_DIR": str(data_dir),
        **{f"SPLITLINK_{name.upper()}": value for name, value in settings.items()},
    }
    subprocess.run([str(BIN / "splitlink"), "migrate"], env=env, check=True, capture_output=True)


def test_every_check_passes_on_a_migrated_database(tmp_path: Path, backend: str) -> None:
    with database_url_for(backend, tmp_path) as url:
        migrated(url, tmp_path)
        code, checks = run_doctor(url, tmp_path)
    assert code == 0, checks
    for check in ("configuration", "database", "schema", "signing keys", "clock"):
        assert checks[check][0] == "OK", checks
    assert checks["schema"][1] == "at revision 0006"
    assert checks["smtp"][0] == "SKIP"
    assert checks["root secret"][0] == "WARN"


def test_a_schema_behind_and_a_wrong_secret_fail_and_say_what_to_do(
    tmp_path: Path, backend: str
) -> None:
    with database_url_for(backend, tmp_path) as url:
        migrated(url, tmp_path)
        code, checks = run_doctor(url, tmp_path, secret_key="another-secret-" * 4)
        assert code == 1
        assert checks["signing keys"][0] == "FAIL"
        assert "the root secret must be the one" in checks["signing keys"][1]
    with database_url_for(backend, tmp_path / "older") as url:
        (tmp_path / "older").mkdir(exist_ok=True)
        if backend == "sqlite":
            migrate(url, revision="0005")
        else:
            # The template is at the head: the revision is set back to pose as an older one.
            execute(url, "UPDATE alembic_version SET version_num = '0005'")
        code, checks = run_doctor(url, tmp_path)
    assert code == 1
    assert checks["schema"] == (
        "FAIL",
        "at revision 0005, this server needs 0006: run `splitlink migrate` "
        "(a newer revision needs a newer server)",
    )
    assert checks["signing keys"][0] == "SKIP"


def test_a_missing_database_file_is_not_created(tmp_path: Path) -> None:
    code, checks = run_doctor(f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}", tmp_path)
    assert code == 1
    assert checks["database"][0] == "FAIL" and "run `splitlink migrate`" in checks["database"][1]
    assert not (tmp_path / "nowhere").exists()


def test_the_smtp_server_is_greeted_over_tls_and_sent_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'splitlink.db'}"
    migrated(url, tmp_path)
    with smtp_sink(tmp_path / "smtp", tls="starttls") as sink:
        settings = {k: str(v) for k, v in sink.settings().items()}
        code, checks = run_doctor(url, tmp_path, **settings)
        assert sink.deliveries == []
        assert sink.recorder.rcpt_seen == [] and sink.recorder.logins
    assert code == 0, checks
    assert checks["smtp"][0] == "OK"
    assert checks["smtp"][1].endswith("connected, STARTTLS, EHLO, AUTH")


@pytest.mark.parametrize("trouble", ["down", "no starttls", "wrong password"])
def test_an_unusable_smtp_server_fails_the_check(tmp_path: Path, trouble: str) -> None:
    url = f"sqlite:///{tmp_path / 'splitlink.db'}"
    migrated(url, tmp_path)
    tls: Any = "none" if trouble == "no starttls" else "starttls"
    with smtp_sink(tmp_path / "smtp", tls=tls, running=trouble != "down") as sink:
        settings = {k: str(v) for k, v in sink.settings().items()}
        if trouble == "no starttls":
            settings["smtp_url"] = sink.url(scheme="smtp", credentials=False)
        if trouble == "wrong password":
            settings["smtp_url"] = settings["smtp_url"].replace("rd%25@", "rd%26@")
        code, checks = run_doctor(url, tmp_path, **settings)
    assert code == 1
    assert checks["smtp"][0] == "FAIL", checks
    assert {"down": "connect", "no starttls": "STARTTLS", "wrong password": "AUTH"}[trouble] in (
        checks["smtp"][1]
    )


@pytest.mark.anyio
async def test_a_clock_apart_from_the_database_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'splitlink.db'}"
    migrated(url, tmp_path)

    class Ahead:
        @staticmethod
        def time() -> float:
            return time.time() + 60

    monkeypatch.setattr(doctor, "time", Ahead)
    findings = await doctor.examine(Settings(database_url=url, data_dir=tmp_path))
    (clock,) = (finding for finding in findings if finding.check == "clock")
    assert clock.status == "warn" and "-60" in clock.detail
