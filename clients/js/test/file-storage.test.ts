// FileStorage shared by several instances and processes: whole-file writes that never collide,
// and the lock file that lets one token refresh run at a time.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, utimesSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";

import { FileStorage } from "../src/node.js";

const NODE_MODULE = new URL("../src/node.js", import.meta.url).href;
const directory = mkdtempSync(join(tmpdir(), "splitlink-file-storage-"));
let files = 0;
const freshPath = (): string => join(directory, `storage-${++files}.json`);

after(() => rmSync(directory, { recursive: true, force: true }));

/** A second Node process that takes the lock of `path`, says "held", then runs `then`. */
function holder(path: string, then: string) {
  const script = `
    import { FileStorage } from ${JSON.stringify(NODE_MODULE)};
    await new FileStorage(${JSON.stringify(path)}).withLock("refresh", async () => {
      process.stdout.write("held\\n");
      ${then}
    });`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  const held = new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (chunk: Buffer) => chunk.toString().includes("held") && resolve());
    child.once("exit", () => reject(new Error("the holder exited before taking the lock")));
  });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { held, exited, output: () => output };
}

test("two FileStorage objects on one file write concurrently without losing the file", async () => {
  const path = freshPath();
  const one = new FileStorage(path);
  const two = new FileStorage(path);
  await Promise.all(
    Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? one : two).setItem(`key-${i % 2}`, `value-${i}`)),
  );
  const items = JSON.parse(readFileSync(path, "utf8")) as Record<string, string>;
  assert.ok(Object.keys(items).length > 0);
  assert.ok(Object.values(items).every((value) => /^value-\d+$/.test(value)));
});

test("the lock lets one holder in at a time, across processes", async () => {
  const path = freshPath();
  // The other process says when it leaves its critical section, while it still holds the lock.
  const other = holder(
    path,
    "await new Promise((resolve) => setTimeout(resolve, 400)); process.stdout.write(`leaving ${Date.now()}\\n`);",
  );
  await other.held;
  let enteredAt = 0;
  await new FileStorage(path).withLock("refresh", async () => {
    enteredAt = Date.now();
  });
  await other.exited;
  const leaving = /leaving (\d+)/.exec(other.output());
  assert.ok(leaving, other.output());
  // This process got in only once the other had left: never both at once.
  assert.ok(enteredAt >= Number(leaving[1]), `${enteredAt} < ${leaving[1]}`);
  assert.equal(existsSync(`${path}.lock`), false);
});

test("the lock of a process killed while holding it is taken over once it goes stale", async () => {
  const path = freshPath();
  const other = holder(path, 'process.kill(process.pid, "SIGKILL");');
  await other.held.catch(() => undefined);
  await other.exited;
  assert.equal(existsSync(`${path}.lock`), true);
  // Nobody keeps the lock fresh any more; let a minute pass for it.
  const minuteAgo = new Date(Date.now() - 60_000);
  utimesSync(`${path}.lock`, minuteAgo, minuteAgo);
  const started = Date.now();
  const value = await new FileStorage(path).withLock("refresh", async () => "ran");
  assert.equal(value, "ran");
  assert.ok(Date.now() - started < 5_000);
});

test("an error inside the lock releases it", async () => {
  const path = freshPath();
  const storage = new FileStorage(path);
  await assert.rejects(storage.withLock("refresh", async () => Promise.reject(new Error("boom"))), /boom/);
  assert.equal(await storage.withLock("refresh", async () => "again"), "again");
});
