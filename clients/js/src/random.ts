/**
 * Secret randomness: `crypto.getRandomValues` or nothing.
 *
 * Keys, `jti` values and anything else secret come from the platform CSPRNG. A runtime without
 * one (Hermes before a polyfill is installed) is refused with an error that names the fix; there
 * is no fallback to `Math.random`, whose output can be predicted.
 */

import { UnsupportedRuntimeError } from "./errors.js";

const MISSING =
  "crypto.getRandomValues is not available in this runtime. In React Native, install " +
  "react-native-get-random-values and import it first in your entry file " +
  '(import "react-native-get-random-values"); in other runtimes, provide the Web Crypto API.';

interface RandomSource {
  getRandomValues<T extends ArrayBufferView | null>(array: T): T;
}

function randomSource(): RandomSource {
  const source = (globalThis as { crypto?: Partial<RandomSource> }).crypto;
  if (source === undefined || typeof source.getRandomValues !== "function") {
    throw new UnsupportedRuntimeError("no_secure_random", MISSING);
  }
  return source as RandomSource;
}

/** Fails at once, with the fix in its message, where secure randomness is missing. */
export function requireSecureRandom(): void {
  randomSource();
}

export function randomBytes(length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  randomSource().getRandomValues(bytes);
  return bytes;
}
