// The built package in a real browser: a page on another origin, allowed by the server's CORS
// setting, signs in with a non-extractable WebCrypto key kept in IndexedDB. Headless Chromium
// from the system's packages; the test is skipped without it, unless CI is set.

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { extname, join, normalize } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

import { readLoginLink } from "../src/testing.js";
import { freePort, startServer, type RunningServer } from "./support/server.js";

const CHROMIUM = "/usr/bin/chromium";
const PACKAGE_ROOT = fileURLToPath(new URL("../../", import.meta.url));
const missing = existsSync(CHROMIUM) ? undefined : `${CHROMIUM} is missing (make browser installs it)`;
if (missing !== undefined && process.env["CI"] !== undefined) {
  throw new Error(`${missing}; with CI set the browser test must run`);
}

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>splitlink browser test</title>
<script type="importmap">
{"imports": {
  "@noble/curves/": "/node_modules/@noble/curves/",
  "@noble/hashes/": "/node_modules/@noble/hashes/",
  "splitlink": "/dist/src/index.js"
}}
</script>
<script type="module">
  import * as splitlink from "splitlink";
  window.splitlink = splitlink;
  window.ready = true;
</script>`;

const TYPES: Record<string, string> = { ".js": "text/javascript", ".html": "text/html" };

/** Serves the page and the package's built files (and its dependencies) from one origin. */
async function staticSite(): Promise<{ origin: string; server: Server }> {
  const port = await freePort();
  const server = createServer(async (request, response) => {
    const path = normalize(decodeURIComponent(new URL(request.url ?? "/", "http://x").pathname));
    if (path === "/") {
      response.writeHead(200, { "Content-Type": "text/html" }).end(PAGE);
      return;
    }
    if (!path.startsWith("/dist/src/") && !path.startsWith("/node_modules/@noble/")) {
      response.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(join(PACKAGE_ROOT, path));
      response.writeHead(200, { "Content-Type": TYPES[extname(path)] ?? "application/octet-stream" }).end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  // `localhost`: another origin than the server's 127.0.0.1, and still a secure context.
  return { origin: `http://localhost:${port}`, server };
}

describe("in headless Chromium, from another origin allowed by CORS", { skip: missing ?? false }, () => {
  let api: RunningServer;
  let site: { origin: string; server: Server };
  let stranger: { origin: string; server: Server };
  let browser: Browser;

  before(async () => {
    [site, stranger] = await Promise.all([staticSite(), staticSite()]);
    api = await startServer({ SPLITLINK_CORS_ORIGINS: JSON.stringify([site.origin]) });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    });
  });

  after(async () => {
    await browser?.close();
    await api?.stop();
    site?.server.close();
    stranger?.server.close();
  });

  // One profile for every page, so that IndexedDB outlives a page as it does for a user.
  let profile: BrowserContext | undefined;

  async function open(origin: string): Promise<Page> {
    profile ??= await browser.newContext();
    const page = await profile.newPage();
    await page.goto(`${origin}/`);
    await page.waitForFunction(() => (window as unknown as { ready?: boolean }).ready === true);
    return page;
  }

  test("a page signs in with a non-extractable key kept in IndexedDB", async () => {
    const page = await open(site.origin);
    const email = `browser-${process.pid}@example.com`;
    const started = await page.evaluate(
      async ({ issuer, email }) => {
        const sl = (window as any).splitlink;
        const signer = await sl.loadOrCreateBrowserSigner();
        const client = await sl.SplitlinkClient.create({ issuer, signer });
        (window as any).client = client;
        const started = await client.startLogin(email, { deviceName: "Chromium" });
        let exported = "refused";
        try {
          await crypto.subtle.exportKey("jwk", signer.keyPair.privateKey);
          exported = "exported";
        } catch {}
        return {
          checkPhrase: started.checkPhrase,
          attemptId: (await client.pendingLogin()).attemptId,
          extractable: signer.keyPair.privateKey.extractable,
          exported,
          jkt: client.jkt,
        };
      },
      { issuer: api.url, email },
    );
    assert.equal(started.extractable, false);
    assert.equal(started.exported, "refused");
    assert.equal(started.checkPhrase.split(" ").length, 4);

    const link = await readLoginLink(started.attemptId, { mailDir: api.mailDir });
    const me = await page.evaluate(async (link) => {
      const client = (window as any).client;
      await client.completeFromLink(link);
      const me = await client.me();
      await client.refresh();
      const again = await client.me();
      return { email: me.user.email, keyAlg: me.session.keyAlg, same: again.session.id === me.session.id };
    }, link);
    assert.deepEqual(me, { email, keyAlg: "ES256", same: true });

    // The same key comes back from IndexedDB in a new page of the origin.
    const reloaded = await open(site.origin);
    const jkt = await reloaded.evaluate(async (issuer) => {
      const sl = (window as any).splitlink;
      const signer = await sl.loadOrCreateBrowserSigner();
      return (await sl.SplitlinkClient.create({ issuer, signer })).jkt;
    }, api.url);
    assert.equal(jkt, started.jkt);

    const loggedOut = await page.evaluate(async () => {
      const client = (window as any).client;
      const reasons: string[] = [];
      client.onSessionEnded((event: { reason: string }) => reasons.push(event.reason));
      await client.logout();
      return reasons;
    });
    assert.deepEqual(loggedOut, ["logout"]);
  });

  test("an exportable key put in the key's place in IndexedDB is replaced, and the app told", async () => {
    const page = await open(site.origin);
    const outcome = await page.evaluate(async () => {
      const sl = (window as any).splitlink;
      const keyName = "planted-key";
      const planted = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
      await new Promise<void>((resolve, reject) => {
        const open = indexedDB.open("splitlink", 1);
        open.onupgradeneeded = () => open.result.createObjectStore("keys");
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const put = open.result.transaction("keys", "readwrite").objectStore("keys").put(planted, keyName);
          put.onsuccess = () => {
            open.result.close();
            resolve();
          };
          put.onerror = () => reject(put.error);
        };
      });
      const replaced: string[] = [];
      const onKeyReplaced = (error: { code: string }) => replaced.push(error.code);
      const signer = await sl.loadOrCreateBrowserSigner({ keyName, onKeyReplaced });
      const again = await sl.loadOrCreateBrowserSigner({ keyName, onKeyReplaced });
      const plantedJwk = await crypto.subtle.exportKey("jwk", planted.publicKey);
      return {
        replaced,
        extractable: signer.keyPair.privateKey.extractable,
        kept: JSON.stringify(again.publicJwk) === JSON.stringify(signer.publicJwk),
        planted: signer.publicJwk.x === plantedJwk.x,
      };
    });
    assert.deepEqual(outcome, { replaced: ["unsafe_device_key"], extractable: false, kept: true, planted: false });
  });

  test("a page on an origin not on the list cannot reach the server", async () => {
    const page = await open(stranger.origin);
    const code = await page.evaluate(async (issuer) => {
      const sl = (window as any).splitlink;
      const client = await sl.SplitlinkClient.create({ issuer, signer: await sl.loadOrCreateBrowserSigner() });
      try {
        await client.startLogin("stranger@example.com");
        return "started";
      } catch (error) {
        return (error as { code?: string }).code;
      }
    }, api.url);
    assert.equal(code, "network_error");
  });
});
