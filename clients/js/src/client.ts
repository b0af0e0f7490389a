/**
 * `SplitlinkClient`: the device side of a splitlink sign-in (SPEC.md §1.2).
 *
 * Every request it signs carries a fresh DPoP proof by the device key, dated on the server's
 * clock as learnt from the issuer's `Date` headers. A `use_dpop_nonce` answer is retried once
 * with the nonce the server sent, and nonces are kept per audience (SPEC.md §4.5). Access tokens
 * are refreshed shortly before they expire and after a `401 invalid_token`, with one refresh in
 * flight however many requests wait for it, and one at a time among the clients sharing a
 * storage: each takes the tokens another rotated meanwhile instead of refreshing a rotated token,
 * which the server would take for theft. When the session ends, listeners of `onSessionEnded`
 * are told once.
 */

import { isCanonicalBase64url } from "./base64url.js";
import { checkPhrase } from "./check-phrase.js";
import { ServerClock, type NowMs } from "./clock.js";
import {
  type AttemptState,
  InvalidEmailError,
  InvalidResponseError,
  LinkForAnotherIssuerError,
  LinkForAnotherLoginError,
  LoginAttemptEndedError,
  LoginLinkRefusedError,
  NetworkError,
  NotSignedInError,
  RateLimitedError,
  SessionEndedError,
  SplitlinkError,
  TemporarilyUnavailableError,
  isServerErrorCode,
} from "./errors.js";
import { normalizeHtu, normalizedOrigin } from "./htu.js";
import { jwkThumbprint } from "./jwk.js";
import { ATTEMPT_ID_BYTES, HALF_BYTES, LOGIN_LINK_PATH, parseLoginLink } from "./link.js";
import { createDpopProof } from "./proof.js";
import { requireSecureRandom } from "./random.js";
import { withRefreshLock } from "./refresh-lock.js";
import type { DeviceSigner } from "./signers/signer.js";
import { MemoryStorage, type SecureStorage } from "./storage.js";

export const MAGIC_LINK_GRANT = "urn:splitlink:params:oauth:grant-type:magic-link";
const METADATA_PATH = "/.well-known/oauth-authorization-server";
// A proof is accepted within a minute of the server's clock; a proof refused while the device's
// idea of that clock was further off than this is sent again once, re-dated.
const CLOCK_RETRY_SECONDS = 30;

export type FetchFunction = (input: string, init?: RequestInit) => Promise<Response>;

export interface ClientOptions {
  /** `{P}`, the server's `public_url`: an origin such as `https://auth.example.com`. */
  readonly issuer: string;
  readonly signer: DeviceSigner;
  /** Pending login and tokens; in-memory unless given (see README, storage adapters). */
  readonly storage?: SecureStorage;
  /** Prefix of the storage keys, to keep several accounts or servers apart. */
  readonly storageKey?: string;
  readonly fetch?: FetchFunction;
  /** Refresh an access token this many seconds before it expires (default 30). */
  readonly refreshBeforeExpirySeconds?: number;
  /** Origins of other APIs (wrapped with `protect()`) that `fetch` may send tokens to. */
  readonly resourceOrigins?: readonly string[];
  /** The device clock in milliseconds; for tests. */
  readonly now?: NowMs;
}

export interface ServerMetadata {
  readonly issuer: string;
  readonly tokenEndpoint: string;
  readonly loginStartEndpoint: string;
  readonly revocationEndpoint: string;
  readonly jwksUri: string;
  readonly dpopSigningAlgValuesSupported: readonly string[];
}

export interface StartLoginOptions {
  /** Shown in the login mail ("Alice's phone"); 1–64 characters. */
  readonly deviceName?: string;
}

export interface LoginStarted {
  /** Four words the login mail shows too; display them while the user waits for the mail. */
  readonly checkPhrase: string;
  readonly expiresIn: number;
  /** On the device's clock. */
  readonly expiresAt: Date;
}

export interface PendingLoginInfo {
  readonly attemptId: string;
  readonly expiresAt: Date;
}

export interface SignedIn {
  /** Seconds the first access token lives. */
  readonly expiresIn: number;
}

