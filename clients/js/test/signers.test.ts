// The three kinds of signer behind DeviceSigner, secure randomness, and proofs they sign.

import assert from "node:assert/strict";
import { test } from "node:test";

import { ed25519 } from "@noble/curves/ed25519.js";
import { p256 } from "@noble/curves/nist.js";

import {
  PureSigner,
  SplitlinkError,
  WebCryptoSigner,
  base64urlDecode,
  base64urlEncode,
  createDpopProof,
  createNativeSigner,
  derToJoseSignature,
  jwkThumbprint,
  loadOrCreatePureSigner,
  MemoryStorage,
  randomBytes,
  SplitlinkClient,
  type DeviceSigner,
  type PublicJwk,
} from "../src/index.js";

const message = new TextEncoder().encode("header.payload");

function verifies(jwk: PublicJwk, data: Uint8Array, signature: Uint8Array): boolean {
  if (jwk.kty === "EC") {
    const point = new Uint8Array([4, ...base64urlDecode(jwk.x, 32), ...base64urlDecode(jwk.y, 32)]);
    return p256.verify(signature, data, point, { prehash: true, format: "compact", lowS: false });
  }
  return ed25519.verify(signature, data, base64urlDecode(jwk.x, 32), { zip215: false });
}

function decodeSegment(segment: string): Record<string, unknown> {
  return JSON.parse(new TextDecoder().decode(base64urlDecode(segment))) as Record<string, unknown>;
}

test("a WebCrypto key is created non-extractable and signs ES256 as R||S", async () => {
  const signer = await WebCryptoSigner.generate();
  assert.equal(signer.keyPair.privateKey.extractable, false);
  await assert.rejects(crypto.subtle.exportKey("jwk", signer.keyPair.privateKey));
  const signature = await signer.sign(message);
  assert.equal(signature.length, 64);
  assert.ok(verifies(signer.publicJwk, message, signature));
  assert.deepEqual(Object.keys(signer.publicJwk), ["crv", "kty", "x", "y"]);
});

const P256 = { name: "ECDSA", namedCurve: "P-256" } as const;
const isUnsafeKey = (error: unknown): boolean =>
  error instanceof SplitlinkError && error.code === "unsafe_device_key";

test("a WebCrypto key pair whose private key can be exported is refused", async () => {
  const readable = await crypto.subtle.generateKey(P256, true, ["sign", "verify"]);
  await assert.rejects(WebCryptoSigner.fromKeyPair(readable), isUnsafeKey);
});

test("a WebCrypto key pair made for another use than ECDSA signing is refused", async () => {
  const ecdh = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, false, ["deriveBits"]);
  await assert.rejects(WebCryptoSigner.fromKeyPair(ecdh), isUnsafeKey);
  const pair = await crypto.subtle.generateKey(P256, false, ["sign", "verify"]);
  await assert.rejects(
    WebCryptoSigner.fromKeyPair({ privateKey: pair.publicKey, publicKey: pair.publicKey }),
    isUnsafeKey,
  );
  const other = await crypto.subtle.generateKey(P256, false, ["sign", "verify"]);
  const accepted = await WebCryptoSigner.fromKeyPair({ privateKey: other.privateKey, publicKey: other.publicKey });
  assert.equal(accepted.keyPair.privateKey.extractable, false);
});

for (const alg of ["ES256", "EdDSA"] as const) {
  test(`the pure-JavaScript ${alg} signer signs what the key verifies, and survives storage`, async () => {
    const storage = new MemoryStorage();
    const signer = await loadOrCreatePureSigner(storage, { alg });
    const again = await loadOrCreatePureSigner(storage, { alg });
    assert.deepEqual(again.publicJwk, signer.publicJwk);
    const signature = await again.sign(message);
    assert.equal(signature.length, 64);
    assert.ok(verifies(signer.publicJwk, message, signature));
  });
}

test("a private JWK whose public members belong to another key is refused", () => {
  const one = PureSigner.generate("EdDSA").exportPrivateJwk();
  const other = PureSigner.generate("EdDSA").exportPrivateJwk();
  assert.throws(() => PureSigner.fromPrivateJwk({ ...one, x: other.x }), SplitlinkError);
});

