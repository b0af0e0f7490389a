// The client's flow against a scripted server: link checks made on the device, the typed
// answers of a refused completion, nonce and clock retries, and one refresh in flight.

import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";

import {
  InvalidResponseError,
  LinkForAnotherIssuerError,
  LinkForAnotherLoginError,
  LoginAttemptEndedError,
  LoginLinkRefusedError,
  MemoryStorage,
  NetworkError,
  PureSigner,
  RateLimitedError,
  SessionEndedError,
  SplitlinkClient,
  SplitlinkError,
  TemporarilyUnavailableError,
  InvalidLinkError,
  base64urlDecode,
  base64urlEncode,
  checkPhrase,
  jwkThumbprint,
  type FetchFunction,
  type SessionEndedEvent,
} from "../src/index.js";

const ISSUER = "https://auth.example.com";
const ATTEMPT = base64urlEncode(new Uint8Array(16).fill(1));
const OTHER_ATTEMPT = base64urlEncode(new Uint8Array(16).fill(2));
const HALF = base64urlEncode(new Uint8Array(32).fill(3));
const link = (attempt = ATTEMPT, origin = ISSUER): string => `${origin}/l#attempt_id=${attempt}&email_half=${HALF}`;

type Handler = (request: Request, claims: Record<string, unknown>) => Response | Promise<Response>;

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });
}

function claimsOf(request: Request): Record<string, unknown> {
  const proof = request.headers.get("DPoP");
  if (proof === null) return {};
  return JSON.parse(new TextDecoder().decode(base64urlDecode(proof.split(".")[1]!))) as Record<string, unknown>;
}

/** A fake server: metadata is built in; `routes` maps "METHOD path" to a handler. */
function fakeServer(routes: Record<string, Handler>, serverTimeMs: () => number = Date.now) {
  const calls: { method: string; path: string; claims: Record<string, unknown>; body: string }[] = [];
  const fetch = async (input: string, init: RequestInit = {}): Promise<Response> => {
    const request = new Request(input, init);
    const path = new URL(request.url).pathname;
    const body = init.body === undefined || init.body === null ? "" : String(init.body);
    const claims = claimsOf(request);
    calls.push({ method: request.method, path, claims, body });
    const date = { Date: new Date(serverTimeMs()).toUTCString() };
    if (path === "/.well-known/oauth-authorization-server") {
      return json(200, {
        issuer: ISSUER,
        token_endpoint: `${ISSUER}/oauth2/token`,
        login_start_endpoint: `${ISSUER}/v1/login/start`,
        revocation_endpoint: `${ISSUER}/oauth2/revoke`,
        jwks_uri: `${ISSUER}/.well-known/jwks.json`,
        dpop_signing_alg_values_supported: ["ES256", "EdDSA"],
      }, date);
    }
    const handler = routes[`${request.method} ${path}`];
    if (handler === undefined) return json(404, { error: "not_found" });
    const response = await handler(request, claims);
    const headers = new Headers(response.headers);
    if (!headers.has("Date")) headers.set("Date", date.Date);
    return new Response(response.body, { status: response.status, headers });
  };
  return { fetch, calls };
}

async function clientWith(
  server: ReturnType<typeof fakeServer>,
  options: { now?: () => number; resourceOrigins?: readonly string[]; fetch?: FetchFunction } = {},
) {
  const signer = PureSigner.generate("EdDSA");
  const client = await SplitlinkClient.create({ issuer: ISSUER, signer, fetch: server.fetch, ...options });
  return { client, signer };
}

function startRoute(signer: () => PureSigner): Handler {
  return () =>
    json(202, {
      attempt_id: ATTEMPT,
      device_half: HALF,
      expires_in: 600,
      check_phrase: checkPhrase(jwkThumbprint(signer().publicJwk)),
    });
}

let tokenSerial = 0;
function tokens(expiresIn = 600): Response {
  tokenSerial += 1;
  return json(200, { access_token: `at-${tokenSerial}`, token_type: "DPoP", expires_in: expiresIn, refresh_token: `rt-${tokenSerial}` });
}