export interface Me {
  readonly user: { readonly id: string; readonly email: string };
  readonly session: {
    readonly id: string;
    readonly deviceName: string | null;
    readonly keyAlg: string;
    readonly createdAt: number;
    readonly lastUsedAt: number;
    readonly expiresAt: number;
    readonly authTime: number;
  };
}

export interface SessionInfo {
  readonly id: string;
  readonly deviceName: string | null;
  readonly keyAlg: string;
  readonly createdAt: number;
  readonly lastUsedAt: number;
  readonly expiresAt: number;
  readonly current: boolean;
}

/**
 * `logout` and `logout_all`: this app ended it. `ended_by_server`: the server no longer accepts
 * the session: ended from another device, revoked, refresh-token reuse detected, or timed out.
 * The server does not say which (SPEC.md §6.7), so neither can the SDK.
 */
export type SessionEndReason = "logout" | "logout_all" | "ended_by_server";

export interface SessionEndedEvent {
  readonly reason: SessionEndReason;
}

interface PendingLogin {
  readonly issuer: string;
  readonly jkt: string;
  readonly attemptId: string;
  readonly deviceHalf: string;
  readonly expiresAtMs: number;
}

interface Tokens {
  readonly issuer: string;
  readonly jkt: string;
  readonly accessToken: string;
  readonly refreshToken: string;
  /** Device clock, as both below. */
  readonly expiresAtMs: number;
  /** When to refresh before use: ahead of expiry, but never in the token's first half. */
  readonly refreshAtMs: number;
  /**
   * One more each time tokens are stored, by whichever client sharing the storage: the higher
   * are the newer. Absent (0) in tokens stored by earlier versions.
   */
  readonly serial: number;
}

interface Failure {
  readonly status: number;
  readonly code: string | undefined;
  readonly description: string;
  readonly retryAfter: number | undefined;
  readonly attemptState: AttemptState | undefined;
}

type Outcome = { readonly response: Response; readonly failure: Failure | undefined };

interface SignedRequest {
  readonly method: string;
  readonly url: string;
  readonly nonceKey: string;
  readonly accessToken?: string;
  readonly headers?: HeadersInit;
  readonly body?: BodyInit | null;
  readonly contentType?: string;
}

export class SplitlinkClient {
  readonly issuer: string;
  readonly signer: DeviceSigner;
  readonly jkt: string;
  readonly #storage: SecureStorage;
  readonly #fetch: FetchFunction;
  readonly #clock: ServerClock;
  readonly #pendingKey: string;
  readonly #tokensKey: string;
  readonly #refreshMarginMs: number;
  readonly #resourceOrigins: ReadonlySet<string>;
  readonly #nonces = new Map<string, string>();
  readonly #listeners = new Set<(event: SessionEndedEvent) => void>();
  #metadata: Promise<ServerMetadata> | undefined;
  #tokens: Tokens | null = null;
  // This device's session id, as `me` and `sessions` last reported it.
  #currentSessionId: string | undefined;
  #refreshing: Promise<Tokens> | null = null;
  // Bumped whenever the session ends here, so a refresh that was in flight cannot bring it back.
  #generation = 0;

  private constructor(options: ClientOptions) {
    this.issuer = normalizedOrigin(options.issuer);
    this.signer = options.signer;
    this.jkt = jwkThumbprint(options.signer.publicJwk);
    this.#storage = options.storage ?? new MemoryStorage();
    this.#fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.#clock = new ServerClock(options.now ?? Date.now);
    const prefix = options.storageKey ?? "splitlink";
    this.#pendingKey = `${prefix}.pending_login`;
    this.#tokensKey = `${prefix}.tokens`;
    this.#refreshMarginMs = (options.refreshBeforeExpirySeconds ?? 30) * 1000;
    this.#resourceOrigins = new Set([this.issuer, ...(options.resourceOrigins ?? []).map(normalizedOrigin)]);
  }

  /** A client with the session, if any, that `storage` holds for this issuer and key. */
  static async create(options: ClientOptions): Promise<SplitlinkClient> {
    requireSecureRandom();
    const client = new SplitlinkClient(options);
    client.#tokens = await client.#storedTokens();
    return client;
  }

  get isSignedIn(): boolean {
    return this.#tokens !== null;
  }

  /** The device clock's offset from the server's, in seconds, as learnt so far. */
  get clockOffsetSeconds(): number {
    return this.#clock.offsetSeconds;
  }

