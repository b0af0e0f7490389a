/**
 * One token refresh at a time among the clients that share a storage.
 *
 * Within one JavaScript runtime, clients given the same storage object queue on it. Across
 * runtimes (tabs, workers, processes) the storage's own `withLock` serialises them when it has
 * one (`FileStorage`: a lock file), and `navigator.locks` where the runtime has it (browsers).
 */

import type { SecureStorage } from "./storage.js";

const queues = new WeakMap<SecureStorage, Map<string, Promise<unknown>>>();

export async function withRefreshLock<T>(storage: SecureStorage, name: string, critical: () => Promise<T>): Promise<T> {
  let byName = queues.get(storage);
  if (byName === undefined) {
    byName = new Map();
    queues.set(storage, byName);
  }
  const before = byName.get(name) ?? Promise.resolve();
  const run = before.then(() => acrossRuntimes(storage, name, critical));
  const settled = run.catch(() => undefined);
  byName.set(name, settled);
  try {
    return await run;
  } finally {
    if (byName.get(name) === settled) {
      byName.delete(name);
    }
  }
}

function acrossRuntimes<T>(storage: SecureStorage, name: string, critical: () => Promise<T>): Promise<T> {
  if (storage.withLock !== undefined) {
    return storage.withLock(name, critical);
  }
  const locks = (globalThis as { navigator?: { locks?: LockManager } }).navigator?.locks;
  if (locks !== undefined) {
    // The lock is held until the promise `critical` returns settles.
    return locks.request(name, critical).then((result) => result);
  }
  return critical();
}
