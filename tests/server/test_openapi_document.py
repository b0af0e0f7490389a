"""The committed OpenAPI document: valid, served as committed, and true to the running server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.routing import Route
from support.harness import Harness

from protocol.errors import ErrorCode
from server.app import create_app

DOCUMENT_PATH = Path(__file__).resolve().parents[2] / "server" / "static" / "openapi.json"
DOCUMENT: dict[str, Any] = json.loads(DOCUMENT_PATH.read_text(encoding="utf-8"))
_BASE = "urn:splitlink:openapi"
_REGISTRY: Registry[Any] = Registry().with_resource(
    _BASE, Resource.from_contents(DOCUMENT, default_specification=DRAFT202012)
)


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def assert_conforms(response: httpx.Response, path: str) -> None:
    """The status is documented for the operation, and the body matches the documented schema."""
    method = response.request.method.lower()
    operation = DOCUMENT["paths"][path][method]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method.upper()} {path}: {status} not documented"
    documented = operation["responses"][status]
    content = documented.get("content")
    if content is None:
        assert response.content == b"", f"{method.upper()} {path}: undocumented body"
        return
    media_type = response.headers["content-type"].split(";")[0].strip()
    assert media_type in content, f"{method.upper()} {path}: {media_type} not documented"
    if media_type != "application/json":
        return
    pointer = _pointer("paths", path, method, "responses", status, "content", media_type, "schema")
    validator = Draft202012Validator({"$ref": f"{_BASE}#/{pointer}"}, registry=_REGISTRY)
    errors = [error.message for error in validator.iter_errors(response.json())]
    assert not errors, f"{method.upper()} {path} {status}: {errors}"


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.")
    validate(DOCUMENT)


def test_every_route_of_the_server_is_described_and_nothing_else() -> None:
    served: set[tuple[str, str]] = set()
    for route in create_app().routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            # Starlette adds HEAD beside every GET; only /l documents it as its own operation.
            if method == "HEAD" and route.path != "/l":
                continue
            served.add((route.path, method.lower()))
    described = {
        (path, method)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in {"get", "head", "post", "put", "patch", "delete", "options"}
    }
    assert described == served


def test_the_error_schema_lists_every_code_the_server_can_answer() -> None:
    codes = set(DOCUMENT["components"]["schemas"]["Error"]["properties"]["error"]["enum"])
    # unsupported_token_type exists for RFC 7009 and is never returned (SPEC.md §6.8, §9).
    assert codes == {code.value for code in ErrorCode} - {ErrorCode.UNSUPPORTED_TOKEN_TYPE.value}


def test_every_operation_under_v1_but_the_start_needs_dpop_credentials() -> None:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            protected = path.startswith("/v1/") and path != "/v1/login/start"
            assert (operation.get("security") == [{"dpop": []}]) is protected, (method, path)
            if protected:
                assert operation["responses"]["401"]


@pytest.mark.anyio
async def test_the_server_serves_the_committed_document(server: Harness) -> None:
    response = await server.client.get("/openapi.json")
    assert response.status_code == 200
    assert response.content == DOCUMENT_PATH.read_bytes()
    assert response.headers["content-type"] == "application/json"
    assert_conforms(response, "/openapi.json")


@pytest.mark.anyio
async def test_a_whole_lifecycle_answers_as_the_document_says(server: Harness) -> None:
    """Signed requests reach the success answers that a fuzzer without the key cannot."""
    client = server.client
    assert_conforms(
        await client.get("/.well-known/oauth-authorization-server"),
        "/.well-known/oauth-authorization-server",
    )
    assert_conforms(await client.get("/.well-known/jwks.json"), "/.well-known/jwks.json")
    for method in ("GET", "HEAD", "OPTIONS"):
        assert_conforms(await client.request(method, "/l"), "/l")
    assert_conforms(
        await client.get("/.well-known/assetlinks.json"), "/.well-known/assetlinks.json"
    )

    device = server.device("ES256")
    started = await server.start(device, "ada@example.com", device_name="Ada's phone")
    assert_conforms(started, "/v1/login/start")
    await server.deliver()
    email_half = server.mail.sent[-1].login_link().email_half
    wrong = await server.complete(
        device,
        attempt_id=started.json()["attempt_id"],
        device_half=started.json()["device_half"],
        email_half="A" * 43,
    )
    assert wrong.status_code == 400
    assert_conforms(wrong, "/oauth2/token")
    completed = await server.complete_started(device, started.json(), email_half)
    assert_conforms(completed, "/oauth2/token")
    again = await server.complete_started(device, started.json(), email_half)
    assert again.json()["attempt_state"] == "consumed"
    assert_conforms(again, "/oauth2/token")
    tokens = completed.json()

    def signed(method: str, path: str) -> dict[str, str]:
        return {
            "Authorization": f"DPoP {tokens['access_token']}",
            "DPoP": device.proof(method, path, access_token=tokens["access_token"]),
        }

    assert_conforms(await client.get("/v1/me", headers=signed("GET", "/v1/me")), "/v1/me")
    assert_conforms(await client.get("/v1/me"), "/v1/me")
    listed = await client.get("/v1/sessions", headers=signed("GET", "/v1/sessions"))
    assert_conforms(listed, "/v1/sessions")
    unknown = "/v1/sessions/" + "A" * 22
    assert_conforms(
        await client.delete(unknown, headers=signed("DELETE", unknown)), "/v1/sessions/{session_id}"
    )
    refreshed = await client.post(
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers={"DPoP": device.proof("POST", "/oauth2/token")},
    )
    assert_conforms(refreshed, "/oauth2/token")
    tokens = refreshed.json()
    assert_conforms(
        await client.post("/oauth2/introspect", data={"token": tokens["refresh_token"]}),
        "/oauth2/introspect",
    )
    assert_conforms(
        await client.post("/v1/logout", headers=signed("POST", "/v1/logout")), "/v1/logout"
    )
    assert_conforms(
        await client.post("/v1/logout/all", headers=signed("POST", "/v1/logout/all")),
        "/v1/logout/all",
    )
    assert_conforms(
        await client.post("/oauth2/revoke", data={"token": tokens["refresh_token"]}),
        "/oauth2/revoke",
    )