async function signedIn(routes: Record<string, Handler> = {}, expiresIn = 600) {
  let signer: PureSigner | undefined;
  const server = fakeServer({
    "POST /v1/login/start": startRoute(() => signer!),
    "POST /oauth2/token": () => tokens(expiresIn),
    ...routes,
  });
  const made = await clientWith(server);
  signer = made.signer;
  await made.client.startLogin("alice@example.com");
  await made.client.completeFromLink(link());
  return { ...made, server };
}

test("a link with no pending login on this device is refused without asking the server", async () => {
  const server = fakeServer({});
  const { client } = await clientWith(server);
  await assert.rejects(client.completeFromLink(link()), LinkForAnotherLoginError);
  assert.equal(server.calls.length, 0);
});

test("a link of an older login is refused without asking the server", async () => {
  let signer: PureSigner | undefined;
  const server = fakeServer({ "POST /v1/login/start": startRoute(() => signer!) });
  const made = await clientWith(server);
  signer = made.signer;
  const started = await made.client.startLogin("alice@example.com", { deviceName: "phone" });
  assert.equal(started.checkPhrase, checkPhrase(made.client.jkt));
  const before = server.calls.length;
  await assert.rejects(made.client.completeFromLink(link(OTHER_ATTEMPT)), LinkForAnotherLoginError);
  assert.equal(server.calls.length, before);
  assert.deepEqual(JSON.parse(server.calls.at(-1)!.body), { email: "alice@example.com", device_name: "phone" });
});

test("a link for another server, or not on /l, is refused on the device", async () => {
  const server = fakeServer({});
  const { client } = await clientWith(server);
  await assert.rejects(client.completeFromLink(link(ATTEMPT, "https://evil.example")), LinkForAnotherIssuerError);
  await assert.rejects(client.completeFromLink(`${ISSUER}/login#attempt_id=${ATTEMPT}&email_half=${HALF}`), LinkForAnotherIssuerError);
  await assert.rejects(client.completeFromLink(`${ISSUER}/l#attempt_id=${ATTEMPT}`), InvalidLinkError);
  assert.equal(server.calls.length, 0);
});

test("a start answered with another key's check phrase is refused", async () => {
  const stranger = PureSigner.generate("ES256");
  const server = fakeServer({ "POST /v1/login/start": startRoute(() => stranger) });
  const { client } = await clientWith(server);
  await assert.rejects(client.startLogin("alice@example.com"), InvalidResponseError);
  assert.equal(await client.pendingLogin(), null);
});

for (const state of ["consumed", "locked", "expired"] as const) {
  test(`a proven completion of a ${state} attempt is told apart and the pending login dropped`, async () => {
    let signer: PureSigner | undefined;
    const server = fakeServer({
      "POST /v1/login/start": startRoute(() => signer!),
      "POST /oauth2/token": () =>
        json(400, { error: "invalid_grant", error_description: "the login attempt is …", attempt_state: state }),
    });
    const made = await clientWith(server);
    signer = made.signer;
    await made.client.startLogin("alice@example.com");
    await assert.rejects(made.client.completeFromLink(link()), (error: unknown) => {
      assert.ok(error instanceof LoginAttemptEndedError);
      assert.equal(error.state, state);
      return true;
    });
    assert.equal(await made.client.pendingLogin(), null);
  });
}

test("an invalid_grant without attempt_state is a refused link, not an ended attempt", async () => {
  let signer: PureSigner | undefined;
  const server = fakeServer({
    "POST /v1/login/start": startRoute(() => signer!),
    "POST /oauth2/token": () => json(400, { error: "invalid_grant", error_description: "cannot be completed" }),
  });
  const made = await clientWith(server);
  signer = made.signer;
  await made.client.startLogin("alice@example.com");
  await assert.rejects(made.client.completeFromLink(link()), LoginLinkRefusedError);
  const form = new URLSearchParams(server.calls.at(-1)!.body);
  assert.equal(form.get("grant_type"), "urn:splitlink:params:oauth:grant-type:magic-link");
  assert.equal(form.get("device_half"), HALF);
  assert.equal(form.get("email_half"), HALF);
});

