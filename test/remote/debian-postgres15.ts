// A throwaway PostgreSQL 15 server from Debian's packages (postgresql-15: /usr/lib/postgresql/15/bin),
// for tests whose tools must match the server's major version (pg_dump 15 refuses a newer server).
// As root, initdb and postgres run as the `postgres` OS user (spawn's uid/gid: the pid we hold is
// postgres itself, so SIGINT is its fast shutdown); the data directory is under os.tmpdir().
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chownSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { freePort } from "../setup/embedded.ts";

export const PG15_BIN = "/usr/lib/postgresql/15/bin";

export interface DebianPostgres15 {
  /** The superuser's URL (`postgres`, password auth) for a database on this server. */
  url(database?: string): string;
  port: number;
  /** `PG15_BIN/<tool>`: pg_dump, psql, ... of the server's own version. */
  tool(name: string): string;
  /** Fast shutdown (SIGINT), then the data directory is removed. */
  stop(): Promise<void>;
}

/** Throws, saying what to install, unless Debian's PostgreSQL 15 server binaries are there. */
export function requirePostgres15(): void {
  const missing = ["initdb", "postgres", "pg_dump", "psql"].filter((name) => !existsSync(join(PG15_BIN, name)));
  if (missing.length) {
    throw new Error(
      `PostgreSQL 15 is not installed (${missing.map((name) => join(PG15_BIN, name)).join(", ")} missing): ` +
        "the pg_dump test starts a Postgres 15 server of its own to match Debian 12's pg_dump 15; " +
        "install it with `apt-get install postgresql-15` (.ci/run does when psql or pgbench is missing)",
    );
  }
}

/** As root: the `postgres` OS user's uid and gid (Debian's package creates it). */
function postgresUser(): { uid: number; gid: number } | undefined {
  if (userInfo().uid !== 0) return undefined;
  const id = (flag: string) => spawnSync("id", [flag, "postgres"], { encoding: "utf8" });
  const uid = id("-u");
  const gid = id("-g");
  if (uid.status !== 0 || gid.status !== 0) throw new Error("running as root, but there is no `postgres` OS user to run PostgreSQL 15 as (apt-get install postgresql-15 creates it)");
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

export async function startDebianPostgres15(): Promise<DebianPostgres15> {
  requirePostgres15();
  // The free port is only probed, not held: retry if another process takes it first.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce();
    } catch (err) {
      if (attempt === 3) throw err;
    }
  }
}

async function startOnce(): Promise<DebianPostgres15> {
  const user = postgresUser();
  const base = mkdtempSync(join(tmpdir(), "edgepool-pg15-"));
  const dataDir = join(base, "data");
  const password = randomBytes(12).toString("hex");
  const pwfile = join(base, "pwfile");
  writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  if (user) for (const path of [base, pwfile]) chownSync(path, user.uid, user.gid);
  const options = { cwd: base, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", LANG: "C", LC_ALL: "C", HOME: base }, ...(user ?? {}) };
  const cleanup = () => rmSync(base, { recursive: true, force: true, maxRetries: 2 });

  const initdb = spawnSync(join(PG15_BIN, "initdb"), ["-D", dataDir, "-U", "postgres", `--pwfile=${pwfile}`, "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"], { ...options, encoding: "utf8" });
  if (initdb.status !== 0) {
    cleanup();
    throw new Error(`PostgreSQL 15 initdb failed (${initdb.status ?? initdb.error}):\n${initdb.stdout}${initdb.stderr}`);
  }
  const port = await freePort();
  const flags = { listen_addresses: "127.0.0.1", unix_socket_directories: "", port: String(port), fsync: "off", max_connections: "50" };
  const child: ChildProcess = spawn(join(PG15_BIN, "postgres"), ["-D", dataDir, ...Object.entries(flags).flatMap(([k, v]) => ["-c", `${k}=${v}`])], { ...options, stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const alive = () => child.exitCode === null && child.signalCode === null;
  // Last resort when the process exits without stop().
  const onExit = () => void (alive() && child.kill("SIGINT"));
  process.on("exit", onExit);
  const stop = async () => {
    process.removeListener("exit", onExit);
    if (alive()) {
      child.kill("SIGINT");
      const killed = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(killed);
    }
    cleanup();
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("did not accept connections within 15 s")), 15_000);
      child.stderr!.on("data", (d) => {
        log = (log + d).slice(-8000);
        if (log.includes("database system is ready to accept connections")) {
          clearTimeout(timer);
          resolve();
        }
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`exited (${child.exitCode ?? child.signalCode})`));
      });
    });
  } catch (err) {
    await stop();
    throw new Error(`PostgreSQL 15 failed to start on 127.0.0.1:${port}: ${(err as Error).message}\n${log}`);
  }
  return {
    port,
    url: (database = "postgres") => `postgres://postgres:${password}@127.0.0.1:${port}/${database}`,
    tool: (name) => join(PG15_BIN, name),
    stop,
  };
}
