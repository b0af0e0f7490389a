"""`protect()`: another Starlette API accepts splitlink access tokens, verified offline against
the issuer's JWKS, with a DPoP proof for the API's own URL (RFC 9449 §7; threats.md A11, B1,
B2, B5, B6)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from support.device import Device
from support.fakes import FakeClock
from support.harness import PUBLIC_URL, Harness, running_server

import server.dpop.jwks as jwks_module
from protocol.access_token import issue_access_token
from protocol.dpop import create_dpop_proof
from protocol.encoding import b64url_encode
from server.dpop import principal_of, protect
from server.signing_keys import rotate_signing_key
from server.storage.signing_keys import SigningKeyStore

if TYPE_CHECKING:
    from conftest import Ops, SignedIn

pytestmark = pytest.mark.anyio

API_URL = "https://api.example.test"


async def orders(request: Request) -> JSONResponse:
    principal = principal_of(request.scope)
    return JSONResponse(
        {"user_id": principal.user_id, "session_id": principal.session_id, "jkt": principal.jkt}
    )


class Api:
    def __init__(self, client: httpx.AsyncClient, jwks_fetches: list[str]) -> None:
        self.client = client
        self.jwks_fetches = jwks_fetches

    async def get(
        self,
        device: Device,
        token: str,
        *,
        path: str = "/orders",
        scheme: str = "DPoP",
        proof: str | None = None,
        with_proof: bool = True,
    ) -> httpx.Response:
        headers = {"Authorization": f"{scheme} {token}"}
        if with_proof:
            headers["DPoP"] = proof or api_proof(device, token, path=path)
        return await self.client.get(path, headers=headers)


def api_proof(device: Device, token: str, *, path: str = "/orders", method: str = "GET") -> str:
    return device.proof(method, path, access_token=token, claims={"htu": API_URL + path})


def _issuer_http(server: Harness, fetches: list[str]) -> httpx.AsyncClient:
    """An HTTP client whose requests to the issuer reach the in-process splitlink app."""

    async def count(request: httpx.Request) -> None:
        fetches.append(str(request.url))

    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=server.app),
        base_url=PUBLIC_URL,
        event_hooks={"request": [count]},
    )


@pytest.fixture
async def make_api(server: Harness) -> AsyncIterator[Callable[..., Api]]:
    opened: list[httpx.AsyncClient] = []

    def make(**options: Any) -> Api:
        fetches: list[str] = []
        issuer_http = _issuer_http(server, fetches)
        app = protect(
            Starlette(routes=[Route("/orders", orders, methods=["GET", "POST"])]),
            issuer=PUBLIC_URL,
            public_url=API_URL,
            http=issuer_http,
            clock=server.clock,
            **options,
        )
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API_URL)
        opened.extend([issuer_http, client])
        return Api(client, fetches)

    yield make
    for client in opened:
        await client.aclose()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


@pytest.fixture
async def signed_in(ops: Ops) -> SignedIn:
    return await ops.sign_in()


def _refused(response: httpx.Response, error: str | None) -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("DPoP ")
    if error is not None:
        assert f'error="{error}"' in challenge


async def test_a_real_token_with_a_proof_for_the_api_url_is_accepted(
    api: Api, ops: Ops, signed_in: SignedIn
) -> None:
    response = await api.get(signed_in.device, signed_in.access_token)
    assert response.status_code == 200, response.text
    claims = ops.claims(signed_in.access_token)
    assert response.json() == {
        "user_id": claims["sub"],
        "session_id": claims["sid"],
        "jkt": signed_in.device.jkt,
    }
    assert api.jwks_fetches == [PUBLIC_URL + "/.well-known/jwks.json"]
    # Cached: the next request fetches nothing.
    assert (await api.get(signed_in.device, signed_in.access_token)).status_code == 200
    assert len(api.jwks_fetches) == 1


async def test_no_credentials_get_a_plain_challenge(api: Api) -> None:
    response = await api.client.get("/orders")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'DPoP algs="ES256 EdDSA"'


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
async def test_b1_bearer_is_refused(api: Api, signed_in: SignedIn, scheme: str) -> None:
    _refused(
        await api.get(signed_in.device, signed_in.access_token, scheme=scheme), "invalid_token"
    )


async def test_b1_no_proof_is_refused(api: Api, signed_in: SignedIn) -> None:
    response = await api.get(signed_in.device, signed_in.access_token, with_proof=False)
    _refused(response, "invalid_dpop_proof")


@pytest.mark.parametrize(
    "htu",
    [
        pytest.param(PUBLIC_URL + "/orders", id="splitlink-url"),
        pytest.param(PUBLIC_URL + "/v1/me", id="splitlink-me"),
        pytest.param(API_URL + "/other", id="other-path"),
        pytest.param("http://api.example.test/orders", id="http-scheme"),
    ],
)
async def test_b5_a_proof_for_another_url_is_refused(
    api: Api, signed_in: SignedIn, htu: str
) -> None:
    token = signed_in.access_token
    proof = signed_in.device.proof("GET", "/orders", access_token=token, claims={"htu": htu})
    _refused(await api.get(signed_in.device, token, proof=proof), "invalid_dpop_proof")


async def test_b5_a_proof_for_another_method_is_refused(api: Api, signed_in: SignedIn) -> None:
    token = signed_in.access_token
    proof = api_proof(signed_in.device, token, method="POST")
    _refused(await api.get(signed_in.device, token, proof=proof), "invalid_dpop_proof")


async def test_b5_a_proof_accepted_by_splitlink_is_refused_by_the_api(
    server: Harness, api: Api, signed_in: SignedIn
) -> None:
    """The same proof cannot serve both: its htu names one of them."""
    token = signed_in.access_token
    proof = signed_in.device.proof("GET", "/v1/me", access_token=token)
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
    _refused(await api.client.get("/v1/me", headers=headers), "invalid_dpop_proof")
    assert (await server.client.get("/v1/me", headers=headers)).status_code == 200


async def test_b6_a_replayed_proof_is_refused(api: Api, signed_in: SignedIn) -> None:
    token = signed_in.access_token
    proof = api_proof(signed_in.device, token)
    assert (await api.get(signed_in.device, token, proof=proof)).status_code == 200
    _refused(await api.get(signed_in.device, token, proof=proof), "invalid_dpop_proof")


async def test_b2_a_proof_by_another_key_is_refused(
    server: Harness, api: Api, signed_in: SignedIn
) -> None:
    thief = server.device()
    _refused(await api.get(thief, signed_in.access_token), "invalid_token")


async def test_an_expired_token_is_refused(server: Harness, api: Api, signed_in: SignedIn) -> None:
    server.clock.advance(server.settings.access_token_lifetime - 1)
    assert (await api.get(signed_in.device, signed_in.access_token)).status_code == 200
    server.clock.advance(1)
    _refused(await api.get(signed_in.device, signed_in.access_token), "invalid_token")


@pytest.mark.parametrize(
    "other_url", [PUBLIC_URL, "https://other.example.test"], ids=["same-url", "other-url"]
)
async def test_a_token_from_another_issuer_is_refused(
    server: Harness, api: Api, signed_in: SignedIn, tmp_path: Path, other_url: str
) -> None:
    """Another splitlink server (other keys), under the same public URL or its own."""
    assert (await api.get(signed_in.device, signed_in.access_token)).status_code == 200
    (tmp_path / "other").mkdir()
    async with running_server(
        tmp_path / "other", clock=server.clock, public_url=other_url
    ) as other:
        device = Device("EdDSA", base_url=other_url, clock=server.clock.now)
        foreign = (await other.login(device, "a@example.com"))["access_token"]
    _refused(await api.get(device, foreign), "invalid_token")


async def test_a_token_for_another_audience_is_refused(
    make_api: Callable[..., Api], signed_in: SignedIn
) -> None:
    strict = make_api(audience=API_URL)
    _refused(await strict.get(signed_in.device, signed_in.access_token), "invalid_token")


async def test_a11_after_the_issuer_rotates_its_key_the_api_fetches_the_jwks_once(
    server: Harness, api: Api, ops: Ops, signed_in: SignedIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await api.get(signed_in.device, signed_in.access_token)).status_code == 200
    svc = server.app.state.services
    await rotate_signing_key(
        SigningKeyStore(svc.db),
        svc.keyring,
        clock=server.clock,
        random_bytes=os.urandom,
        retire_after=660,
    )
    await svc.keys.reload(force=True)
    refreshed = await ops.refresh(signed_in.device, signed_in.refresh_token)
    new_token = refreshed.json()["access_token"]
    assert ops.header(new_token)["kid"] != ops.header(signed_in.access_token)["kid"]
    monkeypatch.setattr(jwks_module, "MIN_RELOAD_INTERVAL", 0.0)
    assert (await api.get(signed_in.device, new_token)).status_code == 200
    assert len(api.jwks_fetches) == 2
    # The old key is still published: the old token is still good.
    assert (await api.get(signed_in.device, signed_in.access_token)).status_code == 200
    assert len(api.jwks_fetches) == 2


async def test_b5_a_proof_for_a_percent_encoded_path_is_accepted(
    server: Harness, signed_in: SignedIn
) -> None:
    async def file(request: Request) -> JSONResponse:
        return JSONResponse({"name": request.path_params["name"]})

    async with _issuer_http(server, []) as issuer_http:
        app = protect(
            Starlette(routes=[Route("/files/{name}", file)]),
            issuer=PUBLIC_URL,
            public_url=API_URL,
            http=issuer_http,
            clock=server.clock,
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=API_URL
        ) as client:
            token = signed_in.access_token
            url = API_URL + "/files/my%20doc"
            proof = create_dpop_proof(
                key=signed_in.device.key,
                method="GET",
                url=url,
                iat=server.clock.now(),
                jti=b64url_encode(os.urandom(16)),
                access_token=token,
            )
            response = await client.get(
                url, headers={"Authorization": f"DPoP {token}", "DPoP": proof}
            )
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "my doc"}


class _Later:
    """Stands in for the `time` module inside server.dpop.jwks: monotonic time runs ahead by
    `offset` seconds, so a cache that expires by monotonic time can be made to expire."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def time(self) -> float:
        return time.time() + self.offset