test("use_dpop_nonce is retried once with the nonce, kept apart per audience", async () => {
  const { client, server } = await signedIn({
    "GET /v1/me": (_request, claims) =>
      claims["nonce"] === "rs-nonce"
        ? json(200, { user: { id: "u", email: "a@example.com" }, session: { id: "s", device_name: null, key_alg: "EdDSA", created_at: 1, last_used_at: 1, expires_at: 2, auth_time: 1 } }, { "DPoP-Nonce": "rs-nonce" })
        : new Response(JSON.stringify({ error: "use_dpop_nonce" }), {
            status: 401,
            headers: { "DPoP-Nonce": "rs-nonce", "WWW-Authenticate": 'DPoP error="use_dpop_nonce"', "Content-Type": "application/json" },
          }),
  });
  const me = await client.me();
  assert.equal(me.user.email, "a@example.com");
  const meCalls = server.calls.filter((c) => c.path === "/v1/me");
  assert.deepEqual(meCalls.map((c) => c.claims["nonce"]), [undefined, "rs-nonce"]);
  assert.notEqual(meCalls[0]!.claims["jti"], meCalls[1]!.claims["jti"]);
  await client.me();
  assert.equal(server.calls.filter((c) => c.path === "/v1/me").length, 3);
  // The resource server's nonce never goes to the token endpoint.
  await client.refresh();
  assert.equal(server.calls.at(-1)!.claims["nonce"], undefined);
});

test("twenty requests refused as expired share exactly one refresh", async () => {
  let current = "";
  const { client, server } = await signedIn({
    "GET /v1/data": (request) =>
      request.headers.get("Authorization") === `DPoP ${current}`
        ? json(200, { ok: true })
        : json(401, { error: "invalid_token", error_description: "expired" }),
    "POST /oauth2/token": async () => {
      await new Promise((resolve) => setTimeout(resolve, 20));
      const answer = tokens();
      current = `at-${tokenSerial}`;
      return answer;
    },
  });
  // The server now holds the signed-in token expired.
  current = "none yet";
  const responses = await Promise.all(Array.from({ length: 20 }, () => client.fetch("/v1/data")));
  assert.deepEqual(responses.map((r) => r.status), Array(20).fill(200));
  const refreshes = server.calls.filter((c) => c.path === "/oauth2/token" && c.body.includes("grant_type=refresh_token"));
  assert.equal(refreshes.length, 1);
});

test("a token about to expire is refreshed once before use, however many requests wait", async () => {
  let now = 1_000_000;
  let signer: PureSigner | undefined;
  const server = fakeServer({
    "POST /v1/login/start": startRoute(() => signer!),
    "POST /oauth2/token": () => tokens(60),
    "GET /v1/data": () => json(200, {}),
  });
  const made = await clientWith(server, { now: () => now });
  signer = made.signer;
  await made.client.startLogin("a@example.com");
  await made.client.completeFromLink(link());
  now += 31_000;
  await Promise.all(Array.from({ length: 20 }, () => made.client.fetch("/v1/data")));
  const refreshes = server.calls.filter((c) => c.body.includes("grant_type=refresh_token"));
  assert.equal(refreshes.length, 1);
});

test("a refused refresh ends the session once, with the event, for every waiting request", async () => {
  const events: SessionEndedEvent[] = [];
  let refreshAllowed = true;
  const { client } = await signedIn({
    "GET /v1/data": () => json(401, { error: "invalid_token", error_description: "the session has ended" }),
    "POST /oauth2/token": () => (refreshAllowed ? tokens() : json(400, { error: "invalid_grant" })),
  });
  refreshAllowed = false;
  client.onSessionEnded((event) => events.push(event));
  const results = await Promise.allSettled(Array.from({ length: 5 }, () => client.fetch("/v1/data")));
  assert.ok(results.every((r) => r.status === "rejected" && r.reason instanceof SessionEndedError));
  assert.deepEqual(events, [{ reason: "ended_by_server" }]);
  assert.equal(client.isSignedIn, false);
});

test("a refresh answered invalid_grant ends the session with the event", async () => {
  const events: SessionEndedEvent[] = [];
  let refreshAllowed = true;
  const { client } = await signedIn({
    "POST /oauth2/token": () => (refreshAllowed ? tokens() : json(400, { error: "invalid_grant" })),
  });
  client.onSessionEnded((event) => events.push(event));
  refreshAllowed = false;
  await assert.rejects(client.refresh(), SessionEndedError);
  await assert.rejects(client.me(), (error: unknown) => (error as { code: string }).code === "not_signed_in");
  assert.deepEqual(events, [{ reason: "ended_by_server" }]);
});