  /** Called once each time the session ends; returns a function that stops the calls. */
  onSessionEnded(listener: (event: SessionEndedEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The server's metadata (RFC 8414), fetched once. */
  discover(): Promise<ServerMetadata> {
    if (this.#metadata === undefined) {
      this.#metadata = this.#fetchMetadata();
      this.#metadata.catch(() => {
        this.#metadata = undefined;
      });
    }
    return this.#metadata;
  }

  /**
   * Ask the server to mail a login link. The returned check phrase is computed on the device
   * from its key and checked against the server's; the login mail shows the same four words.
   * A new start replaces any pending login on this device.
   */
  async startLogin(email: string, options: StartLoginOptions = {}): Promise<LoginStarted> {
    const metadata = await this.discover();
    const body: Record<string, string> = { email };
    if (options.deviceName !== undefined) {
      body["device_name"] = options.deviceName;
    }
    const { response, failure } = await this.#signed({
      method: "POST",
      url: metadata.loginStartEndpoint,
      nonceKey: this.#authorizationNonceKey(),
      body: JSON.stringify(body),
      contentType: "application/json",
    });
    if (failure !== undefined) {
      throw errorFor(failure);
    }
    const answer = await jsonObject(response);
    const attemptId = answer["attempt_id"];
    const deviceHalf = answer["device_half"];
    const expiresIn = answer["expires_in"];
    if (
      response.status !== 202 ||
      !isCanonicalBase64url(attemptId, ATTEMPT_ID_BYTES) ||
      !isCanonicalBase64url(deviceHalf, HALF_BYTES) ||
      !isPositiveInteger(expiresIn)
    ) {
      throw new InvalidResponseError("the server's answer to the login start is not usable", {
        status: response.status,
      });
    }
    const phrase = checkPhrase(this.jkt);
    if (answer["check_phrase"] !== undefined && answer["check_phrase"] !== phrase) {
      // The server saw another key than this device's: the request was not received as sent.
      throw new InvalidResponseError("the server's check phrase is not this device key's");
    }
    const expiresAtMs = this.#clock.deviceNowMs() + expiresIn * 1000;
    const pending: PendingLogin = { issuer: this.issuer, jkt: this.jkt, attemptId, deviceHalf, expiresAtMs };
    await this.#storage.setItem(this.#pendingKey, JSON.stringify(pending));
    return { checkPhrase: phrase, expiresIn, expiresAt: new Date(expiresAtMs) };
  }

  /** The login waiting for its link on this device, without its device half. */
  async pendingLogin(): Promise<PendingLoginInfo | null> {
    const pending = await this.#pending();
    return pending === null ? null : { attemptId: pending.attemptId, expiresAt: new Date(pending.expiresAtMs) };
  }

  /**
   * Complete the login with the link the OS handed to the app (a universal link / app link).
   *
   * Refused on the device, without a request: a malformed link (`InvalidLinkError`), a link of
   * another server (`LinkForAnotherIssuerError`), a link of another device or of an older login
   * (`LinkForAnotherLoginError`). Refused by the server: `LoginAttemptEndedError` (consumed,
   * locked, expired) or `LoginLinkRefusedError` (the link does not match).
   */
  async completeFromLink(link: string): Promise<SignedIn> {
    const parsed = parseLoginLink(link);
    let linkHtu: string;
    try {
      linkHtu = normalizeHtu(link.trim());
    } catch {
      throw new LinkForAnotherIssuerError("the link is not a web link of this app's server");
    }
    if (linkHtu !== `${this.issuer}${LOGIN_LINK_PATH}`) {
      throw new LinkForAnotherIssuerError("the link is for another server than this app's");
    }
    const pending = await this.#pending();
    if (pending === null || pending.attemptId !== parsed.attemptId) {
      throw new LinkForAnotherLoginError(
        "this link belongs to another device or to an older login; start a new login here",
      );
    }
    const metadata = await this.discover();
    const form = new URLSearchParams({
      grant_type: MAGIC_LINK_GRANT,
      attempt_id: pending.attemptId,
      device_half: pending.deviceHalf,
      email_half: parsed.emailHalf,
    });
    const { response, failure } = await this.#signed({
      method: "POST",
      url: metadata.tokenEndpoint,
      nonceKey: this.#authorizationNonceKey(),
      body: form.toString(),
      contentType: "application/x-www-form-urlencoded",
    });
    if (failure !== undefined) {
      if (failure.code === "invalid_grant" && failure.attemptState !== undefined) {
        await this.#storage.removeItem(this.#pendingKey);
        throw new LoginAttemptEndedError(failure.attemptState, `the login is ${failure.attemptState}; start a new login`, {
          status: failure.status,
        });
      }
      if (failure.code === "invalid_grant") {
        throw new LoginLinkRefusedError("the server refused this link; start a new login", { status: failure.status });
      }
      throw errorFor(failure);
    }
    const stored = await this.#storedTokens();
    const tokens = await this.#tokenAnswer(response, (stored?.serial ?? 0) + 1);
    await this.#storage.removeItem(this.#pendingKey);
    await this.#setTokens(tokens);
    return { expiresIn: Math.round((tokens.expiresAtMs - this.#clock.deviceNowMs()) / 1000) };
  }

  /**
   * `fetch` with the session: `Authorization: DPoP <token>` and a fresh proof with `ath`. The
   * URL is a path on the issuer or an absolute URL on one of `resourceOrigins`. Authentication
   * failures become typed errors; any other answer is returned as it is.
   */
  async fetch(input: string, init: RequestInit = {}): Promise<Response> {
    const url = this.#resourceUrl(input);
    const method = (init.method ?? "GET").toUpperCase();
    const { response } = await this.#authorized(method, url, init);
    return response;
  }

  async me(): Promise<Me> {
    const body = await jsonObject(await this.#account("GET", "/v1/me"));
    const user = objectMember(body, "user");
    const session = objectMember(body, "session");
    this.#currentSessionId = stringMember(session, "id");
    return {
      user: { id: stringMember(user, "id"), email: stringMember(user, "email") },
      session: {
        id: stringMember(session, "id"),
        deviceName: nullableString(session, "device_name"),
        keyAlg: stringMember(session, "key_alg"),
        createdAt: integerMember(session, "created_at"),
        lastUsedAt: integerMember(session, "last_used_at"),
        expiresAt: integerMember(session, "expires_at"),
        authTime: integerMember(session, "auth_time"),
      },
    };
  }

  /** The user's live sessions, oldest first; `current` marks this device's. */
  async sessions(): Promise<SessionInfo[]> {
    const body = await jsonObject(await this.#account("GET", "/v1/sessions"));
    const list = body["sessions"];
    if (!Array.isArray(list)) {
      throw new InvalidResponseError("the session list is not a list");
    }
    return list.map((item: unknown) => {
      const session = asObject(item);
      const current = session["current"];
      if (typeof current !== "boolean") {
        throw new InvalidResponseError("a session lacks its current flag");
      }
      if (current) {
        this.#currentSessionId = stringMember(session, "id");
      }
      return {
        id: stringMember(session, "id"),
        deviceName: nullableString(session, "device_name"),
        keyAlg: stringMember(session, "key_alg"),
        createdAt: integerMember(session, "created_at"),
        lastUsedAt: integerMember(session, "last_used_at"),
        expiresAt: integerMember(session, "expires_at"),
        current,
      };
    });
  }

  /**
   * End one of the user's sessions, by an id from `sessions()`. Ending this device's own session
   * is a `logout`.
   */
  async endSession(sessionId: string): Promise<void> {
    await this.#account("DELETE", `/v1/sessions/${encodeURIComponent(sessionId)}`);
    if (sessionId === this.#currentSessionId) {
      await this.#endHere("logout");
    }
  }

  /**
   * End this device's session (`all: true`: every session of the user). The tokens are dropped
   * on the device whatever the server answers; an error is still thrown if the server could not
   * be told, so that the app can say so.
   */
  async logout(options: { readonly all?: boolean } = {}): Promise<void> {
    const reason: SessionEndReason = options.all === true ? "logout_all" : "logout";
    if (this.#tokens === null) {
      return;
    }
    try {
      await this.#account("POST", options.all === true ? "/v1/logout/all" : "/v1/logout");
    } catch (error) {
      if (!(error instanceof SessionEndedError)) {
        await this.#endHere(reason);
        throw error;
      }
    }
    await this.#endHere(reason);
  }

  /** Refresh now (normally not needed: `fetch` refreshes when due). */
  async refresh(): Promise<void> {
    const tokens = this.#tokens;
    if (tokens === null) {
      throw new NotSignedInError();
    }
    await this.#refreshAfter(tokens);
  }

  // ---- requests ---------------------------------------------------------------------------

  async #account(method: string, path: string): Promise<Response> {
    const { response, failure } = await this.#authorized(method, `${this.issuer}${path}`, {});
    if (failure !== undefined) {
      throw errorFor(failure);
    }
    return response;
  }

  async #authorized(method: string, url: string, init: RequestInit): Promise<Outcome> {
    const toIssuer = normalizedOrigin(url) === this.issuer;
    let tokens = await this.#currentTokens();
    const send = (accessToken: string): Promise<Outcome> =>
      this.#signed({
        method,
        url,
        nonceKey: `rs ${normalizedOrigin(url)}`,
        accessToken,
        headers: init.headers ?? {},
        body: init.body ?? null,
      });
    let outcome = await send(tokens.accessToken);
    if (isExpiredToken(outcome.failure)) {
      tokens = await this.#refreshAfter(tokens);
      outcome = await send(tokens.accessToken);
      const refusedAgain = outcome.failure;
      if (refusedAgain !== undefined && isExpiredToken(refusedAgain)) {
        if (!toIssuer) {
          // Only the issuer ends sessions: another origin refusing a fresh token is that
          // origin's concern, and must not be able to sign the user out.
          throw errorFor(refusedAgain);
        }
        await this.#endHere("ended_by_server");
        throw new SessionEndedError("the session has ended; sign in again", { status: 401 });
      }
    }
    const failure = outcome.failure;
    if (failure !== undefined && (failure.code === "invalid_dpop_proof" || failure.code === "use_dpop_nonce")) {
      throw errorFor(failure);
    }
    return outcome;
  }

  /** A valid access token: refreshed first when it is due, or while a refresh is running. */
  async #currentTokens(): Promise<Tokens> {
    if (this.#refreshing !== null) {
      return this.#refreshing;
    }
    const tokens = this.#tokens;
    if (tokens === null) {
      throw new NotSignedInError();
    }
    if (this.#clock.deviceNowMs() >= tokens.refreshAtMs) {
      return this.#refreshAfter(tokens);
    }
    return tokens;
  }

  /**
   * One refresh in flight: callers holding `stale` share it, or get what replaced `stale`. It
   * runs under the lock of the shared storage (`refresh-lock.ts`).
   */
  #refreshAfter(stale: Tokens): Promise<Tokens> {
    if (this.#refreshing !== null) {
      return this.#refreshing;
    }
    const current = this.#tokens;
    if (current === null) {
      return Promise.reject(new SessionEndedError("the session has ended; sign in again"));
    }
    if (current !== stale) {
      return Promise.resolve(current);
    }
    const refreshing = withRefreshLock(this.#storage, `${this.#tokensKey} ${this.issuer}`, () =>
      this.#refreshUnlessRotated(current),
    ).finally(() => {
      this.#refreshing = null;
    });
    this.#refreshing = refreshing;
    return refreshing;
  }

  /**
   * Another client sharing the storage may have refreshed since `held` was read: its tokens are
   * taken, and refreshed only if they are due too. Refreshing `held` instead would send a rotated
   * refresh token, and the server would end the session for it.
   */
  async #refreshUnlessRotated(held: Tokens): Promise<Tokens> {
    const generation = this.#generation;
    const stored = await this.#storedTokens();
    if (generation !== this.#generation) {
      throw new SessionEndedError("the session was ended on this device");
    }
    let tokens = held;
    if (stored !== null && stored.serial > held.serial) {
      this.#tokens = stored;
      if (this.#clock.deviceNowMs() < stored.refreshAtMs) {
        return stored;
      }
      tokens = stored;
    }
    return this.#runRefresh(tokens, generation);
  }

  async #runRefresh(tokens: Tokens, generation: number): Promise<Tokens> {
    const metadata = await this.discover();
    const form = new URLSearchParams({ grant_type: "refresh_token", refresh_token: tokens.refreshToken });
    const { response, failure } = await this.#signed({
      method: "POST",
      url: metadata.tokenEndpoint,
      nonceKey: this.#authorizationNonceKey(),
      body: form.toString(),
      contentType: "application/x-www-form-urlencoded",
    });
    if (failure !== undefined) {
      if (failure.code === "invalid_grant") {
        if (generation === this.#generation) {
          await this.#endHere("ended_by_server");
        }
        throw new SessionEndedError("the session has ended; sign in again", { status: failure.status });
      }
      throw errorFor(failure);
    }
    const next = await this.#tokenAnswer(response, tokens.serial + 1);
    if (generation !== this.#generation) {
      throw new SessionEndedError("the session was ended on this device");
    }
    await this.#setTokens(next);
    return next;
  }

  /**
   * One request with a fresh proof, sent again once for a `use_dpop_nonce` challenge and once
   * for a proof refused while the device's clock was off (learnt from that answer's `Date`).
   */
  async #signed(request: SignedRequest): Promise<Outcome> {
    const toIssuer = normalizedOrigin(request.url) === this.issuer;
    if (!toIssuer && !this.#clock.known) {
      // The clock is learnt from the issuer only: ask it first. Should it be unreachable, the
      // request still goes out, dated on the device's clock.
      await this.discover().catch(() => undefined);
    }
    let nonceRetried = false;
    let clockRetried = false;
    for (;;) {
      const iat = this.#clock.serverNow();
      const nonce = this.#nonces.get(request.nonceKey);
      const proof = await createDpopProof(this.signer, {
        method: request.method,
        url: request.url,
        iat,
        ...(request.accessToken === undefined ? {} : { accessToken: request.accessToken }),
        ...(nonce === undefined ? {} : { nonce }),
      });
      const headers = new Headers(request.headers);
      headers.set("DPoP", proof);
      if (request.accessToken !== undefined) {
        headers.set("Authorization", `DPoP ${request.accessToken}`);
      }
      if (request.contentType !== undefined) {
        headers.set("Content-Type", request.contentType);
      }
      const response = await this.#send(request.url, { method: request.method, headers, body: request.body ?? null });
      const receivedAtMs = this.#clock.deviceNowMs();
      const newNonce = response.headers.get("DPoP-Nonce");
      if (newNonce !== null) {
        this.#nonces.set(request.nonceKey, newNonce);
      }
      const failure = response.ok ? undefined : await readFailure(response);
      if (toIssuer) {
        const proofRefused = failure?.code === "invalid_dpop_proof";
        this.#clock.observe(response.headers.get("Date"), { receivedAtMs, proofRefused });
      }
      if (failure === undefined) {
        return { response, failure };
      }
      if (failure.code === "use_dpop_nonce" && newNonce !== null && !nonceRetried) {
        nonceRetried = true;
        continue;
      }
      if (
        failure.code === "invalid_dpop_proof" &&
        !clockRetried &&
        Math.abs(this.#clock.serverNow() - iat) > CLOCK_RETRY_SECONDS
      ) {
        clockRetried = true;
        continue;
      }
      return { response, failure };
    }
  }

  async #send(url: string, init: RequestInit): Promise<Response> {
    let response: Response;
    try {
      // A 307 or 308 would send the body (refresh token, halves) and the proof on to any
      // `Location`; a splitlink server never redirects these requests, so none is followed.
      response = await this.#fetch(url, { ...init, redirect: "error" });
    } catch (error) {
      throw new NetworkError("the server could not be reached", error);
    }
    return response;
  }

  async #fetchMetadata(): Promise<ServerMetadata> {
    // No HTTP cache: a stored answer would carry an old `Date`, and the clock is learnt from it.
    const response = await this.#send(`${this.issuer}${METADATA_PATH}`, { method: "GET", cache: "no-store" });
    this.#clock.observe(response.headers.get("Date"));
    if (!response.ok) {
      throw errorFor(await readFailure(response));
    }
    const body = await jsonObject(response);
    const issuer = stringMember(body, "issuer");
    if (issuer !== this.issuer) {
      throw new InvalidResponseError("the server names another issuer than the one configured");
    }
    const endpoint = (name: string): string => {
      const value = stringMember(body, name);
      let origin: string;
      try {
        origin = normalizedOrigin(value);
      } catch {
        throw new InvalidResponseError(`the server's ${name} is not a URL`);
      }
      if (origin !== this.issuer) {
        throw new InvalidResponseError(`the server's ${name} is not on the issuer's origin`);
      }
      return value;
    };
    const algs = body["dpop_signing_alg_values_supported"];
    const supported = Array.isArray(algs) ? algs.filter((v): v is string => typeof v === "string") : [];
    if (!supported.includes(this.signer.alg)) {
      throw new InvalidResponseError(`the server does not accept ${this.signer.alg} proofs`);
    }
    return {
      issuer,
      tokenEndpoint: endpoint("token_endpoint"),
      loginStartEndpoint: endpoint("login_start_endpoint"),
      revocationEndpoint: endpoint("revocation_endpoint"),
      jwksUri: endpoint("jwks_uri"),
      dpopSigningAlgValuesSupported: supported,
    };
  }

  // ---- state ------------------------------------------------------------------------------

  #authorizationNonceKey(): string {
    return `as ${this.issuer}`;
  }

  #resourceUrl(input: string): string {
    const url = wireForm(input.startsWith("/") ? `${this.issuer}${input}` : input);
    let origin: string;
    try {
      origin = normalizedOrigin(url);
    } catch {
      throw new SplitlinkError("invalid_request", "not a URL the session can be used for");
    }
    if (!this.#resourceOrigins.has(origin)) {
      // Tokens and proofs go only where they were meant to.
      throw new SplitlinkError("invalid_request", "the session is not for this origin; list it in resourceOrigins");
    }
    return url;
  }

  async #tokenAnswer(response: Response, serial: number): Promise<Tokens> {
    const body = await jsonObject(response);
    const accessToken = body["access_token"];
    const refreshToken = body["refresh_token"];
    const tokenType = body["token_type"];
    const expiresIn = body["expires_in"];
    if (
      typeof accessToken !== "string" ||
      accessToken === "" ||
      typeof refreshToken !== "string" ||
      refreshToken === "" ||
      typeof tokenType !== "string" ||
      tokenType.toLowerCase() !== "dpop" ||
      !isPositiveInteger(expiresIn)
    ) {
      throw new InvalidResponseError("the token answer is not usable", { status: response.status });
    }
    // A token capped by the session's end can be short (SPEC.md §6.3): refreshing it at half its
    // life, not `margin` before its end, keeps a refresh from following every request.
    const receivedAtMs = this.#clock.deviceNowMs();
    const lifetimeMs = expiresIn * 1000;
    return {
      issuer: this.issuer,
      jkt: this.jkt,
      accessToken,
      refreshToken,
      expiresAtMs: receivedAtMs + lifetimeMs,
      refreshAtMs: receivedAtMs + Math.max(lifetimeMs - this.#refreshMarginMs, lifetimeMs / 2),
      serial,
    };
  }

  async #setTokens(tokens: Tokens): Promise<void> {
    this.#tokens = tokens;
    await this.#storage.setItem(this.#tokensKey, JSON.stringify(tokens));
  }

  async #endHere(reason: SessionEndReason): Promise<void> {
    this.#generation += 1;
    this.#currentSessionId = undefined;
    const hadSession = this.#tokens !== null;
    this.#tokens = null;
    await this.#storage.removeItem(this.#tokensKey);
    if (!hadSession) {
      return;
    }
    for (const listener of [...this.#listeners]) {
      try {
        listener({ reason });
      } catch {
        // A listener's failure must not stop the others or the sign-out itself.
      }
    }
  }

  /** The tokens the storage holds for this issuer and key, if any. */
  async #storedTokens(): Promise<Tokens | null> {
    const tokens = await this.#read<Partial<Tokens>>(this.#tokensKey);
    if (
      tokens === null ||
      tokens.issuer !== this.issuer ||
      tokens.jkt !== this.jkt ||
      typeof tokens.accessToken !== "string" ||
      typeof tokens.refreshToken !== "string" ||
      typeof tokens.expiresAtMs !== "number" ||
      typeof tokens.refreshAtMs !== "number"
    ) {
      return null;
    }
    return {
      issuer: tokens.issuer,
      jkt: tokens.jkt,
      accessToken: tokens.accessToken,
      refreshToken: tokens.refreshToken,
      expiresAtMs: tokens.expiresAtMs,
      refreshAtMs: tokens.refreshAtMs,
      serial: typeof tokens.serial === "number" ? tokens.serial : 0,
    };
  }

  async #pending(): Promise<PendingLogin | null> {
    const pending = await this.#read<PendingLogin>(this.#pendingKey);
    if (pending === null || pending.issuer !== this.issuer || pending.jkt !== this.jkt) {
      return null;
    }
    return pending;
  }

  async #read<T>(key: string): Promise<T | null> {
    const text = await this.#storage.getItem(key);
    if (text === null) {
      return null;
    }
    try {
      return JSON.parse(text) as T;
    } catch {
      await this.#storage.removeItem(key);
      return null;
    }
  }
}

