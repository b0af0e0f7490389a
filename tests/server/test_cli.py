"""The `splitlink` command: migrate, keys list and keys rotate (SPEC.md §6.3; docs/design.md §4)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from support.backends import query

from server.cli import main


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("SPLITLINK_DATABASE_URL", url)
    monkeypatch.setenv("SPLITLINK_DATA_DIR", str(tmp_path))
    return url


def test_migrate_creates_the_schema_and_one_signing_key(environment: str) -> None:
    result = CliRunner().invoke(main, ["migrate"])
    assert result.exit_code == 0, result.output
    assert "schema at revision" in result.output
    assert query(environment, "SELECT COUNT(*) FROM signing_keys") == [(1,)]
    again = CliRunner().invoke(main, ["migrate"])
    assert again.exit_code == 0
    assert query(environment, "SELECT COUNT(*) FROM signing_keys") == [(1,)]


def test_keys_rotate_adds_a_signer_and_schedules_the_old_key_to_retire(environment: str) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["migrate"]).exit_code == 0
    ((old_kid,),) = query(environment, "SELECT kid FROM signing_keys")
    rotated = runner.invoke(main, ["keys", "rotate"])
    assert rotated.exit_code == 0, rotated.output
    assert "previous keys retire in 660 s" in rotated.output
    listing = runner.invoke(main, ["keys", "list"])
    assert listing.exit_code == 0, listing.output
    lines = {line.split()[0]: line for line in listing.output.splitlines()[1:]}
    assert "verifying until" in lines[old_kid]
    (new_kid,) = set(lines) - {old_kid}
    assert lines[new_kid].rstrip().endswith("signing")


def test_commands_refuse_a_misspelt_setting(
    environment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPLITLINK_SIGNUP_POLCY", "closed")
    result = CliRunner().invoke(main, ["migrate"])
    assert result.exit_code != 0
    assert "SPLITLINK_SIGNUP_POLCY" in result.output


def test_the_data_dir_alone_moves_secret_and_database_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("SPLITLINK_DATABASE_URL", raising=False)
    monkeypatch.setenv("SPLITLINK_DATA_DIR", str(data_dir))
    result = CliRunner().invoke(main, ["migrate"])
    assert result.exit_code == 0, result.output
    assert query(f"sqlite:///{data_dir / 'splitlink.db'}", "SELECT COUNT(*) FROM signing_keys") == [
        (1,)
    ]
    assert (data_dir / "secret.key").is_file()
    assert list(elsewhere.iterdir()) == []


def test_an_explicit_database_url_wins_over_the_data_dir(environment: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["migrate"])
    assert result.exit_code == 0, result.output
    assert query(environment, "SELECT COUNT(*) FROM signing_keys") == [(1,)]
    assert not (tmp_path / "splitlink.db").exists()
