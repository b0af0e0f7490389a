// A real `splitlink serve` process for end-to-end tests: its own port, data directory and SQLite
// database, the development mailbox, and settings from `env` (README, Settings).

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = fileURLToPath(new URL("../../../../../", import.meta.url));
const SPLITLINK = join(REPO_ROOT, ".venv", "bin", "splitlink");

export interface RunningServer {
  readonly url: string;
  readonly dataDir: string;
  readonly mailDir: string;
  log(): string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0));
    });
  });
}

export async function startServer(env: Record<string, string> = {}): Promise<RunningServer> {
  if (!existsSync(SPLITLINK)) {
    throw new Error(`${SPLITLINK} is missing: run make install at the repository root`);
  }
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const dataDir = mkdtempSync(join(tmpdir(), "splitlink-js-"));
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("SPLITLINK_")));
  const environment: NodeJS.ProcessEnv = {
    ...inherited,
    PYTHONPATH: REPO_ROOT,
    SPLITLINK_PUBLIC_URL: url,
    SPLITLINK_DATA_DIR: dataDir,
    SPLITLINK_DATABASE_URL: `sqlite:///${join(dataDir, "splitlink.db")}`,
    SPLITLINK_OUTBOX_POLL_INTERVAL: "0.1",
    SPLITLINK_DEV_MAILBOX_CONSOLE: "false",
    SPLITLINK_RATE_LIMIT_START_PER_IP: "1000",
    SPLITLINK_RATE_LIMIT_COMPLETE_PER_IP: "1000",
    ...env,
  };
  const migrate = spawnSync(SPLITLINK, ["migrate"], { env: environment, encoding: "utf8" });
  if (migrate.status !== 0) {
    throw new Error(`splitlink migrate failed:\n${migrate.stderr}`);
  }
  const logPath = join(dataDir, "server.log");
  const { openSync } = await import("node:fs");
  const log = openSync(logPath, "w");
  const child: ChildProcess = spawn(SPLITLINK, ["serve", "--host", "127.0.0.1", "--port", String(port), "--workers", "1"], {
    env: environment,
    stdio: ["ignore", log, log],
    detached: true,
  });
  const readLog = (): string => (existsSync(logPath) ? readFileSync(logPath, "utf8") : "");
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const response = await fetch(`${url}/.well-known/oauth-authorization-server`);
      if (response.status === 200) break;
    } catch {
      // Not listening yet.
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`the server did not start:\n${readLog()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    url,
    dataDir,
    mailDir: join(dataDir, "mail"),
    log: readLog,
    async stop() {
      if (child.exitCode === null && child.pid !== undefined) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        process.kill(-child.pid, "SIGTERM");
        const timer = setTimeout(() => child.pid !== undefined && process.kill(-child.pid, "SIGKILL"), 10_000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
