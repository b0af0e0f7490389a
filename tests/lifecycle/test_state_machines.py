"""Stateful property tests: the attempt state machine and the session's refresh-token family,
driven by Hypothesis against a model, on SQLite and on PostgreSQL, with an injected clock.

Each rule sends real requests through the application and compares every answer with what the
model says SPEC.md §6.2, §6.4, §6.5 to §6.8 require; the invariant checker then finds no
consumed attempt without exactly one session and no refresh family with two live tokens.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from support.backends import BACKENDS
from support.device import Device
from support.harness import Harness, running_server
from support.invariants import violations

T = TypeVar("T")

# Every request comes from one client address: the limits are proven elsewhere.
_GENEROUS_LIMITS = {
    "rate_limit_start_per_email": 100_000,
    "rate_limit_start_per_ip": 100_000,
    "rate_limit_complete_per_ip": 100_000,
}
_MACHINE_SETTINGS = settings(
    max_examples=12,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# Steps around each boundary the model knows: a minute of last-use resolution, the refresh
# grace period, the attempt and access-token lifetimes, the idle timeout.
_STEPS = st.sampled_from([1, 29, 31, 59, 61, 300, 599, 601, 3_600, 6 * 86_400, 8 * 86_400])


class _Driver:
    """A fresh server for each example, so that Hypothesis can replay and shrink a failure."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.loop = asyncio.new_event_loop()
        self.harness: Harness | None = None
        self._context: Any = None
        self.count = 0

    def open(self, **overrides: Any) -> Harness:
        directory = Path(tempfile.mkdtemp(dir=self.tmp_path))
        self._context = running_server(
            directory, backend=self.backend, **_GENEROUS_LIMITS, **overrides
        )
        self.harness = self.run(self._context.__aenter__())
        return self.harness

    def close(self) -> None:
        if self.harness is None:
            return
        try:
            assert violations(self.harness.database_url) == []
        finally:
            self.run(self._context.__aexit__(None, None, None))
            self.harness = None

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def address(self) -> str:
        self.count += 1
        return f"user{self.count}@example.com"

    @property
    def now(self) -> int:
        assert self.harness is not None
        return self.harness.clock.now()


@pytest.fixture(params=BACKENDS)
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Driver]:
    driver = _Driver(request.param, tmp_path)
    try:
        yield driver
    finally:
        driver.close()
        driver.loop.close()


class _OnAFreshServer(RuleBasedStateMachine):
    """What both machines share: a server per example, and a clock that moves."""

    driver: _Driver
    harness: Harness

    @rule(seconds=_STEPS)
    def time_passes(self, seconds: int) -> None:
        self.harness.clock.advance(seconds)

    def teardown(self) -> None:
        self.driver.close()


# The attempt (SPEC.md §6.2, §6.4).


@dataclass
class ModelAttempt:
    device: Device
    started: dict[str, Any]
    email_half: str
    expires_at: int
    failures: int = 0
    consumed: bool = False


class AttemptMachine(_OnAFreshServer):
    attempts = Bundle("attempts")

    def __init__(self) -> None:
        super().__init__()
        # A low lock threshold, so that short runs reach the locked state often.
        self.harness = self.driver.open(max_failed_completions=2)
        self.limit = self.harness.settings.max_failed_completions

    @rule(target=attempts, alg=st.sampled_from(["EdDSA", "ES256"]))
    def start(self, alg: str) -> ModelAttempt:
        device = self.harness.device(alg)
        started, email_half = self.driver.run(
            self.harness.start_and_read_link(device, self.driver.address())
        )
        lifetime = self.harness.settings.attempt_lifetime
        return ModelAttempt(device, started, email_half, self.driver.now + lifetime)

    def _complete(self, attempt: ModelAttempt, **overrides: Any) -> httpx.Response:
        values = {
            "attempt_id": attempt.started["attempt_id"],
            "device_half": attempt.started["device_half"],
            "email_half": attempt.email_half,
            **overrides,
        }
        device = overrides.pop("device", None) or attempt.device
        values.pop("device", None)
        return self.driver.run(self.harness.complete(device, **values))

    @rule(attempt=attempts)
    def complete_with_both_halves(self, attempt: ModelAttempt) -> None:
        response = self._complete(attempt)
        succeeds = (
            not attempt.consumed
            and attempt.failures < self.limit
            and self.driver.now < attempt.expires_at
        )
        if succeeds:
            assert response.status_code == 200, response.text
            attempt.consumed = True
        else:
            assert response.status_code == 400, response.text
            assert response.json()["error"] == "invalid_grant"
            # Told only to the holder of the key and both halves, first of these that holds.
            state = (
                "consumed"
                if attempt.consumed
                else "locked"
                if attempt.failures >= self.limit
                else "expired"
            )
            assert response.json()["attempt_state"] == state

    @rule(attempt=attempts, which=st.sampled_from(["device_half", "email_half"]))
    def complete_with_a_wrong_half(self, attempt: ModelAttempt, which: str) -> None:
        right = attempt.started["device_half"] if which == "device_half" else attempt.email_half
        # Canonical base64url of 32 bytes (§3.1), so the halves are compared, not refused.
        wrong = "A" * 43 if right != "A" * 43 else "A" * 42 + "E"
        response = self._complete(attempt, **{which: wrong})
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_grant"
        assert "attempt_state" not in response.json()
        attempt.failures += 1

    @rule(attempt=attempts)
    def complete_with_another_key(self, attempt: ModelAttempt) -> None:
        response = self._complete(attempt, device=self.harness.device())
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_grant"
        assert "attempt_state" not in response.json()
        attempt.failures += 1

    @invariant()
    def consumed_attempts_have_one_session_each(self) -> None:
        rows = self.harness.query(
            "SELECT count(*) FROM login_attempts a JOIN sessions s ON s.attempt_id = a.id"
        )
        consumed = self.harness.query(
            "SELECT count(*) FROM login_attempts WHERE consumed_at IS NOT NULL"
        )
        assert rows[0][0] == consumed[0][0]


