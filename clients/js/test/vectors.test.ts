// Every case of the shared vectors (tests/vectors/) that a client implements: base64url, JWK
// thumbprints, Ed25519 signing, DPoP proofs and `ath`, `htu` normalization, the check phrase and
// the login link. Server-side operations are listed by name, and an unknown type fails.

import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { test } from "node:test";

import {
  CHECK_PHRASE_WORDS,
  PureSigner,
  SplitlinkError,
  accessTokenHash,
  base64urlDecode,
  base64urlEncode,
  buildLoginLink,
  checkPhrase,
  createDpopProof,
  jwkThumbprint,
  normalizeHtu,
  parseLoginLink,
  thumbprintInput,
  type PrivateJwk,
} from "../src/index.js";

const VECTORS = new URL("../../../../tests/vectors/", import.meta.url);

// What only a server does: verify proofs and access tokens, validate peers' keys, parse email
// addresses, issue tokens. The SDK sends keys and proofs; it never checks someone else's.
const SERVER_SIDE = new Set([
  "verify_dpop_proof",
  "verify_access_token",
  "issue_access_token",
  "parse_public_jwk",
  "eddsa_verify",
  "parse_email_address",
]);

type Json = Record<string, unknown>;
interface Case {
  id: string;
  type: string;
  input: Json;
  output?: Json;
  error?: string;
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex");
const fromHex = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, "hex"));
const str = (value: unknown): string => value as string;

async function run(vector: Case): Promise<Json> {
  const input = vector.input;
  switch (vector.type) {
    case "b64url_encode":
      return { text: base64urlEncode(fromHex(str(input["hex"]))) };
    case "b64url_decode":
      return { hex: hex(base64urlDecode(input["text"])) };
    case "jwk_thumbprint": {
      const jwk = input["jwk"] as Json;
      return { thumbprint_input: thumbprintInput(jwk), thumbprint: jwkThumbprint(jwk) };
    }
    case "ed25519_public_key":
      return { x: PureSigner.fromPrivateKey("EdDSA", str(input["d"])).publicJwk.x };
    case "eddsa_sign": {
      const signer = PureSigner.fromPrivateJwk(input["private_jwk"] as PrivateJwk);
      const signingInput = str(input["signing_input"]);
      const signature = base64urlEncode(await signer.sign(new TextEncoder().encode(signingInput)));
      return { signature, jws: `${signingInput}.${signature}` };
    }
    case "create_dpop_proof": {
      const signer = PureSigner.fromPrivateJwk(input["private_jwk"] as PrivateJwk);
      const proof = await createDpopProof(signer, {
        method: str(input["method"]),
        url: str(input["url"]),
        iat: input["iat"] as number,
        jti: str(input["jti"]),
        ...(input["access_token"] === null ? {} : { accessToken: str(input["access_token"]) }),
        ...(input["nonce"] === null ? {} : { nonce: str(input["nonce"]) }),
      });
      return { proof };
    }
    case "access_token_hash":
      return { ath: accessTokenHash(str(input["access_token"])) };
    case "normalize_htu":
      return { htu: normalizeHtu(str(input["url"])) };
    case "check_phrase_words":
      return { count: CHECK_PHRASE_WORDS.length, words: [...CHECK_PHRASE_WORDS] };
    case "check_phrase":
      return { phrase: checkPhrase(input["jkt"]) };
    case "build_login_link":
      return { link: buildLoginLink(str(input["public_url"]), str(input["attempt_id"]), str(input["email_half"])) };
    case "parse_login_link": {
      const link = parseLoginLink(str(input["link"]));
      return { attempt_id: link.attemptId, email_half: link.emailHalf };
    }
    default:
      throw new Error(`unknown vector type ${vector.type}`);
  }
}

const files = readdirSync(VECTORS).filter((name) => name.endsWith(".json")).sort();
const CLIENT_SIDE = [
  "b64url_encode",
  "b64url_decode",
  "jwk_thumbprint",
  "ed25519_public_key",
  "eddsa_sign",
  "create_dpop_proof",
  "access_token_hash",
  "normalize_htu",
  "check_phrase_words",
  "check_phrase",
  "build_login_link",
  "parse_login_link",
];
const typesRun = new Set<string>();

test("the shared vector files are present", () => {
  assert.ok(files.length >= 8, `vector files found: ${files.join(", ")}`);
});

for (const file of files) {
  const cases = (JSON.parse(readFileSync(new URL(file, VECTORS), "utf8")) as { cases: Case[] }).cases;
  for (const vector of cases) {
    if (SERVER_SIDE.has(vector.type)) {
      continue;
    }
    typesRun.add(vector.type);
    test(vector.id, async () => {
      if (vector.error !== undefined) {
        await assert.rejects(run(vector), (error: unknown) => {
          assert.ok(error instanceof SplitlinkError, `not a SplitlinkError: ${String(error)}`);
          assert.equal(error.code, vector.error);
          return true;
        });
      } else {
        assert.deepEqual(await run(vector), vector.output);
      }
    });
  }
}

test("every client-side vector type is run", () => {
  assert.deepEqual([...typesRun].sort(), [...CLIENT_SIDE].sort());
});
