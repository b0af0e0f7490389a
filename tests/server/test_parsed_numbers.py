"""Every number the server parses is bounded, and out of range it earns the documented 4xx,
never a 500 (SPEC.md §3.2, §3.5, §4.1, §9)."""

from __future__ import annotations

import json
import logging

import pytest
from support.device import Device
from support.harness import Harness

from protocol.encoding import b64url_decode, b64url_encode

pytestmark = pytest.mark.anyio

START = "/v1/login/start"
TOKEN = "/oauth2/token"

OUT_OF_RANGE = [
    pytest.param("1" + "0" * 400, id="ten-to-the-400"),
    pytest.param("-1" + "0" * 400, id="minus-ten-to-the-400"),
    pytest.param("1e309", id="float-overflow"),
    pytest.param("-10e308", id="negative-float-overflow"),
    pytest.param("1e308", id="finite-float-beyond-the-range"),
    pytest.param("9007199254740992", id="two-to-the-53"),
]


@pytest.fixture(autouse=True)
def _errors_logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.ERROR)
    return caplog


def _assert_nothing_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


@pytest.mark.parametrize("literal", OUT_OF_RANGE)
async def test_a_proof_iat_out_of_range_is_an_invalid_proof_at_start(
    server: Harness, literal: str, caplog: pytest.LogCaptureFixture
) -> None:
    device = server.device()
    proof = device.proof("POST", START, literals={"iat": literal})
    response = await server.start(device, "a@example.com", proof=proof)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_dpop_proof")
    assert server.query("SELECT COUNT(*) FROM login_attempts") == [(0,)]
    _assert_nothing_logged(caplog)


@pytest.mark.parametrize("literal", OUT_OF_RANGE)
async def test_a_proof_iat_out_of_range_is_an_invalid_proof_at_the_token_endpoint(
    server: Harness, literal: str, caplog: pytest.LogCaptureFixture
) -> None:
    device = server.device()
    tokens = await server.login(device, "a@example.com")
    response = await server.client.post(
        TOKEN,
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers={"DPoP": device.proof("POST", TOKEN, literals={"iat": literal})},
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_dpop_proof")
    _assert_nothing_logged(caplog)


@pytest.mark.parametrize("literal", OUT_OF_RANGE)
async def test_a_proof_iat_out_of_range_is_an_invalid_proof_under_v1(
    server: Harness, literal: str, caplog: pytest.LogCaptureFixture
) -> None:
    device = server.device()
    token = (await server.login(device, "a@example.com"))["access_token"]
    response = await server.client.get(
        "/v1/me",
        headers={
            "Authorization": f"DPoP {token}",
            "DPoP": device.proof("GET", "/v1/me", access_token=token, literals={"iat": literal}),
        },
    )
    assert response.status_code == 401
    assert 'error="invalid_dpop_proof"' in response.headers["www-authenticate"]
    assert response.json()["error"] == "invalid_dpop_proof"
    _assert_nothing_logged(caplog)


def _resigned(server: Harness, token: str, claim: str, literal: str) -> str:
    """The token with one claim set to a raw JSON literal, signed again with the server's key."""
    header_b64, payload_b64, _ = token.split(".")
    claims = json.loads(b64url_decode(payload_b64))
    claims[claim] = "LITERAL"
    payload = json.dumps(claims, separators=(",", ":")).replace('"LITERAL"', literal)
    signing_input = f"{header_b64}.{b64url_encode(payload.encode())}"
    signer = server.app.state.services.keys.key_set.current.key
    return signing_input + "." + b64url_encode(signer.sign(signing_input.encode("ascii")))


@pytest.mark.parametrize("claim", ["exp", "iat", "auth_time"])
@pytest.mark.parametrize("literal", OUT_OF_RANGE)
async def test_an_access_token_time_out_of_range_is_an_invalid_token(
    server: Harness, claim: str, literal: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Only the server's key signs tokens. Should it sign a time beyond the range, that must
    # neither make a token that never expires nor answer 500.
    device = server.device()
    issued = (await server.login(device, "a@example.com"))["access_token"]
    now = server.clock.now()
    in_range = str(now + 300 if claim == "exp" else now)
    assert (await server.me(device, _resigned(server, issued, claim, in_range))).status_code == 200
    response = await server.me(device, _resigned(server, issued, claim, literal))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    _assert_nothing_logged(caplog)


@pytest.mark.parametrize("literal", OUT_OF_RANGE)
async def test_a_number_out_of_range_in_a_proof_header_or_an_unknown_claim_is_an_invalid_proof(
    server: Harness, literal: str, caplog: pytest.LogCaptureFixture
) -> None:
    device = server.device()
    for proof in (
        device.proof("POST", START, literals={"exp": literal}),
        _with_header_literal(device.proof("POST", START), "x5t_count", literal, device),
    ):
        response = await server.start(device, "a@example.com", proof=proof)
        assert (response.status_code, response.json()["error"]) == (400, "invalid_dpop_proof")
    _assert_nothing_logged(caplog)


def _with_header_literal(proof: str, name: str, literal: str, device: Device) -> str:
    """The proof with one more header member written as raw JSON text, signed again."""
    header_b64, payload_b64, _ = proof.split(".")
    header = b64url_decode(header_b64).decode()[:-1] + f',"{name}":{literal}' + "}"
    signing_input = b64url_encode(header.encode()) + "." + payload_b64
    return signing_input + "." + b64url_encode(device.key.sign(signing_input.encode("ascii")))


@pytest.mark.parametrize("literal", OUT_OF_RANGE)
@pytest.mark.parametrize("member", ["device_name", "unknown"])
async def test_a_number_out_of_range_in_a_json_body_is_an_invalid_request(
    server: Harness, literal: str, member: str, caplog: pytest.LogCaptureFixture
) -> None:
    device = server.device()
    response = await server.client.post(
        START,
        content=f'{{"email":"a@example.com","{member}":{literal}}}'.encode(),
        headers={"Content-Type": "application/json", "DPoP": device.proof("POST", START)},
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")
    assert server.query("SELECT COUNT(*) FROM login_attempts") == [(0,)]
    _assert_nothing_logged(caplog)


@pytest.mark.parametrize(
    "declared",
    [
        pytest.param(b"9" * 5000, id="beyond-the-int-conversion-limit"),
        pytest.param(b"1" + b"0" * 30, id="thirty-one-digits"),
    ],
)
async def test_a_huge_content_length_is_request_too_large(
    server: Harness, declared: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    device = server.device()
    response = await server.client.post(
        START,
        content=b'{"email":"a@example.com"}',
        headers={
            "Content-Type": "application/json",
            "Content-Length": declared.decode(),
            "DPoP": device.proof("POST", START),
        },
    )
    assert (response.status_code, response.json()["error"]) == (413, "request_too_large")
    _assert_nothing_logged(caplog)


async def test_a_content_length_of_other_digits_is_not_a_length(
    server: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # Latin-1 superscript two: str.isdigit() takes it, int() does not. The body is read and
    # bounded as it arrives instead.
    device = server.device()
    response = await server.client.post(
        START,
        content=b'{"email":"a@example.com"}',
        headers=[
            (b"Content-Type", b"application/json"),
            (b"Content-Length", b"\xb2"),
            (b"DPoP", device.proof("POST", START).encode()),
        ],
    )
    assert response.status_code == 202, response.text
    _assert_nothing_logged(caplog)
