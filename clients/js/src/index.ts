/** splitlink device SDK: sign in with a split emailed link and DPoP-bound tokens. */

export {
  SplitlinkClient,
  MAGIC_LINK_GRANT,
  type ClientOptions,
  type FetchFunction,
  type LoginStarted,
  type Me,
  type PendingLoginInfo,
  type ServerMetadata,
  type SessionEndReason,
  type SessionEndedEvent,
  type SessionInfo,
  type SignedIn,
  type StartLoginOptions,
} from "./client.js";
export * from "./errors.js";
export { base64urlDecode, base64urlEncode } from "./base64url.js";
export { checkPhrase } from "./check-phrase.js";
export { CHECK_PHRASE_WORDS } from "./check-phrase-words.js";
export { normalizeHtu } from "./htu.js";
export { jwkThumbprint, thumbprintInput, type Algorithm, type PublicJwk } from "./jwk.js";
export { buildLoginLink, parseLoginLink, type LoginLink } from "./link.js";
export { accessTokenHash, createDpopProof, type ProofRequest } from "./proof.js";
export { randomBytes, requireSecureRandom } from "./random.js";
export { MemoryStorage, type SecureStorage } from "./storage.js";
export type { DeviceSigner } from "./signers/signer.js";
export { WebCryptoSigner, hasSubtleCrypto } from "./signers/webcrypto.js";
export { PureSigner, loadOrCreatePureSigner, type PrivateJwk } from "./signers/pure.js";
export { createNativeSigner, derToJoseSignature, type NativeKeyBridge } from "./signers/native.js";
export { loadOrCreateBrowserSigner, deleteBrowserSigner, type BrowserKeyOptions } from "./signers/indexeddb.js";
