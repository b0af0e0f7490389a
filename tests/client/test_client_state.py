"""The device state file: 0600, atomic replacement, refusal of loose modes, faithful reload."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest
from client_fake_server import FakeServer, sign_in
from splitlink_client import (
    DeviceState,
    PendingLogin,
    SplitlinkClient,
    StateFileError,
    TokenSet,
    load_state,
    save_state,
)

from protocol.keys import Algorithm, SigningKey


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _full_state() -> DeviceState:
    return DeviceState(
        key=SigningKey.generate("ES256", random_bytes=os.urandom),
        pending=PendingLogin(
            issuer="https://splitlink.test",
            attempt_id="A" * 22,
            device_half="D" * 43,
            email="alice@example.com",
            expires_at=1_700_000_900,
        ),
        tokens=TokenSet(
            issuer="https://splitlink.test",
            access_token="access-secret",
            refresh_token="refresh-secret",
            expires_at=1_700_000_300,
        ),
    )


def test_state_file_is_created_with_mode_0600_in_a_0700_directory(state_path: Path) -> None:
    save_state(state_path, _full_state())
    assert _mode(state_path) == 0o600
    assert _mode(state_path.parent) == 0o700


def test_state_file_keeps_mode_0600_under_a_permissive_umask(state_path: Path) -> None:
    old = os.umask(0)
    try:
        save_state(state_path, _full_state())
        save_state(state_path, DeviceState())
    finally:
        os.umask(old)
    assert _mode(state_path) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_state_file_readable_by_group_or_other_is_refused(state_path: Path, mode: int) -> None:
    save_state(state_path, _full_state())
    state_path.chmod(mode)
    with pytest.raises(StateFileError, match=f"mode {mode:04o}.*chmod 600"):
        load_state(state_path)


def test_client_refuses_insecure_state_file_before_any_request(
    client: SplitlinkClient, server: FakeServer, state_path: Path
) -> None:
    save_state(state_path, _full_state())
    state_path.chmod(0o644)
    with pytest.raises(StateFileError):
        client.start_login("alice@example.com")
    with pytest.raises(StateFileError):
        client.complete_login("https://splitlink.test/l#attempt_id=x&email_half=y")
    with pytest.raises(StateFileError):
        client.me()
    assert server.seen == []


def test_state_save_writes_through_a_0600_temp_file_and_rename(
    state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_state(state_path, DeviceState())
    renamed: list[tuple[str, int]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        renamed.append((src, stat.S_IMODE(os.stat(src).st_mode)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    save_state(state_path, _full_state())
    [(temp_name, temp_mode)] = renamed
    assert Path(temp_name).parent == state_path.parent
    assert temp_mode == 0o600
    assert sorted(p.name for p in state_path.parent.iterdir()) == ["device.json"]


def test_failed_state_save_leaves_old_file_intact_and_no_temp_file(
    state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_state(state_path, DeviceState())
    before = state_path.read_bytes()

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_state(state_path, _full_state())
    assert state_path.read_bytes() == before
    assert sorted(p.name for p in state_path.parent.iterdir()) == ["device.json"]


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_state_round_trips_key_pending_login_and_tokens(state_path: Path, alg: Algorithm) -> None:
    state = _full_state()
    state.key = SigningKey.generate(alg, random_bytes=os.urandom)
    save_state(state_path, state)
    loaded = load_state(state_path)
    assert loaded.key is not None and state.key is not None
    assert loaded.key.private_jwk() == state.key.private_jwk()
    assert loaded.pending == state.pending
    assert loaded.tokens == state.tokens


def test_missing_state_file_is_an_empty_state(state_path: Path) -> None:
    assert load_state(state_path) == DeviceState()
    assert not state_path.exists()


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b'{"version": 99}',
        b'{"version": 1, "private_jwk": {"kty": "OKP", "crv": "Ed25519", "x": "AA", "d": "AA"}}',
        b'{"version": 1, "tokens": {"issuer": "https://x", "access_token": 1}}',
    ],
)
def test_corrupt_state_file_is_refused_with_a_clear_error(state_path: Path, content: bytes) -> None:
    state_path.parent.mkdir(parents=True)
    state_path.write_bytes(content)
    state_path.chmod(0o600)
    with pytest.raises(StateFileError, match=r"state file|key|must"):
        load_state(state_path)


def test_private_key_survives_reload_across_client_instances(
    client: SplitlinkClient, server: FakeServer, state_path: Path, http: httpx.Client
) -> None:
    client.start_login("alice@example.com")
    first = load_state(state_path).key
    assert first is not None
    # A new process: a new client reading the same file completes the login with the same key.
    reloaded = SplitlinkClient(client.server_url, state_path, http=http, clock=server.clock)
    reloaded.complete_login(server.outbox["alice@example.com"])
    key = load_state(state_path).key
    assert key is not None
    assert key.private_jwk() == first.private_jwk()
    assert {p.jkt for p in server.proofs} == {first.public.thumbprint}


def test_repr_of_state_shows_no_secrets(
    client: SplitlinkClient, server: FakeServer, state_path: Path
) -> None:
    client.start_login("alice@example.com")
    text = repr(load_state(state_path)) + repr(client)
    sign_in(client, server, "bob@example.com")
    text += repr(load_state(state_path))
    key = load_state(state_path).key
    assert key is not None
    for secret in [*server.issued_secrets(), key.private_jwk()["d"]]:
        assert secret not in text