test("proofs are dated on the server's clock when the device's is ten minutes off", async () => {
  const skew = 10 * 60 * 1000;
  let signer: PureSigner | undefined;
  const server = fakeServer(
    {
      "POST /v1/login/start": (_request, claims) =>
        Math.abs((claims["iat"] as number) - Date.now() / 1000) > 60
          ? json(400, { error: "invalid_dpop_proof" })
          : startRoute(() => signer!)(_request, claims),
    },
    Date.now,
  );
  const made = await clientWith(server, { now: () => Date.now() - skew });
  signer = made.signer;
  await made.client.startLogin("a@example.com");
  assert.ok(Math.abs(made.client.clockOffsetSeconds - 600) < 3);
});

test("a proof refused for a clock learnt too late is sent once more, re-dated", async () => {
  let skew = 0;
  const serverNow = (): number => Date.now() + skew;
  let signer: PureSigner | undefined;
  const server = fakeServer(
    {
      "POST /v1/login/start": startRoute(() => signer!),
      "POST /oauth2/token": () => tokens(),
      "GET /v1/data": (_request, claims) =>
        Math.abs((claims["iat"] as number) - serverNow() / 1000) > 60
          ? json(401, { error: "invalid_dpop_proof" })
          : json(200, {}),
    },
    serverNow,
  );
  const made = await clientWith(server);
  signer = made.signer;
  await made.client.startLogin("a@example.com");
  await made.client.completeFromLink(link());
  skew = 10 * 60 * 1000;
  const response = await made.client.fetch("/v1/data");
  assert.equal(response.status, 200);
  assert.equal(server.calls.filter((c) => c.path === "/v1/data").length, 2);
});

test("rate limits and a proxy's error page become typed errors", async () => {
  const limited = fakeServer({
    "POST /v1/login/start": () => json(429, { error: "rate_limited", error_description: "slow down" }, { "Retry-After": "42" }),
  });
  const one = await clientWith(limited);
  await assert.rejects(one.client.startLogin("a@example.com"), (error: unknown) => {
    assert.ok(error instanceof RateLimitedError);
    assert.equal(error.retryAfter, 42);
    return true;
  });
  const proxy = fakeServer({ "POST /v1/login/start": () => new Response("<html>bad gateway</html>", { status: 502 }) });
  const two = await clientWith(proxy);
  await assert.rejects(two.client.startLogin("a@example.com"), TemporarilyUnavailableError);
});

test("tokens go only to the issuer and the listed resource origins", async () => {
  const { client } = await signedIn();
  await assert.rejects(client.fetch("https://elsewhere.example/v1/me"), /resourceOrigins/);
});

test("a token cut short by the session's end is refreshed at half its life, not on every request", async () => {
  let now = 1_000_000;
  let signer: PureSigner | undefined;
  const server = fakeServer({
    "POST /v1/login/start": startRoute(() => signer!),
    "POST /oauth2/token": () => tokens(20),
    "GET /v1/data": () => json(200, {}),
  });
  const made = await clientWith(server, { now: () => now });
  signer = made.signer;
  await made.client.startLogin("a@example.com");
  await made.client.completeFromLink(link());
  for (let i = 0; i < 5; i++) {
    await made.client.fetch("/v1/data");
  }
  assert.equal(server.calls.filter((c) => c.body.includes("grant_type=refresh_token")).length, 0);
  now += 11_000;
  await made.client.fetch("/v1/data");
  await made.client.fetch("/v1/data");
  assert.equal(server.calls.filter((c) => c.body.includes("grant_type=refresh_token")).length, 1);
});

