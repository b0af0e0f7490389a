/**
 * A key held by the platform keystore (Secure Enclave, Android StrongBox / TEE), reached through
 * a native module the app provides. The private key never enters JavaScript: the bridge returns
 * the public key once and a signature for each proof.
 */

import { base64urlDecode, base64urlEncode } from "../base64url.js";
import { SplitlinkError } from "../errors.js";
import { canonicalPublicJwk, type PublicJwk, algorithmOf } from "../jwk.js";
import type { Algorithm } from "../jwk.js";
import type { DeviceSigner } from "./signer.js";

export interface NativeKeyBridge {
  /** The public key as a JWK (`kty`, `crv`, `x`, `y`); P-256 for hardware keys. */
  getPublicJwk(): Promise<Readonly<Record<string, unknown>>>;
  /**
   * Sign the base64url bytes with the hardware key (ECDSA P-256 with SHA-256, or Ed25519) and
   * return the signature in base64url. ECDSA signatures may be DER, as iOS
   * (`SecKeyCreateSignature`, `.ecdsaSignatureMessageX962SHA256`) and Android
   * (`Signature.getInstance("SHA256withECDSA")`) return them; they are converted to R‖S here.
   */
  sign(dataBase64url: string): Promise<string>;
}

class NativeSigner implements DeviceSigner {
  constructor(
    readonly alg: Algorithm,
    readonly publicJwk: PublicJwk,
    private readonly bridge: NativeKeyBridge,
  ) {}

  async sign(signingInput: Uint8Array): Promise<Uint8Array> {
    const raw = base64urlDecode(await this.bridge.sign(base64urlEncode(signingInput)));
    if (this.alg === "EdDSA" || raw.length === 64) {
      return raw;
    }
    return derToJoseSignature(raw);
  }
}

export async function createNativeSigner(bridge: NativeKeyBridge): Promise<DeviceSigner> {
  const jwk = canonicalPublicJwk(await bridge.getPublicJwk());
  return new NativeSigner(algorithmOf(jwk), jwk, bridge);
}

/** An ASN.1 DER `SEQUENCE { INTEGER r, INTEGER s }` as the 64 bytes R‖S of JWS (RFC 7518 §3.4). */
export function derToJoseSignature(der: Uint8Array): Uint8Array {
  let offset = 0;
  const take = (): number => {
    const value = der[offset++];
    if (value === undefined) {
      throw bad();
    }
    return value;
  };
  if (take() !== 0x30) {
    throw bad();
  }
  let length = take();
  if (length === 0x81) {
    length = take();
  }
  if (length !== der.length - offset) {
    throw bad();
  }
  const out = new Uint8Array(64);
  for (const at of [0, 32]) {
    if (take() !== 0x02) {
      throw bad();
    }
    let size = take();
    let start = offset;
    offset += size;
    if (offset > der.length || size === 0) {
      throw bad();
    }
    while (size > 32 && der[start] === 0) {
      start++;
      size--;
    }
    if (size > 32) {
      throw bad();
    }
    out.set(der.subarray(start, start + size), at + 32 - size);
  }
  if (offset !== der.length) {
    throw bad();
  }
  return out;
}

function bad(): SplitlinkError {
  return new SplitlinkError("invalid_request", "the native signature is neither R‖S nor DER ECDSA");
}
