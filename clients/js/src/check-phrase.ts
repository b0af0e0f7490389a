/** The four-word check phrase of a device key (SPEC.md §7.5), computed on the device. */

import { base64urlDecode } from "./base64url.js";
import { CHECK_PHRASE_WORDS } from "./check-phrase-words.js";
import { sha256, utf8 } from "./encoding.js";

const PREFIX = "splitlink/v1/check-phrase:";

/** `jkt` is the key's thumbprint as its 43 characters; anything else is refused. */
export function checkPhrase(jkt: unknown): string {
  base64urlDecode(jkt, 32);
  const digest = sha256(utf8(PREFIX + (jkt as string)));
  return [0, 1, 2, 3].map((i) => CHECK_PHRASE_WORDS[digest[i]!]!).join(" ");
}
