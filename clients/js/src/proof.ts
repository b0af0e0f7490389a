/** DPoP proofs (RFC 9449 §4.2; SPEC.md §4.1): a fresh one for every request, retries included. */

import { base64urlEncode } from "./base64url.js";
import { sha256, utf8 } from "./encoding.js";
import { normalizeHtu } from "./htu.js";
import { randomBytes } from "./random.js";
import type { DeviceSigner } from "./signers/signer.js";

export interface ProofRequest {
  readonly method: string;
  /** The request URL; query and fragment are left out of `htu`. */
  readonly url: string;
  /** Seconds since the epoch, on the server's clock as far as the client knows it. */
  readonly iat: number;
  /** Defaults to 128 random bits (SPEC.md §4.1 asks for at least 96). */
  readonly jti?: string;
  /** Bound into `ath` when the request presents an access token. */
  readonly accessToken?: string;
  readonly nonce?: string;
}

/** base64url(SHA-256(ASCII(access token))): the `ath` claim (RFC 9449 §4.2). */
export function accessTokenHash(accessToken: string): string {
  return base64urlEncode(sha256(utf8(accessToken)));
}

/** The URL as `htu`: the server compares it after the same normalization (SPEC.md §4.3). */
export function htuOf(url: string): string {
  return normalizeHtu(url);
}

export async function createDpopProof(signer: DeviceSigner, request: ProofRequest): Promise<string> {
  // Member order is fixed so that the shared vectors' known answers are reproduced exactly.
  const header = { typ: "dpop+jwt", alg: signer.alg, jwk: signer.publicJwk };
  const claims: Record<string, string | number> = {
    jti: request.jti ?? base64urlEncode(randomBytes(16)),
    htm: request.method,
    htu: htuOf(request.url),
    iat: Math.floor(request.iat),
  };
  if (request.accessToken !== undefined) {
    claims["ath"] = accessTokenHash(request.accessToken);
  }
  if (request.nonce !== undefined) {
    claims["nonce"] = request.nonce;
  }
  const signingInput = `${segment(header)}.${segment(claims)}`;
  const signature = await signer.sign(utf8(signingInput));
  return `${signingInput}.${base64urlEncode(signature)}`;
}

function segment(value: unknown): string {
  return base64urlEncode(utf8(JSON.stringify(value)));
}
