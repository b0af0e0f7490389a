/** Strict, canonical, unpadded base64url (RFC 7515 §2; SPEC.md §3.1). */

import { SplitlinkError } from "./errors.js";

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const VALUES: ReadonlyMap<string, number> = new Map([...ALPHABET].map((c, i) => [c, i]));

export function base64urlEncode(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out += ALPHABET[n >> 18]! + ALPHABET[(n >> 12) & 63]! + ALPHABET[(n >> 6) & 63]! + ALPHABET[n & 63]!;
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i]! << 16;
    out += ALPHABET[n >> 18]! + ALPHABET[(n >> 12) & 63]!;
  } else if (rest === 2) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
    out += ALPHABET[n >> 18]! + ALPHABET[(n >> 12) & 63]! + ALPHABET[(n >> 6) & 63]!;
  }
  return out;
}

/**
 * Decode, refusing anything but the one canonical spelling: other characters, padding, a length
 * of 1 mod 4, non-zero unused bits, and (when `length` is given) another decoded length.
 */
export function base64urlDecode(text: unknown, length?: number): Uint8Array {
  if (typeof text !== "string") {
    throw refused("a base64url value must be a string");
  }
  if (text.length % 4 === 1) {
    throw refused("impossible base64url length");
  }
  const values: number[] = [];
  for (const c of text) {
    const v = VALUES.get(c);
    if (v === undefined) {
      throw refused("base64url allows only A-Z a-z 0-9 - _");
    }
    values.push(v);
  }
  const out = new Uint8Array(Math.floor((values.length * 6) / 8));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (const v of values) {
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  if ((acc & ((1 << bits) - 1)) !== 0) {
    throw refused("non-zero unused bits: not the canonical spelling");
  }
  if (length !== undefined && out.length !== length) {
    throw refused(`expected ${length} bytes`);
  }
  return out;
}

export function isCanonicalBase64url(text: unknown, length: number): text is string {
  try {
    base64urlDecode(text, length);
    return true;
  } catch {
    return false;
  }
}

function refused(message: string): SplitlinkError {
  return new SplitlinkError("invalid_request", message);
}
