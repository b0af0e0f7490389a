/**
 * Browsers: the WebCrypto key pair kept in IndexedDB. IndexedDB stores the `CryptoKey` objects
 * themselves (structured clone), so a non-extractable key stays non-extractable and its bytes
 * never reach JavaScript. Never `localStorage`: it holds only strings, which would mean an
 * exportable key, and any script of the origin reads it.
 */

import { UnsupportedRuntimeError } from "../errors.js";
import { WebCryptoSigner } from "./webcrypto.js";

export interface BrowserKeyOptions {
  /** IndexedDB database name; one per app origin is enough. */
  readonly databaseName?: string;
  /** Entry name of the key pair within the database. */
  readonly keyName?: string;
}

const STORE = "keys";

export async function loadOrCreateBrowserSigner(options: BrowserKeyOptions = {}): Promise<WebCryptoSigner> {
  const db = await openDatabase(options.databaseName ?? "splitlink");
  try {
    const name = options.keyName ?? "device-key";
    const stored = await request<CryptoKeyPair | undefined>(
      db.transaction(STORE, "readonly").objectStore(STORE).get(name),
    );
    if (stored !== undefined) {
      return await WebCryptoSigner.fromKeyPair(stored);
    }
    const signer = await WebCryptoSigner.generate();
    await request(db.transaction(STORE, "readwrite").objectStore(STORE).put(signer.keyPair, name));
    return signer;
  } finally {
    db.close();
  }
}

/** Forget the device key (after a logout, if the app wants a new key for the next login). */
export async function deleteBrowserSigner(options: BrowserKeyOptions = {}): Promise<void> {
  const db = await openDatabase(options.databaseName ?? "splitlink");
  try {
    await request(db.transaction(STORE, "readwrite").objectStore(STORE).delete(options.keyName ?? "device-key"));
  } finally {
    db.close();
  }
}

function openDatabase(name: string): Promise<IDBDatabase> {
  const factory = (globalThis as { indexedDB?: IDBFactory }).indexedDB;
  if (factory === undefined) {
    throw new UnsupportedRuntimeError("unsupported_runtime", "IndexedDB is not available here");
  }
  const open = factory.open(name, 1);
  open.onupgradeneeded = () => {
    open.result.createObjectStore(STORE);
  };
  return request(open);
}

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error("IndexedDB request failed"));
  });
}
