/** URL comparison as the server does it for `htu` (SPEC.md §4.3; RFC 3986 §6.2.2-6.2.3). */

import { SplitlinkError } from "./errors.js";

const DEFAULT_PORTS: Readonly<Record<string, string>> = { http: "80", https: "443" };
const URL_PARTS = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)(?:\?[^#]*)?(?:#.*)?$/s;
const AUTHORITY = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]]+)(?::(\d*))?$/;
// A URI has neither (RFC 3986 §2); a parser that drops TAB, CR and LF or strips spaces would
// otherwise find one URL inside another (SPEC.md §4.1 step 6).
const CONTROL_OR_SPACE = /[\u0000-\u001f\u007f-\u009f\s]/u;

/**
 * Lower-cased scheme and host, no default port, `/` for an empty path, no query or fragment;
 * the path is kept exactly as written. Refuses what is not an absolute http(s) URL with a host
 * and without user information, and any control character or whitespace.
 */
export function normalizeHtu(url: string): string {
  if (CONTROL_OR_SPACE.test(url)) {
    throw malformed("control characters and whitespace are refused");
  }
  const parts = URL_PARTS.exec(url);
  if (parts === null) {
    throw malformed("not an absolute URL");
  }
  const scheme = parts[1]!.toLowerCase();
  const authority = parts[2]!;
  const path = parts[3]!;
  const defaultPort = DEFAULT_PORTS[scheme];
  if (defaultPort === undefined) {
    throw malformed("the scheme must be http or https");
  }
  if (authority.includes("@")) {
    throw malformed("user information is refused");
  }
  const hostPort = AUTHORITY.exec(authority);
  if (hostPort === null) {
    throw malformed("no host");
  }
  const host = hostPort[1]!.toLowerCase();
  let port = hostPort[2];
  if (port !== undefined && port !== "") {
    if (Number(port) > 65535) {
      throw malformed("port out of range");
    }
    port = String(Number(port));
  }
  const netloc = port === undefined || port === "" || port === defaultPort ? host : `${host}:${port}`;
  return `${scheme}://${netloc}${path === "" ? "/" : path}`;
}

/** The origin of an absolute http(s) URL, normalized: `scheme://host[:port]`. */
export function normalizedOrigin(url: string): string {
  const normalized = normalizeHtu(url);
  return normalized.slice(0, normalized.indexOf("/", normalized.indexOf("//") + 2));
}

function malformed(message: string): SplitlinkError {
  return new SplitlinkError("invalid_request", `URL refused: ${message}`);
}
