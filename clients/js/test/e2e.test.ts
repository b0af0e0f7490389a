// End to end with WebCrypto keys (ES256) and pure-JavaScript Ed25519 keys.
import { defineEndToEndSuite } from "./support/e2e-suite.js";

defineEndToEndSuite("webcrypto");
