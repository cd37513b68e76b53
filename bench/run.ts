// `npm run bench`: every contender, one run, one machine. Starts an embedded Postgres, creates
// pgbench's 100k-row accounts table, starts workerd (wrangler's programmatic API) with the bench
// Worker, pgbouncer if it is installed, then measures each contender and writes
// bench/results.md, bench/results.json and bench/throughput.svg. Everything it starts is stopped
// again, also on failure or Ctrl-C. Knobs (environment):
//   BENCH_DURATION_MS (2500)  measured time per run      BENCH_WARMUP_MS (500)  unmeasured warm-up per run
//   BENCH_REPS (3)            runs per cell (median, min-max)
//   BENCH_CONCURRENCY (1,10,100)  BENCH_QUERIES (select1,point)  BENCH_CONTENDERS (all six)
//   BENCH_OUT (bench/)        where the three files go    DATABASE_URL: use that server instead of embedded
// This file is the sequence; the parts are in bench/lib/: config, system (cleanup, processes,
// /proc), servers, inspector, runners, stats, report.
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import type { QueryName } from "./worker.ts";
import { CONTEXT, POOL_SIZE, readConfig, type Contender } from "./lib/config.ts";
import { commandLine, chart, fmt, markdown } from "./lib/report.ts";
import { nodeRun, pgbenchRun, Sampler, workerRun, type Run } from "./lib/runners.ts";
import { ensureAccounts, pgbouncerConsole, startPgbouncer, startPostgres, startWorkerd, type Sql } from "./lib/servers.ts";
import { findPgbouncer, log, machine, onCleanup, rssMiB, runToEnd, sleep, which } from "./lib/system.ts";

if (Number(process.versions.node.split(".")[0]) < 22) {
  console.error(`bench: Node ${process.version} is too old; run \`npm run bench\` (uses Node 22 from node_modules/.bin).`);
  process.exit(1);
}

// ---------------------------------------------------------------------------------------------
// Configuration

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..");
const config = readConfig(here);

// ---------------------------------------------------------------------------------------------
// Main

const started = new Date();
const t0 = performance.now();
const facts = machine(root);
const loadBefore = os.loadavg();
const runs: Run[] = [];
const contextRuns: Run[] = [];
const skipped: Record<string, string> = {};
let postgresVersion = "?";

await runToEnd(async () => {
  mkdirSync(config.out, { recursive: true });
  log(`${facts.cores} cores, ${facts.memoryGiB} GiB, Node ${facts.node}; ${config.reps} reps × ${config.durationMs} ms (+${config.warmupMs} ms warm-up) per cell`);
  if (loadBefore[0]! > facts.cores / 2) {
    log(`warning: load average ${loadBefore[0]!.toFixed(2)} on ${facts.cores} cores: something else is running, expect noisy numbers`);
  }

  // Postgres -----------------------------------------------------------------------------------
  const databaseUrl = await startPostgres();
  const dbUrl = new URL(databaseUrl);
  const admin = postgres(databaseUrl, { max: 1, onnotice: () => {}, connection: { application_name: "bench:monitor" } });
  onCleanup("monitor connection", () => admin.end({ timeout: 1 }));
  postgresVersion = (await admin<{ v: string }[]>`select version() as v`)[0]!.v;
  log(`${postgresVersion.split(",")[0]} at ${dbUrl.host}`);
  await ensureAccounts(admin, dbUrl);

  // workerd ------------------------------------------------------------------------------------
  const workerContenders = config.contenders.filter((c) => c === "naive" || c === "oneshot" || c === "lease");
  const workerd = workerContenders.length ? await startWorkerd(join(here, "wrangler.bench.toml"), databaseUrl, config, facts) : undefined;
  const workerdPids = workerd?.pids ?? [];
  const workerdRssIdle = workerdPids.length ? workerdPids.reduce((sum, pid) => sum + rssMiB(pid), 0) : NaN;
  const workerdHeapIdle = workerd ? await workerd.heapMiB() : NaN;

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
      pgbouncerAdmin = pgbouncerConsole(started.url);
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
    if (config.context && workerd) {
      for (const { probe, concurrency } of CONTEXT) {
        currentRssPids = workerdPids;
        await drained("bench:context");
        const run = await workerRun(config, workerd, sampler, probe, "", "select1", concurrency, rep);
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
        await workerd!.call("/setup", { tenants: [tenantOf(contender)], options: { maxConnections: POOL_SIZE } });
        await drained(`edgepool:${tenantOf(contender)}`);
        run = await workerRun(config, workerd!, sampler, contender, tenantOf(contender), query, concurrency, rep);
      } else if (contender === "naive") {
        currentRssPids = workerdPids;
        await drained("bench:naive");
        run = await workerRun(config, workerd!, sampler, contender, "", query, concurrency, rep);
      } else if (contender === "direct") {
        currentRssPids = [];
        const direct = postgres(databaseUrl, {
          // postgres.js's defaults, prepared statements included: the ceiling a JS client reaches.
          max: POOL_SIZE, idle_timeout: 0, max_lifetime: 0, onnotice: () => {},
          connection: { application_name: "bench:direct" },
        });
        try {
          await drained("bench:direct");
          run = await nodeRun(config, direct, sampler, "direct", "bench:direct", query, concurrency, rep);
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
          run = await nodeRun(config, clients, sampler, "pgbouncer", "bench:pgbouncer", query, concurrency, rep, pgbouncerPid);
        } finally {
          await clients.end({ timeout: 1 });
        }
      } else {
        currentRssPids = [];
        run = await pgbenchRun(config, pgbench!, dbUrl, sampler, query, concurrency, rep);
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
  writeFileSync(join(config.out, "throughput.svg"), chart(runs, config));
  writeFileSync(join(config.out, "results.md"), markdown(report));
  log(`wrote ${["results.md", "results.json", "throughput.svg"].map((f) => relative(process.cwd(), join(config.out, f))).join(", ")} in ${Math.round(finishedIn)} s`);
});