test("ending this device's own session from the list is a logout", async () => {
  const events: SessionEndedEvent[] = [];
  const { client } = await signedIn({
    "GET /v1/sessions": () =>
      json(200, {
        sessions: [
          { id: "other", device_name: "tablet", key_alg: "ES256", created_at: 1, last_used_at: 1, expires_at: 9, current: false },
          { id: "mine", device_name: null, key_alg: "EdDSA", created_at: 2, last_used_at: 2, expires_at: 9, current: true },
        ],
      }),
    "DELETE /v1/sessions/other": () => new Response(null, { status: 204 }),
    "DELETE /v1/sessions/mine": () => new Response(null, { status: 204 }),
  });
  client.onSessionEnded((event) => events.push(event));
  await client.sessions();
  await client.endSession("other");
  assert.equal(client.isSignedIn, true);
  await client.endSession("mine");
  assert.equal(client.isSignedIn, false);
  assert.deepEqual(events, [{ reason: "logout" }]);
});

test("htu names the path as fetch sends it, percent-encoded", async () => {
  const { client, server } = await signedIn({ "GET /v1/caf%C3%A9%20menu": () => json(200, {}) });
  const response = await client.fetch("/v1/café menu?x=1");
  assert.equal(response.status, 200);
  assert.equal(server.calls.at(-1)!.claims["htu"], `${ISSUER}/v1/caf%C3%A9%20menu`);
});

/** A local HTTP server; `handle` answers every request. */
async function httpServer(handle: (request: IncomingMessage, body: string, response: ServerResponse) => void) {
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => handle(request, Buffer.concat(chunks).toString(), response));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address() as AddressInfo;
  return { origin: `http://127.0.0.1:${address.port}`, close: () => new Promise((resolve) => server.close(resolve)) };
}

test("a redirect is never followed, so no proof, token or half is sent on to its Location", async () => {
  const received: string[] = [];
  const elsewhere = await httpServer((request, body, response) => {
    received.push(`${request.method} ${request.url} ${request.headers["dpop"] ?? ""} ${body}`);
    response.writeHead(200, { "Content-Type": "application/json" }).end("{}");
  });
  let issuer = "";
  const api = await httpServer((request, _body, response) => {
    const path = new URL(request.url ?? "/", issuer).pathname;
    if (path === "/.well-known/oauth-authorization-server") {
      response.writeHead(200, { "Content-Type": "application/json" }).end(
        JSON.stringify({
          issuer,
          token_endpoint: `${issuer}/oauth2/token`,
          login_start_endpoint: `${issuer}/v1/login/start`,
          revocation_endpoint: `${issuer}/oauth2/revoke`,
          jwks_uri: `${issuer}/.well-known/jwks.json`,
          dpop_signing_alg_values_supported: ["EdDSA"],
        }),
      );
      return;
    }
    response.writeHead(307, { Location: `${elsewhere.origin}${path}` }).end();
  });
  const movedMetadata = await httpServer((request, _body, response) => {
    response.writeHead(308, { Location: `${elsewhere.origin}${request.url ?? "/"}` }).end();
  });
  try {
    issuer = api.origin;
    const signer = PureSigner.generate("EdDSA");
    const storage = new MemoryStorage();
    const jkt = jwkThumbprint(signer.publicJwk);
    const far = Date.now() + 600_000;
    await storage.setItem(
      "splitlink.tokens",
      JSON.stringify({ issuer, jkt, accessToken: "at", refreshToken: "rt-secret", expiresAtMs: far, refreshAtMs: far }),
    );
    await storage.setItem(
      "splitlink.pending_login",
      JSON.stringify({ issuer, jkt, attemptId: ATTEMPT, deviceHalf: HALF, expiresAtMs: far }),
    );
    const client = await SplitlinkClient.create({ issuer, signer, storage });
    await assert.rejects(client.refresh(), NetworkError);
    await assert.rejects(client.fetch("/v1/me"), NetworkError);
    await assert.rejects(client.completeFromLink(link(ATTEMPT, issuer)), NetworkError);
    await assert.rejects(client.startLogin("alice@example.com"), NetworkError);
    const moved = await SplitlinkClient.create({ issuer: movedMetadata.origin, signer });
    await assert.rejects(moved.discover(), NetworkError);
    assert.deepEqual(received, []);
  } finally {
    await Promise.all([elsewhere.close(), api.close(), movedMetadata.close()]);
  }
});

const API = "https://api.example.com";

