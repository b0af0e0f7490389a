"""What a refused completion tells its sender (SPEC.md §6.2 step 7.4, §6.4, §9): only a request
with the attempt's key and both halves learns whether the attempt is consumed, locked or
expired, in the `attempt_state` member; every other refusal is the one generic answer (C5)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from support import backends
from support.device import Device
from support.harness import Harness

from protocol.encoding import b64url_encode

pytestmark = pytest.mark.anyio

STATES = ["consumed", "locked", "expired"]


def _random_half() -> str:
    return b64url_encode(os.urandom(32))


async def _attempt_in_state(server: Harness, device: Device, state: str) -> dict[str, str]:
    """A started attempt brought to `state`; returns the right completion parameters."""
    started, email_half = await server.start_and_read_link(device, "a@example.com")
    halves = {
        "attempt_id": started["attempt_id"],
        "device_half": started["device_half"],
        "email_half": email_half,
    }
    if state == "consumed":
        assert (await server.complete(device, **halves)).status_code == 200
    elif state == "locked":
        for _ in range(server.settings.max_failed_completions):
            wrong = {**halves, "email_half": _random_half()}
            assert (await server.complete(device, **wrong)).status_code == 400
    else:
        server.clock.advance(server.settings.attempt_lifetime)
    return halves


def _answer(response: Any) -> tuple[int, str, str | None]:
    return response.status_code, response.text, response.headers.get("content-type")


async def _unknown_attempt_answer(server: Harness, device: Device) -> tuple[int, str, str | None]:
    unknown = await server.complete(
        device,
        attempt_id=b64url_encode(os.urandom(16)),
        device_half=_random_half(),
        email_half=_random_half(),
    )
    return _answer(unknown)


@pytest.mark.parametrize("state", STATES)
async def test_the_holder_of_key_and_halves_learns_why_the_attempt_is_finished(
    server: Harness, state: str
) -> None:
    device = server.device()
    halves = await _attempt_in_state(server, device, state)
    response = await server.complete(device, **halves)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": f"the login attempt is {state}; start a new login",
        "attempt_state": state,
    }
    assert server.events[-1].name == "login.failed"
    assert server.events[-1].fields["reason"] == state


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("wrong", ["device_half", "email_half", "key"])
async def test_a_finished_attempt_tells_no_one_else_its_state(
    server: Harness, state: str, wrong: str
) -> None:
    device = server.device()
    halves = await _attempt_in_state(server, device, state)
    sender = server.device() if wrong == "key" else device
    if wrong != "key":
        halves = {**halves, wrong: _random_half()}
    response = await server.complete(sender, **halves)
    assert "attempt_state" not in response.json()
    assert _answer(response) == await _unknown_attempt_answer(server, device)


async def test_a_live_attempt_refused_for_a_wrong_half_names_no_state(server: Harness) -> None:
    device = server.device()
    started, _ = await server.start_and_read_link(device, "a@example.com")
    response = await server.complete(
        device,
        attempt_id=started["attempt_id"],
        device_half=started["device_half"],
        email_half=_random_half(),
    )
    assert "attempt_state" not in response.json()
    assert _answer(response) == await _unknown_attempt_answer(server, device)


async def test_a_proven_completion_without_an_account_under_closed_signup_names_no_state(
    server: Harness,
) -> None:
    # The attempt stays live (SPEC.md §6.2 step 7.5), so there is no finished state to name.
    # A closed-sign-up attempt's email half is never mailed: the attempt is made one here.
    device = server.device()
    started, email_half = await server.start_and_read_link(device, "nobody@example.com")
    backends.execute(
        server.database_url,
        "UPDATE login_attempts SET signup_allowed = 0 WHERE id = ?",
        started["attempt_id"],
    )
    response = await server.complete_started(device, started, email_half)
    assert "attempt_state" not in response.json()
    assert _answer(response) == await _unknown_attempt_answer(server, device)
    assert next(e.fields["reason"] for e in server.events if e.name == "login.failed") == (
        "no_account"
    )
