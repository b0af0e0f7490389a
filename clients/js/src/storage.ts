/**
 * Where the SDK keeps the pending login (attempt id, device half) and the tokens: one small
 * asynchronous key-value interface, so that React Native apps can pass the Keychain / Keystore
 * (react-native-keychain, expo-secure-store) and Node apps a file. Values are strings.
 *
 * There is deliberately no `localStorage` adapter: any script of the page reads it, and the
 * device half and tokens are secrets.
 */

export interface SecureStorage {
  getItem(key: string): Promise<string | null>;
  setItem(key: string, value: string): Promise<void>;
  removeItem(key: string): Promise<void>;
  /**
   * Optional: run `critical` while no other holder of the lock `name` runs, in any process that
   * shares this storage (an app extension, a second process on one file). The client refreshes
   * its tokens inside it, so that two instances never refresh one token: the server takes that
   * for a stolen token and ends the session. Without it, browsers use `navigator.locks`, and
   * elsewhere only instances within one JavaScript runtime are kept apart.
   */
  withLock?<T>(name: string, critical: () => Promise<T>): Promise<T>;
}

/** Kept only for the life of the process: a reload signs the user out. */
export class MemoryStorage implements SecureStorage {
  readonly #items = new Map<string, string>();

  async getItem(key: string): Promise<string | null> {
    return this.#items.get(key) ?? null;
  }

  async setItem(key: string, value: string): Promise<void> {
    this.#items.set(key, value);
  }

  async removeItem(key: string): Promise<void> {
    this.#items.delete(key);
  }
}