// ---- answers ---------------------------------------------------------------------------------

/**
 * The URL as `fetch` will put it on the request line (WHATWG serialization: spaces and non-ASCII
 * percent-encoded), so that `htu` names the path the server sees (SPEC.md §4.3). Runtimes whose
 * `URL` is missing or partial keep the text as given.
 */
function wireForm(url: string): string {
  try {
    return new URL(url).href;
  } catch {
    return url;
  }
}

function isExpiredToken(failure: Failure | undefined): boolean {
  return failure !== undefined && failure.status === 401 && failure.code === "invalid_token";
}

async function readFailure(response: Response): Promise<Failure> {
  let body: Record<string, unknown> = {};
  try {
    const parsed: unknown = await response.clone().json();
    if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) {
      body = parsed as Record<string, unknown>;
    }
  } catch {
    // Not JSON: a proxy's page, for instance. The status decides below.
  }
  let code = typeof body["error"] === "string" ? body["error"] : undefined;
  if (code === undefined) {
    code = /error="([a-z_]+)"/.exec(response.headers.get("WWW-Authenticate") ?? "")?.[1];
  }
  const state = body["attempt_state"];
  const retryAfter = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
  return {
    status: response.status,
    code,
    description: typeof body["error_description"] === "string" ? body["error_description"] : `HTTP ${response.status}`,
    retryAfter: Number.isFinite(retryAfter) && retryAfter >= 0 ? retryAfter : undefined,
    attemptState: state === "consumed" || state === "locked" || state === "expired" ? state : undefined,
  };
}

