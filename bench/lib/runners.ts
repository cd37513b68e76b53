// The contenders' runners: one run of one cell (a contender, a query, a concurrency) measured
// from inside workerd (workerRun), from this Node process (nodeRun) or by pgbench (pgbenchRun),
// with the server side sampled meanwhile (Sampler).
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import type { QueryName, RunRequest, RunResult, WorkerContender } from "../worker.ts";
import { ACCOUNTS, EDGEPOOL_CONTENDERS, POINT_SELECT, POOL_SIZE, type Config, type Contender, type ContextProbe } from "./config.ts";
import type { Sql, Workerd } from "./servers.ts";
import { exactLatency, tickLatency, type Latency } from "./stats.ts";
import { children, cpuMs, onCleanup, ownCpuMs, rssMiB, sleep, stopChild } from "./system.ts";

/** How long each run measures, and warms up before. */
export type Timing = Pick<Config, "durationMs" | "warmupMs">;

// ---------------------------------------------------------------------------------------------
// The server's side: peak server connections per application_name, pooler memory.

export class Sampler {
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

export interface Run {
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
// Runners

export async function workerRun(
  config: Timing, workerd: Workerd, sampler: Sampler,
  contender: WorkerContender, tenant: string, query: QueryName, concurrency: number, rep: number,
): Promise<Run> {
  const { call, pids: workerdPids } = workerd;
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
  const edgepool = contender === "oneshot" || EDGEPOOL_CONTENDERS.includes(contender as Contender);
  const stats = (!edgepool ? undefined : await call(`/stats?tenant=${tenant}`, undefined)) as
    | { total: number; created: number; peakDemand: number; sizing: { verdict: string } }
    | undefined;
  const seconds = result.elapsedMs / 1000;
  const run: Run = {
    contender: contender as Contender | ContextProbe, query, concurrency, rep,
    qps: result.queries / seconds,
    opsPerSec: result.ops / seconds,
    ops: result.ops,
    errors: result.errors,
    firstError: result.firstError,
    latency: tickLatency(result.latencies),
    clock: "ms",
    serverConnections: sampler.peak(edgepool ? `edgepool:${tenant}` : contender === "naive" ? "bench:naive" : contender === "pgjs-workerd" ? "bench:workerd" : contender === "rpc-pg" ? "bench:rpc-pg" : "bench:context"),
    poolerRssMiB: sampler.rssPeak,
    cpuUsPerQuery,
    heapMiB: await workerd.heapMiB(),
    pool: stats ? { total: stats.total, created: stats.created, peakDemand: stats.peakDemand, sizing: stats.sizing.verdict } : undefined,
  };
  if (result.acquire && result.release) {
    run.acquire = tickLatency(result.acquire);
    run.release = tickLatency(result.release);
    run.overhead = tickLatency(result.acquire.map((a, i) => a + result.release![i]!));
  }
  return run;
}

/** `pgbouncerPid`: whose CPU counts with this process's when the contender is pgbouncer. */
export async function nodeRun(
  config: Timing, sql: Sql, sampler: Sampler, contender: "direct" | "pgbouncer", app: string, query: QueryName, concurrency: number, rep: number,
  pgbouncerPid?: number,
): Promise<Run> {
  const op = queryOp(sql, query);
  sampler.start();
  let result;
  let warmupOps = 0;
  const cpu0 = ownCpuMs() + (contender === "pgbouncer" ? cpuMs(pgbouncerPid) : 0);
  try {
    if (config.warmupMs > 0) warmupOps = (await nodeLoops(concurrency, config.warmupMs, op, false)).ops;
    result = await nodeLoops(concurrency, config.durationMs, op, true);
  } finally {
    await sampler.stop();
  }
  const cpu1 = ownCpuMs() + (contender === "pgbouncer" ? cpuMs(pgbouncerPid) : 0);
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

export async function pgbenchRun(config: Timing, bin: string, db: URL, sampler: Sampler, query: QueryName, concurrency: number, rep: number): Promise<Run> {
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
      "-n", "-M", "prepared", "-c", String(clients), "-j", String(threads), "-T", String(seconds),
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
// The two-process run: the load generator and the coordinator in two workerd processes.

/** One run of the two-process setup. CPU per query counts the warm-up in both time and queries. */
export interface SplitRun {
  /** Which coordinator: today's (v2) or the v1 checkout's. */
  version: "v2" | "v1";
  /**
   * For v1, the bench Worker's `oneshot` (a long-lived `createPool` per loop, as v1's bench had it).
   * `rpc-noop-remote`: a no-op Durable Object call into the coordinator's workerd, what the forwarding itself costs.
   */
  contender: Contender | "rpc-noop-remote";
  query: QueryName;
  concurrency: number;
  rep: number;
  qps: number;
  errors: number;
  firstError?: string;
  latency: Latency;
  serverConnections: number;
  /** The load generator's workerd (loops, client libraries, the calling side of each RPC). */
  loadCpuUsPerQuery: number;
  /** The coordinator's workerd (the Durable Object: wire sessions, pool, server sockets). */
  coordinatorCpuUsPerQuery: number;
}

export async function splitRun(
  config: Timing, split: { load: Workerd; coordinator: Workerd }, sampler: Sampler, version: "v2" | "v1",
  contender: Contender | "rpc-noop-remote", tenant: string, query: QueryName, concurrency: number, rep: number,
): Promise<SplitRun> {
  const request: RunRequest = {
    contender: version === "v1" ? "oneshot" : (contender as WorkerContender),
    query, concurrency, durationMs: config.durationMs, warmupMs: config.warmupMs, tenant,
  };
  const cpu = (w: Workerd) => w.pids.reduce((sum, pid) => sum + cpuMs(pid), 0);
  sampler.start();
  let result: RunResult;
  const load0 = cpu(split.load);
  const coord0 = cpu(split.coordinator);
  try {
    result = (await split.load.call("/run", request)) as RunResult;
  } finally {
    await sampler.stop();
  }
  const queries = result.queries + result.warmupQueries;
  return {
    version, contender, query, concurrency, rep,
    qps: result.queries / (result.elapsedMs / 1000),
    errors: result.errors,
    firstError: result.firstError,
    latency: tickLatency(result.latencies),
    serverConnections: sampler.peak(`edgepool:${tenant}`),
    loadCpuUsPerQuery: ((cpu(split.load) - load0) * 1000) / queries,
    coordinatorCpuUsPerQuery: ((cpu(split.coordinator) - coord0) * 1000) / queries,
  };
}
