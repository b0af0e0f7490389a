/**
 * P-256 and Ed25519 in pure JavaScript (@noble/curves), for Hermes and any runtime without
 * `crypto.subtle`. The key is a software key: it is as safe as the storage the app keeps its
 * private JWK in (Keychain / Keystore through a secure-storage adapter, never `localStorage`).
 */

import { ed25519 } from "@noble/curves/ed25519.js";
import { p256 } from "@noble/curves/nist.js";

import { base64urlDecode, base64urlEncode } from "../base64url.js";
import { SplitlinkError } from "../errors.js";
import type { Algorithm, PublicJwk } from "../jwk.js";
import { randomBytes, requireSecureRandom } from "../random.js";
import type { SecureStorage } from "../storage.js";
import type { DeviceSigner } from "./signer.js";

export type PrivateJwk =
  | { readonly kty: "EC"; readonly crv: "P-256"; readonly x: string; readonly y: string; readonly d: string }
  | { readonly kty: "OKP"; readonly crv: "Ed25519"; readonly x: string; readonly d: string };

export class PureSigner implements DeviceSigner {
  readonly alg: Algorithm;
  readonly publicJwk: PublicJwk;
  readonly #secret: Uint8Array;

  private constructor(alg: Algorithm, secret: Uint8Array) {
    // @noble/curves blinds scalar multiplications with fresh random bytes.
    requireSecureRandom();
    this.alg = alg;
    this.#secret = secret;
    if (alg === "ES256") {
      const point = p256.getPublicKey(secret, false);
      this.publicJwk = {
        crv: "P-256",
        kty: "EC",
        x: base64urlEncode(point.subarray(1, 33)),
        y: base64urlEncode(point.subarray(33, 65)),
      };
    } else {
      this.publicJwk = { crv: "Ed25519", kty: "OKP", x: base64urlEncode(ed25519.getPublicKey(secret)) };
    }
  }

  /** A new key from `crypto.getRandomValues` (refused, with the fix named, where it is missing). */
  static generate(alg: Algorithm = "ES256"): PureSigner {
    // P-256: 48 random bytes reduced modulo n (FIPS 186-5 A.4.1), so the bias is negligible.
    const secret = alg === "ES256" ? p256.utils.randomSecretKey(randomBytes(48)) : randomBytes(32);
    return new PureSigner(alg, secret);
  }

  /** From the raw private key: the P-256 scalar or the Ed25519 seed, 32 bytes in base64url. */
  static fromPrivateKey(alg: Algorithm, d: string): PureSigner {
    return new PureSigner(alg, base64urlDecode(d, 32));
  }

  static fromPrivateJwk(jwk: PrivateJwk): PureSigner {
    const alg: Algorithm = jwk.kty === "EC" && jwk.crv === "P-256" ? "ES256" : "EdDSA";
    if (alg === "EdDSA" && !(jwk.kty === "OKP" && jwk.crv === "Ed25519")) {
      throw new SplitlinkError("invalid_request", "a device key is P-256 or Ed25519");
    }
    const signer = new PureSigner(alg, base64urlDecode(jwk.d, 32));
    if (signer.publicJwk.x !== jwk.x || (jwk.kty === "EC" && signer.publicJwk.kty === "EC" && signer.publicJwk.y !== jwk.y)) {
      throw new SplitlinkError("invalid_request", "the private key does not match its public members");
    }
    return signer;
  }

  /** The private key as a JWK, for secure storage only. */
  exportPrivateJwk(): PrivateJwk {
    const d = base64urlEncode(this.#secret);
    const jwk = this.publicJwk;
    return jwk.kty === "EC" ? { ...jwk, d } : { ...jwk, d };
  }

  async sign(signingInput: Uint8Array): Promise<Uint8Array> {
    requireSecureRandom();
    // ES256: RFC 6979 deterministic nonces, SHA-256 prehash, compact R‖S.
    return this.alg === "ES256"
      ? p256.sign(signingInput, this.#secret, { prehash: true, format: "compact" })
      : ed25519.sign(signingInput, this.#secret);
  }
}

export interface PureSignerStorageOptions {
  readonly alg?: Algorithm;
  /** Storage key of the private JWK. */
  readonly key?: string;
}

/** The key kept in secure storage (Keychain, Keystore), created on first use. */
export async function loadOrCreatePureSigner(
  storage: SecureStorage,
  options: PureSignerStorageOptions = {},
): Promise<PureSigner> {
  const key = options.key ?? "splitlink.device_key";
  const stored = await storage.getItem(key);
  if (stored !== null) {
    return PureSigner.fromPrivateJwk(JSON.parse(stored) as PrivateJwk);
  }
  const signer = PureSigner.generate(options.alg ?? "ES256");
  await storage.setItem(key, JSON.stringify(signer.exportPrivateJwk()));
  return signer;
}
