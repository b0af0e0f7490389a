// The end-to-end suite, run against real `splitlink serve` processes: once with WebCrypto keys
// (e2e.test.ts) and once in a runtime without `crypto.subtle` (e2e-pure.test.ts).

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import {
  LinkForAnotherLoginError,
  LoginAttemptEndedError,
  MemoryStorage,
  NotSignedInError,
  PureSigner,
  SessionEndedError,
  SplitlinkClient,
  WebCryptoSigner,
  checkPhrase,
  hasSubtleCrypto,
  type Algorithm,
  type ClientOptions,
  type DeviceSigner,
  type SessionEndedEvent,
} from "../../src/index.js";
import { FileStorage } from "../../src/node.js";
import { readLoginLink, signInWithDevMailbox } from "../../src/testing.js";
import { startServer, type RunningServer } from "./server.js";

export type SignerMode = "webcrypto" | "pure";

const ACCESS_TOKEN_LIFETIME = 60;
let serial = 0;
const email = (label: string): string => `${label}-${process.pid}-${++serial}@example.com`;

interface Counted {
  readonly fetch: NonNullable<ClientOptions["fetch"]>;
  refreshes(): number;
  starts(): number;
}

function countingFetch(): Counted {
  let refreshes = 0;
  let starts = 0;
  return {
    fetch: async (input, init) => {
      if (input.endsWith("/oauth2/token") && String(init?.body ?? "").includes("grant_type=refresh_token")) {
        refreshes += 1;
      }
      if (input.endsWith("/v1/login/start")) {
        starts += 1;
      }
      return globalThis.fetch(input, init);
    },
    refreshes: () => refreshes,
    starts: () => starts,
  };
}

