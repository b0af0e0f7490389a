/**
 * The server's time as the device sees it.
 *
 * A proof is accepted only while its `iat` is within a minute of the server's clock (SPEC.md §4.1
 * step 9), and phones' clocks can be minutes off. The SDK therefore learns the offset from the
 * `Date` header of the issuer's answers (RFC 9110 §6.6.1), and dates its proofs by
 * `device time + offset`. Token expiry is tracked on the device's own clock, from `expires_in`,
 * so it needs no offset. Server nonces are not used for this: they are opaque to clients.
 *
 * A `Date` is believed only within a day of the device's clock, and, once the offset is known,
 * a change of more than `MAX_UNEXPLAINED_CHANGE_MS` only on an answer that refused a proof: a
 * proxy or a broken server cannot move the clock far with one answer, yet a device whose clock
 * was set right or wrong meanwhile recovers on its next refused proof.
 */

export type NowMs = () => number;

const MAX_OFFSET_MS = 24 * 3600 * 1000;
// Proofs are accepted a minute either side, so half of that needs no proof of being wrong.
const MAX_UNEXPLAINED_CHANGE_MS = 30 * 1000;

export interface Observation {
  /** Device time the answer arrived at; now if not given. */
  readonly receivedAtMs?: number;
  /** The answer refused a proof as badly dated (`invalid_dpop_proof`). */
  readonly proofRefused?: boolean;
}

export class ServerClock {
  #offsetMs = 0;
  #known = false;

  constructor(private readonly now: NowMs = Date.now) {}

  /** Learn the offset from an issuer's `Date` header. */
  observe(dateHeader: string | null, observation: Observation = {}): void {
    if (dateHeader === null) {
      return;
    }
    const serverMs = Date.parse(dateHeader);
    if (Number.isNaN(serverMs)) {
      return;
    }
    // `Date` has whole seconds, truncated: the server's time was within the next second.
    const offsetMs = serverMs + 500 - (observation.receivedAtMs ?? this.now());
    if (Math.abs(offsetMs) > MAX_OFFSET_MS) {
      return;
    }
    const unexplained = this.#known && observation.proofRefused !== true;
    if (unexplained && Math.abs(offsetMs - this.#offsetMs) > MAX_UNEXPLAINED_CHANGE_MS) {
      return;
    }
    this.#offsetMs = offsetMs;
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
