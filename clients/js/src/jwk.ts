/** Public device keys (SPEC.md §4.2) and their RFC 7638 thumbprints. */

import { base64urlEncode, base64urlDecode } from "./base64url.js";
import { sha256, utf8 } from "./encoding.js";
import { SplitlinkError } from "./errors.js";

export type Algorithm = "ES256" | "EdDSA";

export interface EcPublicJwk {
  readonly kty: "EC";
  readonly crv: "P-256";
  readonly x: string;
  readonly y: string;
}

export interface OkpPublicJwk {
  readonly kty: "OKP";
  readonly crv: "Ed25519";
  readonly x: string;
}

/** A device key as it goes into a proof header: the RFC 7638 required members only. */
export type PublicJwk = EcPublicJwk | OkpPublicJwk;

// RFC 7638 §3.2: the required members of each key type, which alone are hashed.
const REQUIRED_MEMBERS: Readonly<Record<string, readonly string[]>> = {
  EC: ["crv", "kty", "x", "y"],
  OKP: ["crv", "kty", "x"],
  RSA: ["e", "kty", "n"],
};

/** The exact JSON that RFC 7638 hashes: required members, sorted, no whitespace. */
export function thumbprintInput(key: PublicJwk | Readonly<Record<string, unknown>>): string {
  const jwk = key as Readonly<Record<string, unknown>>;
  const members = typeof jwk["kty"] === "string" ? REQUIRED_MEMBERS[jwk["kty"]] : undefined;
  if (members === undefined) {
    throw new SplitlinkError("invalid_request", "unsupported key type for a thumbprint");
  }
  const parts = members.map((name) => {
    const value = jwk[name];
    if (typeof value !== "string") {
      throw new SplitlinkError("invalid_request", `the key lacks its ${name} member`);
    }
    return `${JSON.stringify(name)}:${JSON.stringify(value)}`;
  });
  return `{${parts.join(",")}}`;
}

export function jwkThumbprint(jwk: PublicJwk | Readonly<Record<string, unknown>>): string {
  return base64urlEncode(sha256(utf8(thumbprintInput(jwk))));
}

export function algorithmOf(jwk: PublicJwk): Algorithm {
  return jwk.kty === "EC" ? "ES256" : "EdDSA";
}

/** The required members only, in RFC 7638 order, after checking their encoding and length. */
export function canonicalPublicJwk(jwk: Readonly<Record<string, unknown>>): PublicJwk {
  if (jwk["kty"] === "EC" && jwk["crv"] === "P-256") {
    base64urlDecode(jwk["x"], 32);
    base64urlDecode(jwk["y"], 32);
    return { crv: "P-256", kty: "EC", x: jwk["x"] as string, y: jwk["y"] as string };
  }
  if (jwk["kty"] === "OKP" && jwk["crv"] === "Ed25519") {
    base64urlDecode(jwk["x"], 32);
    return { crv: "Ed25519", kty: "OKP", x: jwk["x"] as string };
  }
  throw new SplitlinkError("invalid_dpop_proof", "a device key is P-256 or Ed25519");
}