export function defineEndToEndSuite(mode: SignerMode): void {
  async function signerFor(alg: Algorithm): Promise<DeviceSigner> {
    return mode === "webcrypto" && alg === "ES256" ? WebCryptoSigner.generate() : PureSigner.generate(alg);
  }

  describe(`end to end against splitlink serve (${mode} signer)`, { concurrency: true }, () => {
    let server: RunningServer;
    let nonceServer: RunningServer;

    before(async () => {
      [server, nonceServer] = await Promise.all([
        startServer({
          SPLITLINK_ACCESS_TOKEN_LIFETIME: String(ACCESS_TOKEN_LIFETIME),
          // Reuse is detected as soon as a rotated token comes back a second later.
          SPLITLINK_REFRESH_GRACE_PERIOD: "0",
        }),
        startServer({ SPLITLINK_USE_DPOP_NONCE: "true" }),
      ]);
    });

    after(async () => {
      await Promise.all([server?.stop(), nonceServer?.stop()]);
    });

    async function signedInClient(
      options: { alg?: Algorithm; on?: RunningServer; signer?: DeviceSigner } & Partial<ClientOptions> = {},
    ) {
      const target = options.on ?? server;
      const counted = countingFetch();
      const signer = options.signer ?? (await signerFor(options.alg ?? "ES256"));
      const storage = options.storage ?? new MemoryStorage();
      const address = email(options.alg ?? "es256");
      const client = await SplitlinkClient.create({
        issuer: target.url,
        signer,
        storage,
        fetch: counted.fetch,
        ...(options.now === undefined ? {} : { now: options.now }),
        ...(options.refreshBeforeExpirySeconds === undefined ? {} : { refreshBeforeExpirySeconds: options.refreshBeforeExpirySeconds }),
      });
      const started = await signInWithDevMailbox(client, address, { mailDir: target.mailDir, deviceName: "test phone" });
      return { client, counted, signer, storage, address, started };
    }

    test("the pure-JavaScript run has no crypto.subtle", { skip: mode !== "pure" }, async () => {
      assert.equal(hasSubtleCrypto(), false);
      await assert.rejects(WebCryptoSigner.generate(), (error: unknown) => (error as { code: string }).code === "unsupported_runtime");
    });

    for (const alg of ["ES256", "EdDSA"] as const) {
      test(`a full ${alg} login through the development mailbox, then me, refresh and sessions`, async () => {
        const { client, address, started, signer } = await signedInClient({ alg });
        assert.equal(started.checkPhrase, checkPhrase(client.jkt));
        assert.equal(signer.alg, alg);
        const me = await client.me();
        assert.equal(me.user.email, address);
        assert.equal(me.session.keyAlg, alg);
        assert.equal(me.session.deviceName, "test phone");
        await client.refresh();
        const again = await client.me();
        assert.equal(again.session.id, me.session.id);
        const sessions = await client.sessions();
        assert.deepEqual(sessions.map((s) => [s.id, s.current]), [[me.session.id, true]]);
      });
    }

    test("twenty concurrent requests across an access-token expiry make exactly one refresh", async () => {
      const { client, counted } = await signedInClient({ refreshBeforeExpirySeconds: 0 });
      await client.me();
      await new Promise((resolve) => setTimeout(resolve, (ACCESS_TOKEN_LIFETIME + 2) * 1000));
      const results = await Promise.all(Array.from({ length: 20 }, () => client.fetch("/v1/me")));
      assert.deepEqual(results.map((r) => r.status), Array(20).fill(200));
      assert.equal(counted.refreshes(), 1);
    });

    test("a server that requires nonces: login, me, refresh and logout", async () => {
      const { client, counted } = await signedInClient({ on: nonceServer, alg: "EdDSA" });
      // The start was challenged once for a nonce, then sent again with it.
      assert.equal(counted.starts(), 2);
      await client.me();
      await client.refresh();
      await client.me();
      await client.logout();
      assert.equal(client.isSignedIn, false);
    });

    for (const offsetMinutes of [-10, 10]) {
      test(`a device whose clock is ${offsetMinutes} minutes off signs in and stays signed in`, async () => {
        const now = (): number => Date.now() + offsetMinutes * 60_000;
        const storage = new MemoryStorage();
        const signer = await signerFor("ES256");
        const { client } = await signedInClient({ now, storage, signer });
        assert.ok(Math.abs(client.clockOffsetSeconds + offsetMinutes * 60) < 5);
        await client.me();
        await client.refresh();
        await client.me();
        // After a restart the offset is unknown: the first proof is refused, re-dated, accepted.
        const restarted = await SplitlinkClient.create({ issuer: server.url, signer, storage, now });
        assert.equal(restarted.isSignedIn, true);
        await restarted.me();
      });
    }

    test("logout ends the session here and on the server, with the event", async () => {
      const { client, signer, storage } = await signedInClient();
      const copy = new MemoryStorage();
      for (const key of ["splitlink.tokens"]) {
        await copy.setItem(key, (await storage.getItem(key))!);
      }
      const events: SessionEndedEvent[] = [];
      client.onSessionEnded((event) => events.push(event));
      await client.logout();
      assert.deepEqual(events, [{ reason: "logout" }]);
      await assert.rejects(client.me(), NotSignedInError);
      // The same tokens, kept elsewhere, are refused by the server.
      const stale = await SplitlinkClient.create({ issuer: server.url, signer, storage: copy });
      await assert.rejects(stale.me(), SessionEndedError);
    });

    test("logout everywhere ends the user's other sessions, which learn it on their next request", async () => {
      const first = await signedInClient();
      const second = await SplitlinkClient.create({ issuer: server.url, signer: await signerFor("EdDSA") });
      await signInWithDevMailbox(second, first.address, { mailDir: server.mailDir });
      assert.equal((await second.sessions()).length, 2);
      const events: SessionEndedEvent[] = [];
      second.onSessionEnded((event) => events.push(event));
      await first.client.logout({ all: true });
      await assert.rejects(second.me(), SessionEndedError);
      assert.deepEqual(events, [{ reason: "ended_by_server" }]);
    });

    test("ending another device's session from the session list", async () => {
      const first = await signedInClient();
      const second = await SplitlinkClient.create({ issuer: server.url, signer: await signerFor("EdDSA") });
      await signInWithDevMailbox(second, first.address, { mailDir: server.mailDir });
      const other = (await first.client.sessions()).find((s) => !s.current)!;
      await first.client.endSession(other.id);
      await assert.rejects(second.me(), SessionEndedError);
      await first.client.me();
    });

    test("refresh-token reuse ends the session, and the device gets the event", async () => {
      const { client, signer, storage } = await signedInClient();
      const thief = new MemoryStorage();
      await thief.setItem("splitlink.tokens", (await storage.getItem("splitlink.tokens"))!);
      const events: SessionEndedEvent[] = [];
      client.onSessionEnded((event) => events.push(event));
      await client.refresh();
      await new Promise((resolve) => setTimeout(resolve, 1100));
      const replay = await SplitlinkClient.create({ issuer: server.url, signer, storage: thief });
      await assert.rejects(replay.refresh(), SessionEndedError);
      await assert.rejects(client.me(), SessionEndedError);
      assert.deepEqual(events, [{ reason: "ended_by_server" }]);
    });

    test("two instances on one storage file refresh once per rotation, and the session lives", async () => {
      const directory = mkdtempSync(join(tmpdir(), "splitlink-shared-"));
      try {
        const path = join(directory, "session.json");
        const counted = countingFetch();
        const signer = await signerFor("ES256");
        // Two FileStorage objects on one file, as two processes would have.
        const instance = (): Promise<SplitlinkClient> =>
          SplitlinkClient.create({ issuer: server.url, signer, storage: new FileStorage(path), fetch: counted.fetch });
        const first = await instance();
        await signInWithDevMailbox(first, email("shared"), { mailDir: server.mailDir });
        const second = await instance();
        const events: SessionEndedEvent[] = [];
        for (const client of [first, second]) {
          client.onSessionEnded((event) => events.push(event));
        }
        const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

        // The first rotates; the second refreshes after the grace period, from what it read before.
        await first.refresh();
        await pause(1100);
        await second.refresh();
        assert.equal(counted.refreshes(), 1);
        await second.me();

        // Both at once, then both again once their access tokens are due.
        await pause(1100);
        await Promise.all([first.refresh(), second.refresh()]);
        assert.equal(counted.refreshes(), 2);
        await pause((ACCESS_TOKEN_LIFETIME / 2 + 2) * 1000);
        const answers = await Promise.all([first, second, first, second].map((client) => client.fetch("/v1/me")));
        assert.deepEqual(answers.map((r) => r.status), [200, 200, 200, 200]);
        assert.equal(counted.refreshes(), 3);

        const sessions = await first.sessions();
        assert.equal(sessions.length, 1);
        assert.equal((await second.me()).session.id, sessions[0]!.id);
        assert.deepEqual(events, []);
      } finally {
        rmSync(directory, { recursive: true, force: true });
      }
    });

    test("a link opened on another device is refused there without a request", async () => {
      const owner = await SplitlinkClient.create({ issuer: server.url, signer: await signerFor("ES256") });
      await owner.startLogin(email("owner"));
      const link = await readLoginLink((await owner.pendingLogin())!.attemptId, { mailDir: server.mailDir });
      const counted = countingFetch();
      const stranger = await SplitlinkClient.create({ issuer: server.url, signer: await signerFor("EdDSA"), fetch: counted.fetch });
      await assert.rejects(stranger.completeFromLink(link), LinkForAnotherLoginError);
      await owner.completeFromLink(link);
      await owner.me();
    });

    test(
      "a consumed link proven again is told apart as consumed",
      async () => {
        const storage = new MemoryStorage();
        const client = await SplitlinkClient.create({ issuer: server.url, signer: await signerFor("ES256"), storage });
        await client.startLogin(email("consumed"));
        const pending = (await storage.getItem("splitlink.pending_login"))!;
        const link = await readLoginLink((await client.pendingLogin())!.attemptId, { mailDir: server.mailDir });
        await client.completeFromLink(link);
        await storage.setItem("splitlink.pending_login", pending);
        await assert.rejects(client.completeFromLink(link), (error: unknown) => {
          assert.ok(error instanceof LoginAttemptEndedError);
          assert.equal(error.state, "consumed");
          return true;
        });
      },
    );
  });
}
