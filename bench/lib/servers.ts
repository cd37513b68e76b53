// The servers the contenders measure against: Postgres (embedded unless DATABASE_URL is set) with
// pgbench's accounts table, workerd running the bench Worker (wrangler's unstable_startWorker),
// and pgbouncer. Everything started here registers its own cleanup.
import { chownSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { spawn, spawnSync } from "node:child_process";
import os from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { freePort, startEmbeddedPostgres } from "../../test/setup/embedded.ts";
import type { RunRequest } from "../worker.ts";
import { ACCOUNTS, POOL_SIZE, type Config } from "./config.ts";
import { heapMiB } from "./inspector.ts";
import { alive, children, cpuMs, descendants, log, onCleanup, sleep, stopChild, tool, type Machine } from "./system.ts";

export type Sql = postgres.Sql;

/** Waits (10 s at most) until the server shows no connection with this application_name: a previous pool is gone. */
export async function drained(admin: Sql, app: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const [{ n }] = await admin<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where application_name = ${app}`;
    if (n === 0) return;
    await sleep(50);
  }
  log(`warning: connections tagged ${app} are still open after 10 s`);
}

// ---------------------------------------------------------------------------------------------
// Postgres

/** DATABASE_URL, or else the URL of an embedded Postgres started here. */
export async function startPostgres(): Promise<string> {
  let databaseUrl = process.env.DATABASE_URL;
  if (!databaseUrl) {
    const pg = await startEmbeddedPostgres({ maxConnections: 300 });
    onCleanup("postgres", () => pg.stop());
    databaseUrl = pg.url;
  }
  return databaseUrl;
}

/** Makes sure pgbench_accounts is there with its ACCOUNTS rows; refuses a table of that name that is not pgbench's. */
export async function ensureAccounts(admin: Sql, dbUrl: URL): Promise<void> {
  const [{ n: existing }] = await admin<{ n: number }[]>`
    select count(*)::int as n from pg_class where relname = 'pgbench_accounts' and relkind = 'r'`;
  if (existing && (await admin`select 1 from pgbench_accounts where aid = ${ACCOUNTS}`).length === 0) {
    throw new Error(`pgbench_accounts exists in ${dbUrl.host}${dbUrl.pathname} but has no account ${ACCOUNTS}: the bench will not touch it (drop it, or use another database)`);
  }
  if (!existing) {
    // pgbench's accounts table at scale 1 (what `pgbench -i -s 1` makes), created here so the
    // suite does not depend on pgbench being installed.
    await admin.unsafe(`
      create table pgbench_accounts (aid int not null, bid int, abalance int, filler char(84)) with (fillfactor = 100);
      insert into pgbench_accounts (aid, bid, abalance, filler) select aid, 1, 0, '' from generate_series(1, ${ACCOUNTS}) as aid;
      alter table pgbench_accounts add primary key (aid);
    `);
    await admin.unsafe("vacuum analyze pgbench_accounts");
    log(`created pgbench_accounts (${ACCOUNTS} rows)`);
  }
}

// ---------------------------------------------------------------------------------------------
// workerd

export interface Workerd {
  /** GET `path` of the bench Worker, or POST `body` to it as JSON; throws on an error status. */
  call: (path: string, body: unknown) => Promise<any>;
  /** The workerd process that runs the bench Worker (not wrangler's proxy), if it was found. */
  pids: number[];
  /** Every workerd process this wrangler session started (SCALE_PIN pins them to a core). */
  processes: number[];
  /** The isolate's JS heap in MiB (NaN when the inspector cannot be reached). */
  heapMiB: () => Promise<number>;
  /** wrangler's inspector proxy for the isolate (bench/profile.ts attaches the CPU profiler there). */
  inspectorUrl: string;
  /** Stops this wrangler session and its workerd processes (also done by the cleanup at exit). */
  dispose: () => Promise<void>;
}

/** How to start one wrangler session: `registry`, a dev registry directory shared by sessions that bind to each other. */
export interface SessionOptions {
  registry?: string;
  /** Names the session in the log. */
  label?: string;
}

/** Starts the bench Worker in workerd with wrangler's programmatic API (disposed of by the cleanup). */
export async function startWorkerd(
  wranglerConfig: string,
  databaseUrl: string,
  config: Pick<Config, "durationMs" | "warmupMs">,
  facts: Machine,
  session: SessionOptions = {},
): Promise<Workerd> {
  process.env.WRANGLER_SEND_METRICS = "false";
  process.env.CLOUDFLARE_CF_FETCH_ENABLED ??= "false";
  // wrangler's local dev tools, on by default: the observability collector is a streaming tail
  // consumer that records every invocation (each RPC call) into SQLite, and the local explorer
  // wraps Durable Objects. Together they more than tripled the CPU of a Durable Object RPC call
  // here; neither exists in production workerd, so the bench turns them off.
  process.env.X_LOCAL_OBSERVABILITY = "false";
  process.env.X_LOCAL_EXPLORER = "false";
  const signals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
  const ours = new Map(signals.map((s) => [s, new Set(process.listeners(s as NodeJS.Signals))]));
  const { unstable_startWorker } = await import("wrangler");
  const before = new Set(descendants(process.pid).map((p) => p.pid));
  const worker = await unstable_startWorker({
    config: wranglerConfig,
    bindings: { DATABASE_URL: { type: "plain_text", value: databaseUrl } },
    dev: {
      server: { hostname: "127.0.0.1", port: await freePort() },
      // The inspector: the isolate's JS heap between runs (Runtime.getHeapUsage), and bench/profile.ts's CPU profiler.
      inspector: { hostname: "127.0.0.1", port: await freePort() },
      persist: false,
      watch: false,
      logLevel: "warn",
      ...(session.registry ? { registry: session.registry } : {}),
    },
  } as never);
  let started: number[] = [];
  let disposed: Promise<void> | undefined;
  const dispose = () => (disposed ??= (async () => {
    await worker.dispose().catch(() => {});
    // dispose() stops workerd; make sure, by pid, that the ones this session started are gone.
    for (const pid of started) if (alive(pid)) process.kill(pid, "SIGKILL");
  })());
  onCleanup(`workerd${session.label ? ` (${session.label})` : ""}`, dispose);
  // Fail, not hang, when workerd does not come up (wrangler also restarts it when a bundled source file
  // changes, watch off or not: in a checkout others are editing, that can stall a start).
  await withTimeout(worker.ready, 120_000, `wrangler did not start ${session.label ?? "the bench Worker"} within 120 s`);
  started = descendants(process.pid).filter((p) => p.comm === "workerd" && !before.has(p.pid)).map((p) => p.pid);
  // wrangler installs its own handlers that exit the process at once on Ctrl-C, before this
  // script stopped pgbouncer and Postgres: leave the shutdown to ours (which disposes workerd too).
  for (const s of signals) {
    for (const l of process.listeners(s as NodeJS.Signals)) if (!ours.get(s)!.has(l)) process.removeListener(s, l);
  }
  const callWorker: Workerd["call"] = async (path, body) => {
    const response = await worker.fetch(`http://bench${path}`, {
      method: body === undefined ? "GET" : "POST",
      body: body === undefined ? undefined : JSON.stringify(body),
      headers: { "content-type": "application/json" },
      signal: AbortSignal.timeout(config.durationMs + config.warmupMs + 60_000),
    });
    const json = await response.json();
    if (!response.ok) throw new Error(`worker ${path}: ${(json as { error?: string }).error ?? response.status}`);
    return json;
  };
  // wrangler runs two workerd processes (its dev proxy, and the one running the bench Worker):
  // the one that burns CPU while the Worker loops is ours.
  const probe: RunRequest = { contender: "rpc-noop", query: "select1", concurrency: 1, durationMs: 500, warmupMs: 0, tenant: "" };
  await callWorker("/run", probe);
  const candidates = descendants(process.pid).filter((p) => p.comm === "workerd" && !before.has(p.pid)).map((p) => p.pid);
  started = [...new Set([...started, ...candidates])];
  for (const pid of candidates) children.add(pid);
  const cpuBefore = candidates.map((pid) => cpuMs(pid));
  await callWorker("/run", probe);
  const used = candidates.map((pid, i) => cpuMs(pid) - cpuBefore[i]!);
  const busiest = candidates[used.indexOf(Math.max(...used))];
  const workerdPids = busiest ? [busiest] : [];
  log(`workerd ${facts.workerd}${session.label ? ` for ${session.label}` : ""} (pid ${busiest ?? "?"}, of ${candidates.length} started by wrangler ${facts.wrangler})`);
  const inspectorUrl = String(await worker.inspectorUrl);
  const heap = () => heapMiB(inspectorUrl);
  if (Number.isNaN(await heap())) log("warning: no inspector, so no JS heap figures");
  return { call: callWorker, pids: workerdPids, processes: started, heapMiB: heap, inspectorUrl, dispose };
}

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms))),
  ]).finally(() => clearTimeout(timer));
}

