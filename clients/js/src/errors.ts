/**
 * One error root, `SplitlinkError`, with a stable `code`.
 *
 * Server refusals keep the server's code (SPEC.md §9). Refusals made on the device, before any
 * request, use the SDK's own codes below. Apps switch on `code` (or on the subclass), never on
 * `message`: like the server's `error_description`, the message is for people and may change.
 */

/** The server's stable codes (SPEC.md §9). */
export type ServerErrorCode =
  | "invalid_request"
  | "invalid_client"
  | "invalid_grant"
  | "unsupported_grant_type"
  | "invalid_token"
  | "invalid_dpop_proof"
  | "use_dpop_nonce"
  | "unsupported_token_type"
  | "invalid_email"
  | "rate_limited"
  | "temporarily_unavailable"
  | "not_found"
  | "method_not_allowed"
  | "unsupported_media_type"
  | "request_too_large"
  | "server_error";

/** Codes for failures found on the device, which have no server error body. */
export type LocalErrorCode =
  | "link_for_another_issuer"
  | "link_for_another_login"
  | "login_attempt_ended"
  | "login_link_refused"
  | "session_ended"
  | "not_signed_in"
  | "network_error"
  | "invalid_response"
  | "no_secure_random"
  | "unsupported_runtime"
  | "unsafe_device_key";

export type ErrorCode = ServerErrorCode | LocalErrorCode;

const SERVER_CODES: ReadonlySet<string> = new Set<ServerErrorCode>([
  "invalid_request",
  "invalid_client",
  "invalid_grant",
  "unsupported_grant_type",
  "invalid_token",
  "invalid_dpop_proof",
  "use_dpop_nonce",
  "unsupported_token_type",
  "invalid_email",
  "rate_limited",
  "temporarily_unavailable",
  "not_found",
  "method_not_allowed",
  "unsupported_media_type",
  "request_too_large",
  "server_error",
]);

export function isServerErrorCode(value: unknown): value is ServerErrorCode {
  return typeof value === "string" && SERVER_CODES.has(value);
}

export interface ErrorDetails {
  /** The HTTP status of the answer that caused the error; absent for local refusals. */
  readonly status?: number;
  /** Seconds to wait before trying again (`Retry-After`), when the server sent one. */
  readonly retryAfter?: number;
  readonly cause?: unknown;
}

export class SplitlinkError extends Error {
  readonly code: ErrorCode;
  readonly status: number | undefined;
  readonly retryAfter: number | undefined;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = new.target.name;
    this.code = code;
    this.status = details.status;
    this.retryAfter = details.retryAfter;
  }
}

/**
 * The link is not a login link: malformed, truncated, or a value of the wrong length. Its code is
 * the protocol's `invalid_request`, as in the shared vectors.
 */
export class InvalidLinkError extends SplitlinkError {
  constructor(message: string) {
    super("invalid_request", message);
  }
}

/** The link is for another server than this client's issuer (SPEC.md §5.4). */
export class LinkForAnotherIssuerError extends SplitlinkError {
  constructor(message: string) {
    super("link_for_another_issuer", message);
  }
}

/**
 * This device holds no pending login for the link: it was started on another device, or it is
 * the link of an older login on this one. Nothing was sent to the server. Start a new login here.
 */
export class LinkForAnotherLoginError extends SplitlinkError {
  constructor(message: string) {
    super("link_for_another_login", message);
  }
}

export type AttemptState = "consumed" | "locked" | "expired";

/**
 * The server proved the link right for this device, but the login can no longer complete:
 * already used, locked after failed tries, or expired. Start a new login.
 */
export class LoginAttemptEndedError extends SplitlinkError {
  readonly state: AttemptState;

  constructor(state: AttemptState, message: string, details: ErrorDetails = {}) {
    super("login_attempt_ended", message, details);
    this.state = state;
  }
}

/**
 * The server refused the completion without saying why (SPEC.md §6.4): the link does not match
 * this device's pending login, or it was altered. Start a new login.
 */
export class LoginLinkRefusedError extends SplitlinkError {
  constructor(message: string, details: ErrorDetails = {}) {
    super("login_link_refused", message, details);
  }
}

/** The session ended (logout, revoked, refresh-token reuse, timeouts): sign in again. */
export class SessionEndedError extends SplitlinkError {
  constructor(message: string, details: ErrorDetails = {}) {
    super("session_ended", message, details);
  }
}

export class NotSignedInError extends SplitlinkError {
  constructor() {
    super("not_signed_in", "no session on this device; sign in first");
  }
}

export class InvalidEmailError extends SplitlinkError {
  constructor(message: string, details: ErrorDetails = {}) {
    super("invalid_email", message, details);
  }
}

export class RateLimitedError extends SplitlinkError {
  constructor(message: string, details: ErrorDetails = {}) {
    super("rate_limited", message, details);
  }
}

export class TemporarilyUnavailableError extends SplitlinkError {
  constructor(message: string, details: ErrorDetails = {}) {
    super("temporarily_unavailable", message, details);
  }
}

/** No answer: offline, DNS, TLS, a refused connection, or a CORS refusal in a browser. */
export class NetworkError extends SplitlinkError {
  constructor(message: string, cause: unknown) {
    super("network_error", message, { cause });
  }
}

/** An answer this client cannot use: a broken proxy, or a server that is not splitlink. */
export class InvalidResponseError extends SplitlinkError {
  constructor(message: string, details: ErrorDetails = {}) {
    super("invalid_response", message, details);
  }
}

/** The runtime lacks something the SDK cannot work without; the message names the fix. */
export class UnsupportedRuntimeError extends SplitlinkError {
  constructor(code: "no_secure_random" | "unsupported_runtime", message: string) {
    super(code, message);
  }
}

/**
 * A key pair offered as the device key that could leak or be misused: its private key can be
 * exported, or it is not an ECDSA signing key. A script that once ran on the page's origin could
 * have put such a key where the app keeps its own.
 */
export class UnsafeDeviceKeyError extends SplitlinkError {
  constructor(message: string) {
    super("unsafe_device_key", message);
  }
}
