/**
 * The emailed login link (SPEC.md §5.4): `{P}/l#attempt_id=…&email_half=…`.
 *
 * The email half is in the fragment, which no user agent sends to a server. The app reads the
 * fragment as form-encoded pairs, ignores any query, and refuses a repeated name or a value that
 * is not canonical base64url of the right length.
 */

import { base64urlDecode } from "./base64url.js";
import { InvalidLinkError } from "./errors.js";

export const LOGIN_LINK_PATH = "/l";
export const ATTEMPT_ID_BYTES = 16;
export const HALF_BYTES = 32;

export interface LoginLink {
  readonly attemptId: string;
  readonly emailHalf: string;
}

export function buildLoginLink(publicUrl: string, attemptId: string, emailHalf: string): string {
  return `${publicUrl.replace(/\/+$/, "")}${LOGIN_LINK_PATH}#attempt_id=${attemptId}&email_half=${emailHalf}`;
}

export function parseLoginLink(link: string): LoginLink {
  const text = link.trim();
  const hash = text.indexOf("#");
  if (hash < 0) {
    throw new InvalidLinkError("the link has no login fragment");
  }
  const fields = new Map<string, string>();
  for (const pair of text.slice(hash + 1).split("&")) {
    const eq = pair.indexOf("=");
    if (eq <= 0) {
      throw new InvalidLinkError("the link's fragment is not name=value pairs");
    }
    const name = formDecode(pair.slice(0, eq));
    if (fields.has(name)) {
      throw new InvalidLinkError(`the link repeats ${name}`);
    }
    fields.set(name, formDecode(pair.slice(eq + 1)));
  }
  const attemptId = fields.get("attempt_id");
  const emailHalf = fields.get("email_half");
  if (attemptId === undefined || emailHalf === undefined) {
    throw new InvalidLinkError("the link lacks its attempt id or email half");
  }
  try {
    base64urlDecode(attemptId, ATTEMPT_ID_BYTES);
    base64urlDecode(emailHalf, HALF_BYTES);
  } catch {
    throw new InvalidLinkError("the link's values are not of the right form; was it cut short?");
  }
  return { attemptId, emailHalf };
}

function formDecode(text: string): string {
  try {
    return decodeURIComponent(text.replace(/\+/g, " "));
  } catch {
    throw new InvalidLinkError("the link's fragment has a bad percent-escape");
  }
}