/** Signed in on the fake issuer, with `API` listed and answered by `resource`. */
async function signedInWithResource(
  resource: (request: Request) => Response | Promise<Response>,
  serverTimeMs: () => number = Date.now,
) {
  let signer: PureSigner | undefined;
  const server = fakeServer(
    {
      "POST /v1/login/start": startRoute(() => signer!),
      "POST /oauth2/token": () => tokens(),
      "GET /v1/data": () => json(200, {}),
      "GET /v1/me": () =>
        json(200, { user: { id: "u", email: "a@example.com" }, session: { id: "s", device_name: null, key_alg: "EdDSA", created_at: 1, last_used_at: 1, expires_at: 2, auth_time: 1 } }),
    },
    serverTimeMs,
  );
  const fetch: FetchFunction = async (input, init) =>
    new URL(input).origin === API ? resource(new Request(input, init)) : server.fetch(input, init);
  const made = await clientWith(server, { resourceOrigins: [API], fetch });
  signer = made.signer;
  await made.client.startLogin("a@example.com");
  await made.client.completeFromLink(link());
  return { ...made, server };
}

test("another origin's Date never moves the clock proofs are dated on", async () => {
  const farAhead = new Date(Date.now() + 5 * 3600_000).toUTCString();
  const { client } = await signedInWithResource(() => json(200, {}, { Date: farAhead }));
  assert.ok(Math.abs(client.clockOffsetSeconds) < 3);
  await client.fetch(`${API}/orders`);
  assert.ok(Math.abs(client.clockOffsetSeconds) < 3);
});

test("an issuer's Date more than a day off is ignored", async () => {
  const server = fakeServer({}, () => Date.now() + 3 * 86_400_000);
  const { client } = await clientWith(server);
  await client.discover();
  assert.equal(client.clockOffsetSeconds, 0);
});

test("a sudden jump in the issuer's Date is ignored until a proof is refused", async () => {
  let skew = 0;
  const { client } = await signedInWithResource(() => json(200, {}), () => Date.now() + skew);
  const before = client.clockOffsetSeconds;
  skew = 2 * 3600_000;
  const response = await client.fetch("/v1/data");
  assert.equal(response.status, 200);
  assert.equal(client.clockOffsetSeconds, before);
});

test("a resource origin refusing a fresh token is the caller's error, and the session stays", async () => {
  const events: SessionEndedEvent[] = [];
  const { client, server } = await signedInWithResource(() =>
    json(401, { error: "invalid_token", error_description: "not for us" }, { "WWW-Authenticate": 'DPoP error="invalid_token"' }),
  );
  client.onSessionEnded((event) => events.push(event));
  await assert.rejects(client.fetch(`${API}/orders`), (error: unknown) => {
    assert.ok(error instanceof SplitlinkError);
    assert.equal(error.code, "invalid_token");
    assert.equal(error.status, 401);
    return true;
  });
  assert.equal(client.isSignedIn, true);
  assert.deepEqual(events, []);
  assert.equal(server.calls.filter((c) => c.body.includes("grant_type=refresh_token")).length, 1);
  assert.equal((await client.me()).session.id, "s");
});

test("the issuer refusing a fresh token still ends the session", async () => {
  const events: SessionEndedEvent[] = [];
  const { client } = await signedIn({ "GET /v1/data": () => json(401, { error: "invalid_token" }) });
  client.onSessionEnded((event) => events.push(event));
  await assert.rejects(client.fetch("/v1/data"), SessionEndedError);
  assert.deepEqual(events, [{ reason: "ended_by_server" }]);
});