function toDer(raw: Uint8Array): Uint8Array {
  const integer = (bytes: Uint8Array): number[] => {
    let i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0) i++;
    const body = [...bytes.subarray(i)];
    return body[0]! >= 0x80 ? [0x02, body.length + 1, 0, ...body] : [0x02, body.length, ...body];
  };
  const content = [...integer(raw.subarray(0, 32)), ...integer(raw.subarray(32))];
  return new Uint8Array([0x30, content.length, ...content]);
}

test("a native keystore signer's DER signatures become JWS R||S", async () => {
  const hardware = PureSigner.generate("ES256");
  const signer: DeviceSigner = await createNativeSigner({
    getPublicJwk: async () => ({ ...hardware.publicJwk, kid: "enclave-1" }),
    sign: async (data) => base64urlEncode(toDer(await hardware.sign(base64urlDecode(data)))),
  });
  assert.equal(signer.alg, "ES256");
  assert.deepEqual(signer.publicJwk, hardware.publicJwk);
  const signature = await signer.sign(message);
  assert.deepEqual(signature, await hardware.sign(message));
});

test("DER with short and padded integers converts to fixed-width R||S", () => {
  const raw = new Uint8Array(64);
  raw[31] = 1;
  raw[32] = 0x80;
  raw[63] = 2;
  assert.deepEqual(derToJoseSignature(toDer(raw)), raw);
  assert.throws(() => derToJoseSignature(new Uint8Array([0x30, 0x02, 0x02, 0x00])), SplitlinkError);
});

test("an ES256 proof by a WebCrypto key carries the public key, ath and nonce, and verifies", async () => {
  const signer = await WebCryptoSigner.generate();
  const proof = await createDpopProof(signer, {
    method: "GET",
    url: "https://auth.example.com/v1/me?x=1",
    iat: 1_700_000_000.7,
    accessToken: "token",
    nonce: "n-1",
  });
  const [header, payload, signature] = proof.split(".") as [string, string, string];
  assert.deepEqual(decodeSegment(header), { typ: "dpop+jwt", alg: "ES256", jwk: signer.publicJwk });
  const claims = decodeSegment(payload);
  assert.equal(claims["htu"], "https://auth.example.com/v1/me");
  assert.equal(claims["iat"], 1_700_000_000);
  assert.equal(claims["nonce"], "n-1");
  assert.equal(typeof claims["ath"], "string");
  assert.equal(base64urlDecode(claims["jti"]).length, 16);
  assert.ok(verifies(signer.publicJwk, new TextEncoder().encode(`${header}.${payload}`), base64urlDecode(signature)));
  assert.equal(jwkThumbprint(signer.publicJwk).length, 43);
});

test("two proofs never share a jti", async () => {
  const signer = PureSigner.generate("EdDSA");
  const request = { method: "POST", url: "https://a.example/oauth2/token", iat: 1 };
  const jtis = new Set<unknown>();
  for (let i = 0; i < 50; i++) {
    jtis.add(decodeSegment((await createDpopProof(signer, request)).split(".")[1]!)["jti"]);
  }
  assert.equal(jtis.size, 50);
});

test("a runtime without crypto.getRandomValues is refused with the fix named, never Math.random", async () => {
  const signer = PureSigner.generate("EdDSA");
  const descriptor = Object.getOwnPropertyDescriptor(globalThis, "crypto");
  const random = Math.random;
  Math.random = () => assert.fail("Math.random must never be used");
  Object.defineProperty(globalThis, "crypto", { value: undefined, configurable: true, writable: true });
  try {
    for (const attempt of [
      () => randomBytes(16),
      () => PureSigner.generate("ES256"),
      () => PureSigner.generate("EdDSA"),
      () => PureSigner.fromPrivateJwk(signer.exportPrivateJwk()),
    ]) {
      assert.throws(attempt, (error: unknown) => {
        assert.ok(error instanceof SplitlinkError);
        assert.equal(error.code, "no_secure_random");
        assert.match(error.message, /react-native-get-random-values/);
        return true;
      });
    }
    await assert.rejects(signer.sign(message), /react-native-get-random-values/);
    await assert.rejects(SplitlinkClient.create({ issuer: "https://auth.example.com", signer }), /react-native-get-random-values/);
  } finally {
    Object.defineProperty(globalThis, "crypto", descriptor!);
    Math.random = random;
  }
});
