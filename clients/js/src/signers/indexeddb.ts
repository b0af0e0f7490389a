/**
 * Browsers: the WebCrypto key pair kept in IndexedDB. IndexedDB stores the `CryptoKey` objects
 * themselves (structured clone), so a non-extractable key stays non-extractable and its bytes
 * never reach JavaScript. Never `localStorage`: it holds only strings, which would mean an
 * exportable key, and any script of the origin reads it.
 */

import { UnsafeDeviceKeyError, UnsupportedRuntimeError } from "../errors.js";
import { WebCryptoSigner } from "./webcrypto.js";

export interface BrowserKeyOptions {
  /** IndexedDB database name; one per app origin is enough. */
  readonly databaseName?: string;
  /** Entry name of the key pair within the database. */
  readonly keyName?: string;
  /**
   * Called when the stored entry was refused (`UnsafeDeviceKeyError`: an exportable key, or not
   * an ECDSA signing key; a script that once ran on the origin could have put it there) and a new
   * key took its place. Sessions bound to the old key are gone here: the user signs in again.
   */
  readonly onKeyReplaced?: (reason: UnsafeDeviceKeyError) => void;
}

const STORE = "keys";

export async function loadOrCreateBrowserSigner(options: BrowserKeyOptions = {}): Promise<WebCryptoSigner> {
  const db = await openDatabase(options.databaseName ?? "splitlink");
  try {
    const name = options.keyName ?? "device-key";
    const stored = await request<CryptoKeyPair | undefined>(
      db.transaction(STORE, "readonly").objectStore(STORE).get(name),
    );
    let refused: UnsafeDeviceKeyError | undefined;
    if (stored !== undefined) {
      try {
        return await WebCryptoSigner.fromKeyPair(stored);
      } catch (error) {
        if (!(error instanceof UnsafeDeviceKeyError)) {
          throw error;
        }
        refused = error;
      }
    }
    const signer = await WebCryptoSigner.generate();
    await request(db.transaction(STORE, "readwrite").objectStore(STORE).put(signer.keyPair, name));
    if (refused !== undefined) {
      options.onKeyReplaced?.(refused);
    }
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