/**
 * The two-process setup: the bench Worker `script` twice, in two wrangler sessions (two workerd
 * processes) that find each other through a private dev registry. The coordinator session owns the
 * `PoolCoordinator` Durable Objects; the load session's `EDGEPOOL` binding names that class in the
 * coordinator's script (`script_name`), so every call crosses to the other process (miniflare
 * forwards it over workerd's debug port, RPC and streams included). Each process's CPU is then
 * its own: the load generator and client libraries in one, the coordinator in the other.
 */
export async function startSplit(
  script: string, label: string, databaseUrl: string, config: Pick<Config, "durationMs" | "warmupMs">, facts: Machine,
): Promise<{ load: Workerd; coordinator: Workerd; dispose: () => Promise<void> }> {
  const dir = mkdtempSync(join(os.tmpdir(), `edgepool-split-${label}-`));
  const registry = join(dir, "registry");
  onCleanup(`split files ${label}`, () => rmSync(dir, { recursive: true, force: true }));
  const coordName = `edgepool-bench-${label}-coordinator`;
  const common = (name: string) => [
    `name = "${name}"`,
    `main = ${JSON.stringify(script)}`,
    `compatibility_date = "2026-11-01"`,
    `compatibility_flags = ["nodejs_compat"]`,
  ];
  writeFileSync(join(dir, "coordinator.toml"), [
    ...common(coordName),
    "[[durable_objects.bindings]]", `name = "EDGEPOOL"`, `class_name = "PoolCoordinator"`,
    "[[durable_objects.bindings]]", `name = "BENCH_ECHO"`, `class_name = "BenchEcho"`,
    "[[durable_objects.bindings]]", `name = "BENCH_ECHO_REMOTE"`, `class_name = "BenchEcho"`,
    "[[migrations]]", `tag = "v1"`, `new_sqlite_classes = ["PoolCoordinator", "BenchEcho"]`, "",
  ].join("\n"));
  writeFileSync(join(dir, "load.toml"), [
    ...common(`edgepool-bench-${label}-load`),
    "[[durable_objects.bindings]]", `name = "EDGEPOOL"`, `class_name = "PoolCoordinator"`, `script_name = "${coordName}"`,
    "[[durable_objects.bindings]]", `name = "BENCH_ECHO"`, `class_name = "BenchEcho"`,
    // For the forwarding's own cost: a no-op object in the coordinator's workerd.
    "[[durable_objects.bindings]]", `name = "BENCH_ECHO_REMOTE"`, `class_name = "BenchEcho"`, `script_name = "${coordName}"`,
    "[[migrations]]", `tag = "v1"`, `new_sqlite_classes = ["BenchEcho"]`, "",
  ].join("\n"));
  const coordinator = await startWorkerd(join(dir, "coordinator.toml"), databaseUrl, config, facts, { registry, label: `${label} coordinator` });
  const load = await startWorkerd(join(dir, "load.toml"), databaseUrl, config, facts, { registry, label: `${label} load generator` });
  return { load, coordinator, dispose: async () => (await load.dispose(), await coordinator.dispose()) };
}

