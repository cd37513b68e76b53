// `npm run bench`: every contender, one run, one machine. Starts an embedded Postgres, creates
// pgbench's 100k-row accounts table, starts workerd (wrangler's programmatic API) with the bench
// Worker, pgbouncer if it is installed, then measures each contender and writes
// bench/results.md, bench/results.json and bench/throughput.svg. Everything it starts is stopped
// again, also on failure or Ctrl-C. Knobs (environment):
//   BENCH_DURATION_MS (2000)  measured time per run      BENCH_WARMUP_MS (500)  unmeasured warm-up per run
//   BENCH_REPS (3)            runs per cell (median, min-max)
//   BENCH_CONCURRENCY (1,10,100)  BENCH_QUERIES (select1,point)
//   BENCH_ONLY                contenders by name or prefix (`BENCH_ONLY=pgjs-edgepool,builtin`); all by default;
//                             `none`: only the two-process run
//                             (BENCH_CONTENDERS: exact names, the older knob). Contenders: bench/lib/config.ts.
//   BENCH_SPLIT               two-process run: contenders (names or prefixes of builtin-req, builtin-loop,
//                             pgjs-edgepool-req, pgjs-edgepool-loop, pg-edgepool-req, pg-edgepool-loop;
//                             default the first four, or those of them BENCH_ONLY selects), "0" skips it
//   BENCH_SPLIT_CONCURRENCY (10)  its concurrency levels
//   BENCH_V1_DIR              a checkout of v1 (8ab601e, node_modules linked): its one-shot in the two-process
//                             setup too; also writes <BENCH_OUT>/results-v1.json (without it, the report compares
//                             with that file from an earlier run, and says so). Make the checkout with:
//                               git worktree add --detach /tmp/edgepool-v1 8ab601e
//                               ln -s "$PWD/node_modules" /tmp/edgepool-v1/node_modules
//   BENCH_CONTEXT=0           skip the context probes
//   BENCH_OUT (bench/)        where the files go         DATABASE_URL: use that server instead of embedded
// This file is the sequence; the parts are in bench/lib/: config, system (cleanup, processes,
// /proc), servers, inspector, runners, stats, report.
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import type { QueryName } from "./worker.ts";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { CONTEXT, EDGEPOOL_CONTENDERS, isWorkerContender, POOL_SIZE, readConfig, type Contender } from "./lib/config.ts";
import { commandLine, chart, fmt, markdown } from "./lib/report.ts";
import { nodeRun, pgbenchRun, Sampler, splitRun, workerRun, type Run, type SplitRun } from "./lib/runners.ts";
import { drained as drainedOn, ensureAccounts, pgbouncerConsole, startPgbouncer, startPostgres, startSplit, startWorkerd, type Sql } from "./lib/servers.ts";
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
const splitRuns: SplitRun[] = [];
let v1: V1Results | undefined;
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
  const workerContenders = config.contenders.filter(isWorkerContender);
  const workerd = workerContenders.length ? await startWorkerd(join(here, "wrangler.bench.toml"), databaseUrl, config, facts, { label: "the bench Worker" }) : undefined;
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

  const drained = (app: string) => drainedOn(admin, app);
  const tenantOf = (contender: Contender) => `bench-${contender}`;

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
      if (EDGEPOOL_CONTENDERS.includes(contender)) {
        currentRssPids = workerdPids;
        await workerd!.call("/setup", { tenants: [tenantOf(contender)], options: { maxConnections: POOL_SIZE } });
        await drained(`edgepool:${tenantOf(contender)}`);
        run = await workerRun(config, workerd!, sampler, contender as never, tenantOf(contender), query, concurrency, rep);
      } else if (contender === "naive" || contender === "pgjs-workerd") {
        currentRssPids = workerdPids;
        await drained(contender === "naive" ? "bench:naive" : "bench:workerd");
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

  // The two-process run ------------------------------------------------------------------------
  // The load generator in one workerd, the coordinator in another (bench/lib/servers.ts startSplit):
  // the coordinator's own CPU per query shows. v2 (this checkout), then v1's one-shot (BENCH_V1_DIR).
  await workerd?.dispose();
  const splitPlan: { version: "v2" | "v1"; script: string; contenders: (Contender | "rpc-noop-remote")[] }[] = [];
  // rpc-noop-remote first: the forwarding between the two processes, per call, for reading the rest.
  if (config.split.length) splitPlan.push({ version: "v2", script: join(here, "worker.ts"), contenders: ["rpc-noop-remote", ...config.split] });
  if (config.v1Dir) {
    const script = join(config.v1Dir, "bench", "worker.ts");
    if (!existsSync(script)) throw new Error(`BENCH_V1_DIR: no ${script} (make one with \`git worktree add ${config.v1Dir} 8ab601e\` and link node_modules)`);
    splitPlan.push({ version: "v1", script, contenders: ["builtin-loop"] });
  }
  for (const { version, script, contenders } of splitPlan) {
    const split = await startSplit(script, version, databaseUrl, config, facts);
    try {
      currentRssPids = split.coordinator.pids;
      for (let rep = 1; rep <= config.reps; rep++) {
        for (const query of config.queries) {
          for (const contender of contenders) {
            if (contender === "rpc-noop-remote" && query !== config.queries[0]) continue;
            for (const concurrency of config.splitConcurrency) {
              const tenant = `bench-split-${version}-${contender}`;
              if (contender !== "rpc-noop-remote") {
                await split.load.call("/setup", { tenants: [tenant], options: { maxConnections: POOL_SIZE } });
                await drained(`edgepool:${tenant}`);
              }
              const run = await splitRun(config, split, sampler, version, contender, tenant, query, concurrency, rep);
              splitRuns.push(run);
              log(`two-process ${version} ${version === "v1" ? "oneshot" : contender} ${query} c=${concurrency} rep ${rep}/${config.reps}: ${fmt(run.qps, 0)} q/s, mean ${fmt(run.latency.mean, 3)} ms, ` +
                `CPU µs/query: load generator ${fmt(run.loadCpuUsPerQuery, 0)}, coordinator ${fmt(run.coordinatorCpuUsPerQuery, 0)}, ${run.serverConnections} server conns` +
                `${run.errors ? `, ${run.errors} errors (${run.firstError})` : ""}`);
            }
          }
        }
      }
    } finally {
      await split.dispose();
    }
  }
  if (config.v1Dir) {
    v1 = {
      started: started.toISOString(),
      command: commandLine(),
      commit: execFileSync("git", ["-C", config.v1Dir, "rev-parse", "HEAD"], { encoding: "utf8" }).trim(),
      method: "v1's bench Worker (its `oneshot`: one createPool per client loop) as load generator, v1's PoolCoordinator in a workerd of its own (bench/lib/servers.ts startSplit)",
      ...(loadBefore[0]! > facts.cores / 2
        ? { note: `measured on a busy machine (load average ${loadBefore[0]!.toFixed(2)} on ${facts.cores} cores): a smoke figure, not a final one` }
        : {}),
      machine: { ...facts, loadAverageBefore: loadBefore },
      config: { durationMs: config.durationMs, warmupMs: config.warmupMs, reps: config.reps, queries: config.queries, concurrency: config.splitConcurrency },
      runs: splitRuns.filter((r) => r.version === "v1"),
    };
    writeFileSync(join(config.out, "results-v1.json"), JSON.stringify(v1, null, 1) + "\n");
  } else if (existsSync(join(config.out, "results-v1.json"))) {
    // v1 measured by an earlier run: the report compares with it and says so.
    v1 = JSON.parse(readFileSync(join(config.out, "results-v1.json"), "utf8")) as V1Results;
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
    splitRuns,
    v1,
  };
  writeFileSync(join(config.out, "results.json"), JSON.stringify(report, null, 1) + "\n");
  writeFileSync(join(config.out, "throughput.svg"), chart(runs, config));
  writeFileSync(join(config.out, "results.md"), markdown(report));
  log(`wrote ${["results.md", "results.json", "throughput.svg", ...(config.v1Dir ? ["results-v1.json"] : [])].map((f) => relative(process.cwd(), join(config.out, f))).join(", ")} in ${Math.round(finishedIn)} s`);
});

/** bench/results-v1.json: v1's one-shot in the two-process setup, with the command that measured it. */
export interface V1Results {
  started: string;
  command: string;
  commit: string;
  method: string;
  /** Set when the machine was busy: the figures are a smoke run's. */
  note?: string;
  machine: Record<string, unknown>;
  config: Record<string, unknown>;
  runs: SplitRun[];
}