@pytest.mark.timeout(600)
def test_attempts_follow_the_state_machine_of_the_spec(driver: _Driver) -> None:
    AttemptMachine.driver = driver
    run_state_machine_as_test(AttemptMachine, settings=_MACHINE_SETTINGS)


# The session and its refresh-token family (SPEC.md §6.5 to §6.8).


@dataclass
class ModelSession:
    device: Device
    access_token: str
    access_expires_at: int
    expires_at: int
    last_used_at: int
    tokens: list[str] = field(default_factory=list)  # oldest first; the last is current
    rotated_at: dict[str, int] = field(default_factory=dict)
    ended: bool = False

    def live(self, now: int, idle_timeout: int) -> bool:
        return not self.ended and self.expires_at > now and self.last_used_at > now - idle_timeout


class SessionMachine(_OnAFreshServer):
    sessions = Bundle("sessions")

    def __init__(self) -> None:
        super().__init__()
        self.harness = self.driver.open()
        self.settings = self.harness.settings

    @property
    def now(self) -> int:
        return self.driver.now

    def _live(self, session: ModelSession) -> bool:
        return session.live(self.now, self.settings.session_idle_timeout)

    def _access_expiry(self, session: ModelSession) -> int:
        return min(self.now + self.settings.access_token_lifetime, session.expires_at)

    def _request(self, method: str, path: str, session: ModelSession) -> httpx.Response:
        headers = {
            "Authorization": f"DPoP {session.access_token}",
            "DPoP": session.device.proof(method, path, access_token=session.access_token),
        }
        return self.driver.run(self.harness.client.request(method, path, headers=headers))

    def _authenticated(self, session: ModelSession) -> bool:
        return self.now < session.access_expires_at and self._live(session)

    @initialize(target=sessions)
    def first_login(self) -> ModelSession:
        return self.login()

    @rule(target=sessions)
    def login(self) -> ModelSession:
        device = self.harness.device()
        tokens = self.driver.run(self.harness.login(device, self.driver.address()))
        now = self.now
        session = ModelSession(
            device=device,
            access_token=tokens["access_token"],
            access_expires_at=0,
            expires_at=now + self.settings.session_absolute_lifetime,
            last_used_at=now,
            tokens=[tokens["refresh_token"]],
        )
        session.access_expires_at = self._access_expiry(session)
        return session

    @rule(session=sessions, back=st.integers(min_value=0, max_value=2))
    def refresh(self, session: ModelSession, back: int) -> None:
        index = max(0, len(session.tokens) - 1 - back)
        token = session.tokens[index]
        response = self.driver.run(
            self.harness.client.post(
                "/oauth2/token",
                data={"grant_type": "refresh_token", "refresh_token": token},
                headers={"DPoP": session.device.proof("POST", "/oauth2/token")},
            )
        )
        now = self.now
        current = index == len(session.tokens) - 1
        if not self._live(session):
            expected = "session_ended"
        elif current:
            expected = "rotated"
        elif (
            now - session.rotated_at[token] <= self.settings.refresh_grace_period
            and index + 1 == len(session.tokens) - 1
        ):
            expected = "retried"
        else:
            expected = "reused"
        if expected in {"rotated", "retried"}:
            assert response.status_code == 200, (expected, response.text)
            body = response.json()
            if expected == "rotated":
                session.rotated_at[token] = now
                session.tokens.append(body["refresh_token"])
                session.last_used_at = now
            else:
                assert body["refresh_token"] == session.tokens[index + 1]
            session.access_token = body["access_token"]
            session.access_expires_at = self._access_expiry(session)
        else:
            assert response.status_code == 400, (expected, response.text)
            assert response.json()["error"] == "invalid_grant"
            if expected == "reused":
                session.ended = True

    @rule(session=sessions)
    def read_me(self, session: ModelSession) -> None:
        expected = 200 if self._authenticated(session) else 401
        response = self._request("GET", "/v1/me", session)
        assert response.status_code == expected, response.text
        if expected == 200 and session.last_used_at <= self.now - 60:
            session.last_used_at = self.now

    @rule(session=consumes(sessions))
    def logout(self, session: ModelSession) -> None:
        expected = 204 if self._authenticated(session) else 401
        response = self._request("POST", "/v1/logout", session)
        assert response.status_code == expected, response.text
        session.ended = True

    @rule(session=sessions, back=st.integers(min_value=0, max_value=2))
    def revoke_a_refresh_token(self, session: ModelSession, back: int) -> None:
        token = session.tokens[max(0, len(session.tokens) - 1 - back)]
        response = self.driver.run(
            self.harness.client.post("/oauth2/revoke", data={"token": token})
        )
        assert response.status_code == 200
        session.ended = True

    @invariant()
    def no_family_has_two_live_tokens(self) -> None:
        rows = self.harness.query(
            "SELECT session_id FROM refresh_tokens WHERE rotated_at IS NULL AND revoked_at IS NULL "
            "GROUP BY session_id HAVING count(*) > 1"
        )
        assert rows == []


@pytest.mark.timeout(600)
def test_sessions_and_refresh_families_follow_the_spec(driver: _Driver) -> None:
    SessionMachine.driver = driver
    run_state_machine_as_test(SessionMachine, settings=_MACHINE_SETTINGS)
