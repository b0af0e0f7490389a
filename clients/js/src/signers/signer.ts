/**
 * The one signing interface every device key sits behind: WebCrypto (a non-extractable key),
 * pure JavaScript (runtimes without `crypto.subtle`), or a native keystore key the app plugs in.
 */

import type { Algorithm, PublicJwk } from "../jwk.js";

export interface DeviceSigner {
  /** `ES256` for P-256 keys, `EdDSA` for Ed25519 keys (SPEC.md §4.2). */
  readonly alg: Algorithm;
  /** The public key: the RFC 7638 required members only. */
  readonly publicJwk: PublicJwk;
  /**
   * The JWS signature of the ASCII signing input: for ES256 the 64 bytes R‖S of ECDSA over
   * SHA-256 (not DER), for EdDSA the 64-byte RFC 8032 signature.
   */
  sign(signingInput: Uint8Array): Promise<Uint8Array>;
}
