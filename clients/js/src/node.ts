/**
 * Node-only adapters: `FileStorage` keeps the pending login and tokens in one JSON file that
 * only its owner can read (mode 0600), written whole through a rename so that a crash never
 * leaves half a file. Its lock file lets instances in several processes that share the file
 * refresh the tokens one at a time.
 */

import { randomBytes, randomUUID } from "node:crypto";
import { chmod, mkdir, open, readFile, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { dirname } from "node:path";

import { TemporarilyUnavailableError } from "./errors.js";
import type { SecureStorage } from "./storage.js";

// A holder touches its lock file this often; one untouched for `STALE` belongs to a process
// that died holding it, and is taken over.
const LOCK_HEARTBEAT_MS = 2_000;
const LOCK_STALE_MS = 10_000;
const LOCK_POLL_MS = 20;
const LOCK_WAIT_MS = 60_000;

export class FileStorage implements SecureStorage {
  #queue: Promise<unknown> = Promise.resolve();

  constructor(readonly path: string) {}

  async getItem(key: string): Promise<string | null> {
    const items = await this.#load();
    return items[key] ?? null;
  }

  setItem(key: string, value: string): Promise<void> {
    return this.#update((items) => {
      items[key] = value;
    });
  }

  removeItem(key: string): Promise<void> {
    return this.#update((items) => {
      delete items[key];
    });
  }

  /**
   * Run `critical` while holding `<path>.lock`, created exclusively (`O_EXCL`), so that one
   * holder at a time runs, in this process or any other. A lock whose holder stopped keeping it
   * fresh (it crashed) is taken over; waiting longer than a minute fails with
   * `TemporarilyUnavailableError`. One lock per file, whatever the `name`.
   */
  async withLock<T>(_name: string, critical: () => Promise<T>): Promise<T> {
    const release = await this.#acquire();
    try {
      return await critical();
    } finally {
      await release();
    }
  }

  // Writes run one after another, so two updates never lose each other's change.
  #update(change: (items: Record<string, string>) => void): Promise<void> {
    const next = this.#queue.then(async () => {
      const items = await this.#load();
      change(items);
      await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
      // Unique, so that writers sharing the file (other objects, other processes) never write
      // into one temporary file.
      const temporary = `${this.path}.${process.pid}.${randomBytes(6).toString("hex")}.partial`;
      await writeFile(temporary, JSON.stringify(items), { mode: 0o600 });
      await chmod(temporary, 0o600);
      await rename(temporary, this.path);
    });
    this.#queue = next.catch(() => undefined);
    return next;
  }

  async #acquire(): Promise<() => Promise<void>> {
    const lockPath = `${this.path}.lock`;
    const owner = randomUUID();
    await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (;;) {
      try {
        const handle = await open(lockPath, "wx", 0o600);
        try {
          await handle.writeFile(owner);
        } finally {
          await handle.close();
        }
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") {
          throw error;
        }
      }
      await breakIfStale(lockPath);
      if (Date.now() > deadline) {
        throw new TemporarilyUnavailableError(`${lockPath} has been held for a minute; try again later`);
      }
      await new Promise((resolve) => setTimeout(resolve, LOCK_POLL_MS));
    }
    const heartbeat = setInterval(() => {
      const now = new Date();
      utimes(lockPath, now, now).catch(() => undefined);
    }, LOCK_HEARTBEAT_MS);
    heartbeat.unref();
    return async () => {
      clearInterval(heartbeat);
      // Had this holder stalled past `STALE`, the lock may be another's now: leave that one.
      if ((await readFile(lockPath, "utf8").catch(() => null)) === owner) {
        await rm(lockPath, { force: true });
      }
    };
  }

  async #load(): Promise<Record<string, string>> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") {
        return {};
      }
      throw error;
    }
    const parsed: unknown = JSON.parse(text);
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new Error(`${this.path} is not a storage file`);
    }
    return Object.fromEntries(
      Object.entries(parsed as Record<string, unknown>).filter((e): e is [string, string] => typeof e[1] === "string"),
    );
  }
}

/** Remove the lock file if nobody has touched it for `LOCK_STALE_MS`. */
async function breakIfStale(lockPath: string): Promise<void> {
  const seen = await stat(lockPath).catch(() => null);
  if (seen === null || Date.now() - seen.mtimeMs < LOCK_STALE_MS) {
    return;
  }
  // Another waiter may have broken it and taken a new one meanwhile: remove only the file seen.
  const again = await stat(lockPath).catch(() => null);
  if (again !== null && again.ino === seen.ino && again.mtimeMs === seen.mtimeMs) {
    await rm(lockPath, { force: true });
  }
}
