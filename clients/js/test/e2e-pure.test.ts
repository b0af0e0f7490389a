// End to end in a runtime without `crypto.subtle`, as in Hermes with only
// react-native-get-random-values installed: every key is a pure-JavaScript key.

const webCrypto = globalThis.crypto;
Object.defineProperty(globalThis, "crypto", {
  value: { getRandomValues: webCrypto.getRandomValues.bind(webCrypto) },
  configurable: true,
  writable: true,
});

const { defineEndToEndSuite } = await import("./support/e2e-suite.js");
defineEndToEndSuite("pure");