// ---------------------------------------------------------------------------------------------
// pgbouncer

/**
 * pgbouncer with a pool of POOL_SIZE, from a temporary ini; the cleanup stops it and removes the files.
 * Transaction mode unless told otherwise; `settings`, more `[pgbouncer]` lines (`max_prepared_statements = 100`).
 */
export async function startPgbouncer(bin: string, db: URL, mode: "transaction" | "session" = "transaction", settings: string[] = []): Promise<{ url: string; pid: number }> {
  const dir = mkdtempSync(join(os.tmpdir(), "edgepool-pgbouncer-"));
  onCleanup("pgbouncer files", () => rmSync(dir, { recursive: true, force: true }));
  const port = await freePort();
  const user = decodeURIComponent(db.username);
  const password = decodeURIComponent(db.password);
  // Clients authenticate to pgbouncer with SCRAM (as to the server); pgbouncer logs in to the
  // server with SCRAM too, which needs the password itself in its auth_file (a temp file, 0600).
  writeFileSync(join(dir, "userlist.txt"), `"${user}" "${password.replace(/"/g, '""')}"\n`, { mode: 0o600 });
  writeFileSync(join(dir, "pgbouncer.ini"), [
    "[databases]",
    `${db.pathname.slice(1) || "postgres"} = host=${db.hostname} port=${db.port || 5432} dbname=${db.pathname.slice(1) || "postgres"}`,
    "[pgbouncer]",
    "listen_addr = 127.0.0.1",
    `listen_port = ${port}`,
    "unix_socket_dir =",
    "auth_type = scram-sha-256",
    `admin_users = ${user}`,
    `auth_file = ${join(dir, "userlist.txt")}`,
    `pool_mode = ${mode}`,
    `default_pool_size = ${POOL_SIZE}`,
    `max_db_connections = ${POOL_SIZE}`,
    "min_pool_size = 0",
    "reserve_pool_size = 0",
    "max_client_conn = 2000",
    "ignore_startup_parameters = extra_float_digits,options",
    "log_connections = 0",
    "log_disconnections = 0",
    "log_stats = 0",
    ...settings,
    "",
  ].join("\n"), { mode: 0o600 });
  // pgbouncer refuses to run as root: as root, it drops to the postgres user (-u).
  const args = [join(dir, "pgbouncer.ini")];
  if (process.getuid?.() === 0) {
    const ids = spawnSync("id", ["-u", "postgres"], { encoding: "utf8" });
    if (ids.status !== 0) throw new Error("pgbouncer cannot run as root and there is no `postgres` user to run it as");
    const uid = Number(ids.stdout.trim());
    for (const f of [dir, join(dir, "userlist.txt"), join(dir, "pgbouncer.ini")]) chownSync(f, uid, -1);
    args.unshift("-u", "postgres");
  }
  const output: string[] = [];
  const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  if (child.pid) children.add(child.pid);
  child.stdout!.on("data", (d) => output.push(String(d)));
  child.stderr!.on("data", (d) => output.push(String(d)));
  onCleanup("pgbouncer", () => stopChild(child, "pgbouncer"));
  const url = `postgres://${db.username}:${db.password}@127.0.0.1:${port}${db.pathname || "/postgres"}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`pgbouncer exited (${child.exitCode}):\n${output.join("").slice(-2000)}`);
    const probe = postgres(url, { max: 1, prepare: false, onnotice: () => {}, connect_timeout: 2 });
    try {
      await probe`select 1`;
      break;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`pgbouncer did not answer on 127.0.0.1:${port}: ${(error as Error).message}\n${output.join("").slice(-2000)}`);
      await sleep(100);
    } finally {
      await probe.end({ timeout: 0 });
    }
  }
  log(`${tool(bin, ["--version"]).split("\n")[0]} (pid ${child.pid}) on 127.0.0.1:${port}, ${mode} mode, pool ${POOL_SIZE}`);
  return { url, pid: child.pid! };
}

/** pgbouncer's admin console (simple protocol only): RECONNECT empties its pool between cells. */
export function pgbouncerConsole(url: string): Sql {
  const adminUrl = new URL(url);
  adminUrl.pathname = "/pgbouncer";
  const consoleConnection = postgres(adminUrl.href, { max: 1, prepare: false, fetch_types: false, onnotice: () => {} });
  onCleanup("pgbouncer console", () => consoleConnection.end({ timeout: 1 }));
  return consoleConnection;
}