/** A token endpoint that, like splitlink's with no grace period, ends the session on reuse. */
function rotatingServer(signer: () => PureSigner) {
  let current = "";
  let revoked = false;
  const server = fakeServer({
    "POST /v1/login/start": startRoute(signer),
    "POST /oauth2/token": async (request) => {
      const form = new URLSearchParams(await request.text());
      if (form.get("grant_type") === "refresh_token" && (revoked || form.get("refresh_token") !== current)) {
        revoked = true;
        return json(400, { error: "invalid_grant" });
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
      const answer = tokens(60);
      current = `rt-${tokenSerial}`;
      return answer;
    },
    "GET /v1/data": () => (revoked ? json(401, { error: "invalid_token" }) : json(200, {})),
  });
  return { ...server, revoked: () => revoked };
}

test("two instances sharing one storage refresh once per rotation and keep the session", async () => {
  let now = 1_000_000;
  let signer: PureSigner | undefined;
  const server = rotatingServer(() => signer!);
  const storage = new MemoryStorage();
  signer = PureSigner.generate("EdDSA");
  const options = { issuer: ISSUER, signer, storage, fetch: server.fetch, now: () => now };
  const first = await SplitlinkClient.create(options);
  await first.startLogin("a@example.com");
  await first.completeFromLink(link());
  const second = await SplitlinkClient.create(options);
  const refreshes = (): number => server.calls.filter((c) => c.body.includes("grant_type=refresh_token")).length;

  await first.refresh();
  now += 5_000;
  await second.refresh();
  assert.equal(refreshes(), 1);

  await Promise.all([first.refresh(), second.refresh()]);
  assert.equal(refreshes(), 2);

  now += 31_000;
  const answers = await Promise.all([first, second, first, second].map((client) => client.fetch("/v1/data")));
  assert.deepEqual(answers.map((r) => r.status), [200, 200, 200, 200]);
  assert.equal(refreshes(), 3);
  assert.equal(server.revoked(), false);
  assert.equal(first.isSignedIn && second.isSignedIn, true);
});

test("after a restart, a first request to a resource origin is dated on the issuer's clock", async () => {
  const skew = 10 * 60 * 1000;
  const server = fakeServer({});
  const signer = PureSigner.generate("EdDSA");
  const storage = new MemoryStorage();
  const later = Date.now() + 600_000;
  await storage.setItem(
    "splitlink.tokens",
    JSON.stringify({
      issuer: ISSUER,
      jkt: jwkThumbprint(signer.publicJwk),
      accessToken: "at",
      refreshToken: "rt",
      expiresAtMs: later - skew,
      refreshAtMs: later - skew,
      serial: 1,
    }),
  );
  const resourceCalls: number[] = [];
  const fetch: FetchFunction = async (input, init) => {
    if (new URL(input).origin !== API) return server.fetch(input, init);
    const iat = claimsOf(new Request(input, init))["iat"] as number;
    resourceCalls.push(iat);
    return Math.abs(iat - Date.now() / 1000) > 60 ? json(401, { error: "invalid_dpop_proof" }) : json(200, {});
  };
  const now = (): number => Date.now() - skew;
  const client = await SplitlinkClient.create({ issuer: ISSUER, signer, storage, fetch, resourceOrigins: [API], now });
  const response = await client.fetch(`${API}/orders`);
  assert.equal(response.status, 200);
  assert.equal(resourceCalls.length, 1);
});

test("refreshes run under the storage's own lock, else under navigator.locks", async () => {
  const webLocks: string[] = [];
  const storageLocks: string[] = [];
  const descriptor = Object.getOwnPropertyDescriptor(globalThis, "navigator");
  Object.defineProperty(globalThis, "navigator", {
    value: {
      locks: {
        request: async (name: string, critical: () => Promise<unknown>) => {
          webLocks.push(name);
          return critical();
        },
      },
    },
    configurable: true,
    writable: true,
  });
  try {
    let signer: PureSigner | undefined;
    const server = rotatingServer(() => signer!);
    signer = PureSigner.generate("EdDSA");
    const plain = new MemoryStorage();
    const locking = Object.assign(new MemoryStorage(), {
      withLock: async <T>(name: string, critical: () => Promise<T>): Promise<T> => {
        storageLocks.push(name);
        return critical();
      },
    });
    for (const storage of [plain, locking]) {
      const client = await SplitlinkClient.create({ issuer: ISSUER, signer, storage, fetch: server.fetch, storageKey: "app" });
      await client.startLogin("a@example.com");
      await client.completeFromLink(link());
      await client.refresh();
    }
    assert.deepEqual(webLocks, [`app.tokens ${ISSUER}`]);
    assert.deepEqual(storageLocks, [`app.tokens ${ISSUER}`]);
  } finally {
    if (descriptor === undefined) {
      delete (globalThis as { navigator?: unknown }).navigator;
    } else {
      Object.defineProperty(globalThis, "navigator", descriptor);
    }
  }
});
