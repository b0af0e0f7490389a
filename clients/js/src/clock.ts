/**
 * The server's time as the device sees it.
 *
 * A proof is accepted only while its `iat` is within a minute of the server's clock (SPEC.md §4.1
 * step 9), and phones' clocks can be minutes off. The SDK therefore learns the offset from the
 * `Date` header of every answer it gets (RFC 9110 §6.6.1), and dates its proofs by
 * `device time + offset`. Token expiry is tracked on the device's own clock, from `expires_in`,
 * so it needs no offset. Server nonces are not used for this: they are opaque to clients.
 */

export type NowMs = () => number;

export class ServerClock {
  #offsetMs = 0;
  #known = false;

  constructor(private readonly now: NowMs = Date.now) {}

  /** Learn the offset from a `Date` header received at device time `receivedAtMs`. */
  observe(dateHeader: string | null, receivedAtMs: number = this.now()): void {
    if (dateHeader === null) {
      return;
    }
    const serverMs = Date.parse(dateHeader);
    if (Number.isNaN(serverMs)) {
      return;
    }
    // `Date` has whole seconds, truncated: the server's time was within the next second.
    this.#offsetMs = serverMs + 500 - receivedAtMs;
    this.#known = true;
  }

  get known(): boolean {
    return this.#known;
  }

  get offsetSeconds(): number {
    return this.#offsetMs / 1000;
  }

  /** The server's time now, in seconds. */
  serverNow(): number {
    return Math.floor((this.now() + this.#offsetMs) / 1000);
  }

  deviceNowMs(): number {
    return this.now();
  }
}
