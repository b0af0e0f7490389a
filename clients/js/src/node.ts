/**
 * Node-only adapters: `FileStorage` keeps the pending login and tokens in one JSON file that
 * only its owner can read (mode 0600), written whole through a rename so that a crash never
 * leaves half a file.
 */

import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { dirname } from "node:path";

import type { SecureStorage } from "./storage.js";

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

  // Writes run one after another, so two updates never lose each other's change.
  #update(change: (items: Record<string, string>) => void): Promise<void> {
    const next = this.#queue.then(async () => {
      const items = await this.#load();
      change(items);
      await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
      const temporary = `${this.path}.${process.pid}.partial`;
      await writeFile(temporary, JSON.stringify(items), { mode: 0o600 });
      await chmod(temporary, 0o600);
      await rename(temporary, this.path);
    });
    this.#queue = next.catch(() => undefined);
    return next;
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
