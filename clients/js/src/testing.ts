/**
 * Integration testing against a development server (Node only).
 *
 * Without `SPLITLINK_SMTP_URL`, `splitlink serve` writes every message to
 * `<data dir>/mail/<outbox id>.eml` (renamed into place whole; docs/design.md §13). These helpers read
 * the login link from there, so a test signs in exactly as a user would: start, open the mail,
 * hand the link to the app.
 */

import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";

import type { LoginStarted, SplitlinkClient, StartLoginOptions } from "./client.js";
import { SplitlinkError } from "./errors.js";

export interface DevMailboxOptions {
  /** The server's `data_dir` + `/mail` (`SPLITLINK_DATA_DIR`, default `var`). */
  readonly mailDir: string;
  /** How long to wait for the dispatcher to write the message (default 10 s). */
  readonly timeoutMs?: number;
}

/** The login link for `attemptId`, once the development mailbox holds its message. */
export async function readLoginLink(attemptId: string, options: DevMailboxOptions): Promise<string> {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  const pattern = new RegExp(
    `(https?://[^\\s"<>]+/l#attempt_id=${escapeRegExp(attemptId)}&email_half=[A-Za-z0-9_-]+)`,
  );
  for (;;) {
    let names: string[] = [];
    try {
      names = (await readdir(options.mailDir)).filter((name) => name.endsWith(".eml") && !name.startsWith("."));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") {
        throw error;
      }
    }
    for (const name of names) {
      const text = decodeQuotedPrintable(await readFile(join(options.mailDir, name), "latin1"));
      const found = pattern.exec(text);
      if (found !== null) {
        return found[1]!;
      }
    }
    if (Date.now() > deadline) {
      throw new SplitlinkError("not_found", `no login mail for attempt ${attemptId} in ${options.mailDir}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export interface SignInOptions extends DevMailboxOptions, StartLoginOptions {}

/** Start a login, read its link from the development mailbox, and complete it. */
export async function signInWithDevMailbox(
  client: SplitlinkClient,
  email: string,
  options: SignInOptions,
): Promise<LoginStarted> {
  const started = await client.startLogin(email, options.deviceName === undefined ? {} : { deviceName: options.deviceName });
  const pending = await client.pendingLogin();
  if (pending === null) {
    throw new SplitlinkError("invalid_response", "the login start left no pending login");
  }
  await client.completeFromLink(await readLoginLink(pending.attemptId, options));
  return started;
}

// Text parts are quoted-printable (docs/design.md §13.1): soft line breaks and `=3D` for `=`.
function decodeQuotedPrintable(text: string): string {
  return text.replace(/=\r?\n/g, "").replace(/=([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&");
}
