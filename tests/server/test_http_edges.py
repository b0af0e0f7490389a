"""Bad input gets a stable error code, never a 500 (SPEC.md §9; threats.md K2)."""

from __future__ import annotations

import pytest
from support.harness import Harness

pytestmark = pytest.mark.anyio

GRANT = "urn:splitlink:params:oauth:grant-type:magic-link"


async def _start_raw(server: Harness, content: bytes, content_type: str) -> tuple[int, str]:
    device = server.device()
    response = await server.client.post(
        "/v1/login/start",
        content=content,
        headers={"Content-Type": content_type, "DPoP": device.proof("POST", "/v1/login/start")},
    )
    return response.status_code, response.json()["error"]


@pytest.mark.parametrize(
    ("content", "content_type", "expected"),
    [
        pytest.param(b"{", "application/json", (400, "invalid_request"), id="truncated-json"),
        pytest.param(b"[]", "application/json", (400, "invalid_request"), id="json-array"),
        pytest.param(
            b'{"email":"a@example.com","email":"b@example.com"}',
            "application/json",
            (400, "invalid_request"),
            id="duplicate-member",
        ),
        pytest.param(b"\xff\xfe", "application/json", (400, "invalid_request"), id="not-utf8"),
        pytest.param(b"email=a", "text/plain", (415, "unsupported_media_type"), id="wrong-type"),
        pytest.param(
            b'{"email":"' + b"a" * 20000 + b'"}',
            "application/json",
            (413, "request_too_large"),
            id="too-large",
        ),
    ],
)
async def test_start_refuses_malformed_bodies(
    server: Harness, content: bytes, content_type: str, expected: tuple[int, str]
) -> None:
    assert await _start_raw(server, content, content_type) == expected


async def test_unknown_grant_type_is_unsupported(server: Harness) -> None:
    response = await server.client.post("/oauth2/token", data={"grant_type": "password"})
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


async def test_missing_grant_type_is_invalid_request(server: Harness) -> None:
    response = await server.client.post("/oauth2/token", data={"attempt_id": "x"})
    assert response.json()["error"] == "invalid_request"


async def test_repeated_form_parameter_is_invalid_request(server: Harness) -> None:
    response = await server.client.post(
        "/oauth2/token",
        content=f"grant_type={GRANT}&grant_type={GRANT}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_token_endpoint_wants_a_form(server: Harness) -> None:
    response = await server.client.post("/oauth2/token", json={"grant_type": GRANT})
    assert response.status_code == 415


async def test_unknown_path_and_method_get_json_errors(server: Harness) -> None:
    missing = await server.client.get("/nope")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    wrong = await server.client.get("/oauth2/token")
    assert (wrong.status_code, wrong.json()["error"]) == (405, "method_not_allowed")


async def test_every_answer_is_uncacheable_and_nosniff(server: Harness) -> None:
    response = await server.client.get("/nope")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_an_unknown_splitlink_variable_stops_the_server() -> None:
    """A misspelt setting must not leave a default silently in force (SPEC.md §10)."""
    from server.settings import settings_from_environment

    with pytest.raises(ValueError, match="SPLITLINK_RATE_LIMT_START_PER_IP"):
        settings_from_environment({"SPLITLINK_RATE_LIMT_START_PER_IP": "1000"})
    settings_from_environment({"SPLITLINK_SERVER": "http://x", "SPLITLINK_APP_NAME": "x"})


async def test_an_oversized_body_comes_before_the_proof_at_the_token_endpoint(
    server: Harness,
) -> None:
    # SPEC.md §3.6, §6.2 step 1: the form is read, and its size checked, before the proof.
    big = {"grant_type": GRANT, "padding": "x" * server.settings.max_body_bytes}
    response = await server.client.post("/oauth2/token", data=big, headers={"DPoP": "not.a.proof"})
    assert (response.status_code, response.json()["error"]) == (413, "request_too_large")


async def test_the_proof_comes_before_an_oversized_body_at_login_start(server: Harness) -> None:
    # SPEC.md §3.6, §6.1 steps 1 and 2: the proof is checked before the body is read.
    big = b'{"email": "a@example.com", "pad": "' + b"x" * server.settings.max_body_bytes + b'"}'
    response = await server.client.post(
        "/v1/login/start",
        content=big,
        headers={"Content-Type": "application/json", "DPoP": "not.a.proof"},
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_dpop_proof")
    valid = await server.client.post(
        "/v1/login/start",
        content=big,
        headers={
            "Content-Type": "application/json",
            "DPoP": server.device().proof("POST", "/v1/login/start"),
        },
    )
    assert (valid.status_code, valid.json()["error"]) == (413, "request_too_large")


async def test_the_caller_comes_before_an_oversized_body_at_introspection(
    server: Harness,
) -> None:
    # SPEC.md §6.8 step 1: the caller is checked before the body is read.
    big = {"token": "x" * server.settings.max_body_bytes}
    response = await server.client.post("/oauth2/introspect", data=big)
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
    revoked = await server.client.post("/oauth2/revoke", data=big)
    assert (revoked.status_code, revoked.json()["error"]) == (413, "request_too_large")


async def test_a_body_sent_to_a_bodiless_v1_endpoint_is_never_read(server: Harness) -> None:
    # SPEC.md §3.6: only endpoints that take a body read one, so only they answer 413.
    device = server.device()
    tokens = await server.login(device, "a@example.com")
    access_token = tokens["access_token"]
    response = await server.client.request(
        "GET",
        "/v1/me",
        content=b"x" * (server.settings.max_body_bytes + 1),
        headers={
            "Authorization": f"DPoP {access_token}",
            "DPoP": device.proof("GET", "/v1/me", access_token=access_token),
        },
    )
    assert response.status_code == 200, response.text
