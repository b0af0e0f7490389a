/**
 * A P-256 key in the Web Crypto API, created non-extractable: the private key cannot be read out,
 * only used. In browsers keep its `CryptoKeyPair` in IndexedDB (`indexeddb.ts`), which stores the
 * key object itself, never its bytes.
 */

import { base64urlDecode } from "../base64url.js";
import { UnsafeDeviceKeyError, UnsupportedRuntimeError } from "../errors.js";
import type { EcPublicJwk } from "../jwk.js";
import type { DeviceSigner } from "./signer.js";

const ECDSA_P256 = { name: "ECDSA", namedCurve: "P-256" } as const;
const ECDSA_SHA256 = { name: "ECDSA", hash: "SHA-256" } as const;

export function subtleCrypto(): SubtleCrypto {
  const subtle = (globalThis as { crypto?: { subtle?: SubtleCrypto } }).crypto?.subtle;
  if (subtle === undefined || subtle === null) {
    throw new UnsupportedRuntimeError(
      "unsupported_runtime",
      "crypto.subtle is not available in this runtime (Hermes, or a page outside a secure " +
        "context); use PureSigner, or a native keystore signer through createNativeSigner",
    );
  }
  return subtle;
}

export function hasSubtleCrypto(): boolean {
  return (globalThis as { crypto?: { subtle?: unknown } }).crypto?.subtle != null;
}

export class WebCryptoSigner implements DeviceSigner {
  readonly alg = "ES256" as const;

  private constructor(
    readonly keyPair: CryptoKeyPair,
    readonly publicJwk: EcPublicJwk,
  ) {}

  /** A new P-256 key whose private half is not extractable. */
  static async generate(): Promise<WebCryptoSigner> {
    const pair = await subtleCrypto().generateKey(ECDSA_P256, false, ["sign", "verify"]);
    return WebCryptoSigner.fromKeyPair(pair);
  }

  /**
   * A signer for an existing pair, refused with `UnsafeDeviceKeyError` unless its private key is
   * a non-extractable ECDSA key usable only to sign.
   */
  static async fromKeyPair(keyPair: CryptoKeyPair): Promise<WebCryptoSigner> {
    requireSigningPair(keyPair);
    const jwk = await subtleCrypto().exportKey("jwk", keyPair.publicKey);
    if (jwk.kty !== "EC" || jwk.crv !== "P-256" || jwk.x === undefined || jwk.y === undefined) {
      throw new UnsupportedRuntimeError("unsupported_runtime", "the key pair is not P-256");
    }
    base64urlDecode(jwk.x, 32);
    base64urlDecode(jwk.y, 32);
    return new WebCryptoSigner(keyPair, { crv: "P-256", kty: "EC", x: jwk.x, y: jwk.y });
  }

  async sign(signingInput: Uint8Array): Promise<Uint8Array> {
    // Web Crypto returns ECDSA signatures as R‖S (IEEE P1363), the JWS form.
    const signature = await subtleCrypto().sign(ECDSA_SHA256, this.keyPair.privateKey, signingInput as BufferSource);
    return new Uint8Array(signature);
  }
}

function requireSigningPair(keyPair: CryptoKeyPair): void {
  const { privateKey, publicKey } = (keyPair ?? {}) as Partial<CryptoKeyPair>;
  if (!isEcdsaKey(privateKey, "private") || !isEcdsaKey(publicKey, "public")) {
    throw new UnsafeDeviceKeyError("the device key is not an ECDSA key pair");
  }
  if (privateKey.extractable !== false) {
    throw new UnsafeDeviceKeyError("the device key's private half can be exported");
  }
  if (privateKey.usages.length !== 1 || privateKey.usages[0] !== "sign") {
    throw new UnsafeDeviceKeyError("the device key may be used for more than signing");
  }
}

function isEcdsaKey(key: CryptoKey | undefined, type: KeyType): key is CryptoKey {
  return (
    typeof key === "object" &&
    key !== null &&
    key.type === type &&
    key.algorithm?.name === "ECDSA" &&
    Array.isArray(key.usages)
  );
}