async def test_a11_a_key_retired_by_the_issuer_stops_verifying_at_the_api(
    server: Harness, api: Api, ops: Ops, signed_in: SignedIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Emergency rotation: the old key is retired at once. Once the JWKS cache age (60 s) has
    passed, a token forged with the old private key must be refused by the API, as it is by
    the issuer's own /v1 endpoints."""
    assert (await api.get(signed_in.device, signed_in.access_token)).status_code == 200
    svc = server.app.state.services
    compromised = svc.keys.key_set.current
    await rotate_signing_key(
        SigningKeyStore(svc.db),
        svc.keyring,
        clock=server.clock,
        random_bytes=os.urandom,
        retire_after=0,
    )
    await svc.keys.reload(force=True)
    assert compromised.kid not in {
        k["kid"] for k in (await server.client.get("/.well-known/jwks.json")).json()["keys"]
    }
    later = _Later()
    monkeypatch.setattr(jwks_module, "time", later)
    server.clock.advance(61)
    later.offset = 61.0
    # A holder of the old private key forges a token for any user, bound to its own key.
    attacker = server.device()
    claims = ops.claims(signed_in.access_token)
    forged = issue_access_token(
        key=compromised.key,
        kid=compromised.kid,
        issuer=claims["iss"],
        audience=claims["aud"],
        subject=claims["sub"],
        client_id=claims["client_id"],
        session_id=claims["sid"],
        jkt=attacker.jkt,
        jti=b64url_encode(os.urandom(16)),
        issued_at=server.clock.now(),
        lifetime=600,
        auth_time=claims["auth_time"],
    )
    assert (await server.me(attacker, forged)).status_code == 401  # the issuer refuses it
    _refused(await api.get(attacker, forged), "invalid_token")


async def test_an_unreachable_issuer_is_a_503_not_a_500_nor_a_pass(
    server: Harness, signed_in: SignedIn
) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("issuer unreachable", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(down)) as issuer_http:
        app = protect(
            Starlette(routes=[Route("/orders", orders)]),
            issuer=PUBLIC_URL,
            public_url=API_URL,
            http=issuer_http,
            clock=server.clock,
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=API_URL
        ) as client:
            token = signed_in.access_token
            response = await client.get(
                "/orders",
                headers={
                    "Authorization": f"DPoP {token}",
                    "DPoP": api_proof(signed_in.device, token),
                },
            )
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "temporarily_unavailable"
    assert "retry-after" in response.headers


async def test_the_readme_example(tmp_path: Path) -> None:
    """The README's ten-line example, self-contained: the API uses the system clock, so the
    issuer's fake clock starts at the real time. `http=` only routes to the in-process issuer."""
    async with running_server(tmp_path, clock=FakeClock(int(time.time()))) as auth:
        device = auth.device()
        token = (await auth.login(device, "reader@example.com"))["access_token"]
        issuer_http = httpx.AsyncClient(transport=httpx.ASGITransport(app=auth.app))

        # -- the example --
        async def whoami(request: Request) -> JSONResponse:
            return JSONResponse({"user": principal_of(request.scope).user_id})

        api = protect(
            Starlette(routes=[Route("/whoami", whoami)]),
            issuer="https://auth.example.test",
            public_url="https://api.example.test",
            http=issuer_http,
        )
        # -- end --

        async with (
            issuer_http,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url=API_URL) as c,
        ):
            proof = api_proof(device, token, path="/whoami")
            response = await c.get(
                "/whoami", headers={"Authorization": f"DPoP {token}", "DPoP": proof}
            )
            assert response.status_code == 200, response.text
            me = await auth.me(device, token)
            assert response.json() == {"user": me.json()["user"]["id"]}
            refused = await c.get("/whoami", headers={"Authorization": f"Bearer {token}"})
            assert refused.status_code == 401
