/** UTF-8 and SHA-256 helpers shared by proofs, thumbprints and the check phrase. */

import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";

const encoder = new TextEncoder();

export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

// Synchronous and the same in every runtime, so a proof never waits on `crypto.subtle`.
export function sha256(data: Uint8Array): Uint8Array {
  return nobleSha256(data);
}