function errorFor(failure: Failure): SplitlinkError {
  const details = {
    status: failure.status,
    ...(failure.retryAfter === undefined ? {} : { retryAfter: failure.retryAfter }),
  };
  switch (failure.code) {
    case "rate_limited":
      return new RateLimitedError(failure.description, details);
    case "temporarily_unavailable":
      return new TemporarilyUnavailableError(failure.description, details);
    case "invalid_email":
      return new InvalidEmailError(failure.description, details);
    case undefined:
      break;
    default:
      if (isServerErrorCode(failure.code)) {
        return new SplitlinkError(failure.code, failure.description, details);
      }
  }
  if (failure.status >= 500) {
    return new TemporarilyUnavailableError("the server is unavailable; try again later", details);
  }
  return new InvalidResponseError(`unexpected answer (HTTP ${failure.status})`, details);
}

async function jsonObject(response: Response): Promise<Record<string, unknown>> {
  let parsed: unknown;
  try {
    parsed = await response.json();
  } catch (error) {
    throw new InvalidResponseError("the answer is not JSON", { status: response.status, cause: error });
  }
  return asObject(parsed);
}

function asObject(value: unknown): Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new InvalidResponseError("the answer is not a JSON object");
  }
  return value as Record<string, unknown>;
}

function objectMember(body: Record<string, unknown>, name: string): Record<string, unknown> {
  return asObject(body[name]);
}

function stringMember(body: Record<string, unknown>, name: string): string {
  const value = body[name];
  if (typeof value !== "string") {
    throw new InvalidResponseError(`the answer lacks ${name}`);
  }
  return value;
}

function nullableString(body: Record<string, unknown>, name: string): string | null {
  const value = body[name];
  if (value === null || value === undefined) {
    return null;
  }
  return stringMember(body, name);
}

function integerMember(body: Record<string, unknown>, name: string): number {
  const value = body[name];
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new InvalidResponseError(`the answer lacks ${name}`);
  }
  return value;
}

function isPositiveInteger(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value > 0;
}
