"""Attempt lifetime, single use, lockout and the absence of an oracle (SPEC.md §6.2, §6.4;
threats.md C1, C5, C6, C7, B11)."""

from __future__ import annotations

import os

import pytest
from support.harness import Harness

from protocol.encoding import b64url_decode, b64url_encode

pytestmark = pytest.mark.anyio


def other_half() -> str:
    return b64url_encode(os.urandom(32))


async def test_each_half_holds_256_bits_and_they_differ(server: Harness) -> None:
    started, email_half = await server.start_and_read_link(server.device(), "a@example.com")
    assert len(b64url_decode(started["device_half"])) == 32
    assert len(b64url_decode(email_half)) == 32
    assert len(b64url_decode(started["attempt_id"])) == 16
    assert started["device_half"] != email_half


async def test_completion_works_one_second_before_expiry(server: Harness) -> None:
    device = server.device()
    started, email_half = await server.start_and_read_link(device, "a@example.com")
    server.clock.advance(599)
    response = await server.complete(
        device,
        attempt_id=started["attempt_id"],
        device_half=started["device_half"],
        email_half=email_half,
    )
    assert response.status_code == 200


async def test_attempt_expires_after_ten_minutes(server: Harness) -> None:
    device = server.device()
    started, email_half = await server.start_and_read_link(device, "a@example.com")
    server.clock.advance(600)
    response = await server.complete(
        device,
        attempt_id=started["attempt_id"],
        device_half=started["device_half"],
        email_half=email_half,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "expired" in response.json()["error_description"]
    assert server.query("SELECT COUNT(*) FROM sessions") == [(0,)]


async def test_attempt_is_single_use(server: Harness) -> None:
    device = server.device()
    started, email_half = await server.start_and_read_link(device, "a@example.com")
    halves = {
        "attempt_id": started["attempt_id"],
        "device_half": started["device_half"],
        "email_half": email_half,
    }
    first = await server.complete(device, **halves)
    second = await server.complete(device, **halves)
    assert first.status_code == 200
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    assert server.query("SELECT COUNT(*) FROM sessions") == [(1,)]


async def test_a_backwards_clock_step_never_un_consumes_an_attempt(server: Harness) -> None:
    """J3: a consumed attempt stays consumed, whatever the wall clock says afterwards."""
    device = server.device()
    started, email_half = await server.start_and_read_link(device, "a@example.com")
    halves = {
        "attempt_id": started["attempt_id"],
        "device_half": started["device_half"],
        "email_half": email_half,
    }
    assert (await server.complete(device, **halves)).status_code == 200
    server.clock.advance(-3600)
    again = await server.complete(device, **halves)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert "consumed" in again.json()["error_description"]
    assert server.query("SELECT COUNT(*) FROM sessions") == [(1,)]


async def test_attempt_locks_after_five_failures_even_for_the_right_halves(server: Harness) -> None:
    device = server.device()
    started, email_half = await server.start_and_read_link(device, "a@example.com")
    for _ in range(5):
        wrong = await server.complete(
            device,
            attempt_id=started["attempt_id"],
            device_half=started["device_half"],
            email_half=other_half(),
        )
        assert wrong.status_code == 400
    right = await server.complete(
        device,
        attempt_id=started["attempt_id"],
        device_half=started["device_half"],
        email_half=email_half,
    )
    assert right.status_code == 400
    assert "locked" in right.json()["error_description"]
    assert server.query("SELECT COUNT(*) FROM sessions") == [(0,)]


async def test_a_wrong_key_counts_as_a_failure_and_does_not_consume(server: Harness) -> None:
    device, thief = server.device(), server.device()
    started, email_half = await server.start_and_read_link(device, "a@example.com")
    halves = {
        "attempt_id": started["attempt_id"],
        "device_half": started["device_half"],
        "email_half": email_half,
    }
    stolen = await server.complete(thief, **halves)
    assert stolen.status_code == 400
    assert server.query("SELECT failed_count, consumed_at FROM login_attempts") == [(1, None)]
    assert (await server.complete(device, **halves)).status_code == 200


async def test_every_mismatch_gets_the_same_answer(server: Harness) -> None:
    """A wrong half, an unknown attempt, another attempt's half and a wrong key are one error."""
    device, other_device = server.device(), server.device()
    started, email_half = await server.start_and_read_link(device, "a@example.com")
    other, other_email_half = await server.start_and_read_link(other_device, "b@example.com")
    cases = {
        "wrong device half": (device, started["attempt_id"], other_half(), email_half),
        "wrong email half": (device, started["attempt_id"], started["device_half"], other_half()),
        "unknown attempt": (
            device,
            b64url_encode(os.urandom(16)),
            started["device_half"],
            email_half,
        ),
        "another attempt's half": (
            device,
            started["attempt_id"],
            started["device_half"],
            other_email_half,
        ),
        "another attempt's id": (device, other["attempt_id"], started["device_half"], email_half),
        "wrong key": (other_device, started["attempt_id"], started["device_half"], email_half),
    }
    answers = set()
    for name, (dev, attempt_id, device_half, e_half) in cases.items():
        response = await server.complete(
            dev, attempt_id=attempt_id, device_half=device_half, email_half=e_half
        )
        assert response.status_code == 400, name
        answers.add((response.status_code, response.text, response.headers.get("content-type")))
    assert len(answers) == 1


async def test_malformed_halves_are_refused_as_invalid_request(server: Harness) -> None:
    device = server.device()
    started, _ = await server.start_and_read_link(device, "a@example.com")
    response = await server.complete(
        device,
        attempt_id=started["attempt_id"],
        device_half=started["device_half"],
        email_half="not-base64url!",
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
