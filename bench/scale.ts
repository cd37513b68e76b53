// `npm run bench:scale`: how far one coordinator and 10,000 tenants go (issue #13, "Scale, on
// paper and simulated"). Two parts, both by default (SCALE_PARTS=ceiling,sim):
//   ceiling  one tenant's coordinator in a workerd of its own (process A), load from a second
//            wrangler session (process B; bench/lib/servers.ts startSplit), at rising concurrency
//            until queries/s stops growing; process A's CPU share (and its busiest thread's) from /proc
//   sim      bench/scale-sim.ts in Node, in a fresh process per rep (bundled with esbuild, since
//            Node's type stripping refuses one file of the wire layer; run with --expose-gc):
//            heap per idle coordinator state, the budget's bookkeeping for 10,000 holders and the
//            CPU of one grant at that size, the budget's messages per second from 10,000 BudgetLinks
// Writes bench/scale-results.md and bench/scale-results.json. Knobs (environment):
//   BENCH_DURATION_MS (2000), BENCH_WARMUP_MS (500), BENCH_REPS (3)   as for `npm run bench`
//   SCALE_PARTS (ceiling,sim)   SCALE_CONCURRENCY (1,5,10,25,50,100,200,400,800)   SCALE_TENANTS (10000)
//   SCALE_CLIENTS (builtin-req,pgjs-edgepool-loop)   SCALE_SIM_SECONDS (60)   BENCH_OUT (bench/)
//   SCALE_PIN=1: the ceiling part pins the coordinator's workerd processes (all threads) to core 1 and
//            everything else it starts (this script and wrangler in it, the load generator's workerd,
//            the embedded Postgres) to core 0 with taskset, so the coordinator has a core to itself
//            (others' processes on the machine are not pinned)
//   DATABASE_URL: use that server instead of an embedded one
// Run it from a clean `git worktree` of HEAD: wrangler restarts workerd when a bundled file changes.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { POOL_SIZE, readConfig, type Contender } from "./lib/config.ts";
import { fmt } from "./lib/report.ts";
import { Sampler, splitRun, type SplitRun } from "./lib/runners.ts";
import { drained, startPostgres, startSplit, type Workerd } from "./lib/servers.ts";
import { median } from "./lib/stats.ts";
import { children, cpuMs, log, logAs, machine, onCleanup, runToEnd, sleep, threadCpuMs } from "./lib/system.ts";
import type { SimResult } from "./scale-sim.ts";

if (Number(process.versions.node.split(".")[0]) < 22) {
  console.error(`bench:scale: Node ${process.version} is too old; run \`npm run bench:scale\` (uses Node 22 from node_modules/.bin).`);
  process.exit(1);
}
logAs("bench:scale");

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..");
const config = readConfig(here);
const parts = list("SCALE_PARTS", ["ceiling", "sim"]);
const levels = list("SCALE_CONCURRENCY", ["1", "5", "10", "25", "50", "100", "200", "400", "800"]).map(Number);
const clients = list("SCALE_CLIENTS", ["builtin-req", "pgjs-edgepool-loop"]) as Contender[];
const tenants = Number(process.env.SCALE_TENANTS ?? 10_000);
const simSeconds = Number(process.env.SCALE_SIM_SECONDS ?? 60);
const pin = process.env.SCALE_PIN === "1";
for (const p of parts) if (p !== "ceiling" && p !== "sim") fail(`SCALE_PARTS: unknown part "${p}" (known: ceiling, sim)`);
for (const c of levels) if (!Number.isInteger(c) || c < 1) fail(`SCALE_CONCURRENCY: "${c}" is not a positive integer`);
for (const c of clients) if (c !== "builtin-req" && c !== "builtin-loop" && c !== "pgjs-edgepool-loop") fail(`SCALE_CLIENTS: "${c}" is not one of builtin-req, builtin-loop, pgjs-edgepool-loop`);
if (!Number.isInteger(tenants) || tenants < 1) fail(`SCALE_TENANTS: "${process.env.SCALE_TENANTS}" is not a positive integer`);

/** One run at one concurrency: the split run's figures plus both processes' CPU share of the wall time. */
export interface CeilingRun extends SplitRun {
  wallMs: number;
  /** Process A (the coordinator's workerd): CPU time over wall time, all threads (1 = one core). */
  coordinatorCores: number;
  /** Process A's busiest thread over wall time (its JS thread when it is the bottleneck). */
  coordinatorThread: number;
  loadCores: number;
  loadThread: number;
  /** Process A's busiest thread's CPU per query, µs: 10⁶ over it is the queries/s that thread would serve saturated. */
  coordinatorThreadUsPerQuery: number;
  /** The whole machine, from /proc/stat: cores busy over the run (everyone's processes, not only the bench's). */
  machineBusyCores: number;
  /** Each core's busy share over the run, from /proc/stat's cpuN lines (with SCALE_PIN: core 0 the rest, core 1 the coordinator). */
  coreBusy?: number[];
}

const started = new Date();
const t0 = performance.now();
const facts = machine(root);
const loadBefore = os.loadavg();
const uptimeBefore = uptime();
const ceiling: CeilingRun[] = [];
const sims: SimResult[] = [];

/** One part's results with the run that measured them: a part not run this time is carried over from the last results file. */
interface Part<T> {
  started: string;
  durationSeconds: number;
  command: string;
  commit: string;
  config: Record<string, unknown>;
  machine: typeof facts & { loadAverageBefore: number[]; loadAverageAfter: number[]; uptimeBefore: string; uptimeAfter: string };
  runs: T[];
}
interface Report {
  ceiling?: Part<CeilingRun>;
  sim?: Part<SimResult>;
}

await runToEnd(async () => {
  mkdirSync(config.out, { recursive: true });
  log(`${facts.cores} cores, Node ${facts.node}; ${uptimeBefore}`);
  const file = join(config.out, "scale-results.json");
  const earlier: Report = existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as Report) : {};
  const report: Report = { ...earlier };
  const record = async <T>(run: () => Promise<void>, runs: T[], partConfig: Record<string, unknown>): Promise<Part<T>> => {
    const begun = new Date();
    const before = { load: os.loadavg(), uptime: uptime() };
    const p0 = performance.now();
    await run();
    return {
      started: begun.toISOString(),
      durationSeconds: Math.round((performance.now() - p0) / 1000),
      command: command(),
      commit: execFileSync("git", ["-C", root, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim(),
      config: { durationMs: config.durationMs, warmupMs: config.warmupMs, reps: config.reps, ...partConfig },
      machine: { ...facts, loadAverageBefore: before.load, loadAverageAfter: os.loadavg(), uptimeBefore: before.uptime, uptimeAfter: uptime() },
      runs,
    };
  };
  if (parts.includes("ceiling")) report.ceiling = await record(measureCeiling, ceiling, { levels, clients, poolSize: POOL_SIZE, pinned: pin });
  if (parts.includes("sim")) report.sim = await record(simulate, sims, { tenants, simSeconds });
  writeFileSync(file, JSON.stringify(report, null, 1) + "\n");
  writeFileSync(join(config.out, "scale-results.md"), markdown(report));
  log(`wrote ${["scale-results.md", "scale-results.json"].map((f) => relative(process.cwd(), join(config.out, f))).join(", ")} in ${Math.round((performance.now() - t0) / 1000)} s`);
});

// ---------------------------------------------------------------------------------------------
// Part 1: one coordinator's ceiling

async function measureCeiling(): Promise<void> {
  if (pin) {
    if (os.cpus().length < 2) fail("SCALE_PIN=1 needs 2 cores at least");
    // Before anything starts: the children (Postgres, both sessions' workerd) inherit core 0.
    setAffinity(process.pid, "0");
    if (process.env.DATABASE_URL) log("SCALE_PIN: DATABASE_URL's server is not started here, so not pinned");
  }
  const databaseUrl = await startPostgres();
  const admin = postgres(databaseUrl, { max: 1, onnotice: () => {}, connection: { application_name: "bench:monitor" } });
  onCleanup("monitor connection", () => admin.end({ timeout: 1 }));
  const split = await startSplit(join(here, "worker.ts"), "scale", databaseUrl, config, facts);
  if (pin) {
    for (const pid of split.coordinator.processes) setAffinity(pid, "1");
    const show = (pids: number[]) => pids.map((pid) => `${pid}: ${[...new Set(allowed(pid))].join("/")}`).join(", ");
    log(`SCALE_PIN: Cpus_allowed_list of every thread: coordinator workerd ${show(split.coordinator.processes)}; ` +
      `load generator workerd ${show(split.load.processes)}; this script ${show([process.pid])}`);
    for (const pid of split.coordinator.processes) if (allowed(pid).some((c) => c !== "1")) throw new Error(`SCALE_PIN: workerd ${pid} is not pinned to core 1`);
    for (const pid of [...split.load.processes, process.pid]) if (allowed(pid).some((c) => c !== "0")) throw new Error(`SCALE_PIN: ${pid} is not pinned to core 0`);
  }
  const sampler = new Sampler(admin, () => split.coordinator.pids);
  try {
    // Reps outermost: load from others' processes comes and goes, and each level gets some of each.
    for (let rep = 1; rep <= config.reps; rep++) {
      for (const client of clients) {
        const tenant = `bench-scale-${client}`;
        for (const concurrency of levels) {
          await split.load.call("/setup", { tenants: [tenant], options: { maxConnections: POOL_SIZE } });
          await drained(admin, `edgepool:${tenant}`);
          const run = await measured(split, () => splitRun(config, split, sampler, "v2", client, tenant, "select1", concurrency, rep));
          ceiling.push(run);
          log(`ceiling ${client} c=${concurrency} rep ${rep}/${config.reps}: ${fmt(run.qps, 0)} q/s, mean ${fmt(run.latency.mean, 2)} ms; ` +
            `coordinator workerd ${pct(run.coordinatorCores)} of a core (busiest thread ${pct(run.coordinatorThread)}), ` +
            `load generator ${pct(run.loadCores)} (busiest thread ${pct(run.loadThread)}); machine ${fmt(run.machineBusyCores, 2)} cores busy; ` +
            `(per core ${run.coreBusy!.map(pct).join(" ")}); ` +
            `${fmt(run.coordinatorCpuUsPerQuery, 0)} µs coordinator CPU/query (${fmt(run.coordinatorThreadUsPerQuery, 0)} on its busiest thread)` +
            `${run.errors ? `; ${run.errors} errors (${run.firstError})` : ""}; load ${os.loadavg()[0]!.toFixed(2)}`);
        }
      }
    }
    // For reading the coordinator's CPU per query: what a forwarded call that does nothing costs there.
    const top = levels.at(-1)!;
    for (let rep = 1; rep <= config.reps; rep++) {
      const run = await measured(split, () => splitRun(config, split, sampler, "v2", "rpc-noop-remote", "", "select1", top, rep));
      ceiling.push(run);
      log(`ceiling rpc-noop-remote c=${top} rep ${rep}/${config.reps}: ${fmt(run.qps, 0)} calls/s; coordinator workerd ${pct(run.coordinatorCores)} ` +
        `(busiest thread ${pct(run.coordinatorThread)}), load generator ${pct(run.loadCores)}; ${fmt(run.coordinatorCpuUsPerQuery, 0)} µs coordinator CPU/call`);
    }
  } finally {
    await split.dispose();
  }
}

/** Runs `run` and adds both processes' CPU share over its wall time (whole process, and busiest thread). */
async function measured(split: { load: Workerd; coordinator: Workerd }, run: () => Promise<SplitRun>): Promise<CeilingRun> {
  const snapshot = (w: Workerd) => ({ total: w.pids.reduce((s, pid) => s + cpuMs(pid), 0), threads: w.pids.map((pid) => threadCpuMs(pid)) });
  const busiest = (before: ReturnType<typeof snapshot>, after: ReturnType<typeof snapshot>) => {
    let most = 0;
    after.threads.forEach((threads, i) => {
      for (const [tid, ms] of threads) most = Math.max(most, ms - (before.threads[i]!.get(tid) ?? 0));
    });
    return most;
  };
  const a0 = snapshot(split.coordinator);
  const b0 = snapshot(split.load);
  const m0 = machineTicks();
  const w0 = performance.now();
  const result = await run();
  const wallMs = performance.now() - w0;
  const m1 = machineTicks();
  const a1 = snapshot(split.coordinator);
  const b1 = snapshot(split.load);
  return {
    ...result, wallMs,
    coordinatorCores: (a1.total - a0.total) / wallMs,
    coordinatorThread: busiest(a0, a1) / wallMs,
    loadCores: (b1.total - b0.total) / wallMs,
    loadThread: busiest(b0, b1) / wallMs,
    // The split run's own CPU/query counts warm-up and measured queries; scale the thread's share the same way.
    coordinatorThreadUsPerQuery: (result.coordinatorCpuUsPerQuery * busiest(a0, a1)) / Math.max(1e-9, a1.total - a0.total),
    machineBusyCores: ((m1.busy - m0.busy) / Math.max(1, m1.total - m0.total)) * os.cpus().length,
    coreBusy: m1.cores.map((c, i) => (c.busy - m0.cores[i]!.busy) / Math.max(1, c.total - m0.cores[i]!.total)),
  };
}

/** Pins every thread of `pid` to `cpus` (taskset's list form); new threads inherit it. */
function setAffinity(pid: number, cpus: string): void {
  execFileSync("taskset", ["-a", "-p", "-c", cpus, String(pid)], { stdio: "ignore" });
}

/** Cpus_allowed_list of each thread of `pid`. */
function allowed(pid: number): string[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    try {
      return /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, "utf8"))?.[1] ?? "?";
    } catch {
      return "gone";
    }
  }).filter((c) => c !== "gone");
}

/** Busy and total jiffies of all CPUs (/proc/stat's first line; idle + iowait are not busy). */
function machineTicks(): { busy: number; total: number; cores: { busy: number; total: number }[] } {
  const ticks = (line: string) => {
    const fields = line.trim().split(/\s+/).slice(1).map(Number);
    const total = fields.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: total - fields[3]! - fields[4]!, total };
  };
  const lines = readFileSync("/proc/stat", "utf8").split("\n");
  return { ...ticks(lines[0]!), cores: lines.filter((l) => /^cpu\d+ /.test(l)).map(ticks) };
}

// ---------------------------------------------------------------------------------------------
// Part 2: 10,000 tenants, simulated in Node

async function simulate(): Promise<void> {
  const { build } = await import("esbuild");
  // Inside node_modules, so the bundle's external packages (pg-protocol) resolve from there.
  mkdirSync(join(root, "node_modules", ".cache"), { recursive: true });
  const dir = mkdtempSync(join(root, "node_modules", ".cache", "edgepool-scale-sim-"));
  onCleanup("sim bundle", () => rmSync(dir, { recursive: true, force: true }));
  const bundle = join(dir, "scale-sim.mjs");
  // Bundled: Node's type stripping refuses worker/wire/pipeline.ts (a parameter property).
  await build({ entryPoints: [join(here, "scale-sim.ts")], bundle: true, platform: "node", format: "esm", target: "node22", outfile: bundle, logLevel: "warning", packages: "external", absWorkingDir: root });
  for (let rep = 1; rep <= config.reps; rep++) {
    // A fresh process per rep: each heap figure starts from the same empty heap.
    // Asynchronous, so Ctrl-C reaches the cleanup while a simulation runs; its progress goes to our stderr.
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ["--expose-gc", bundle], {
        cwd: root,
        env: { ...process.env, SCALE_TENANTS: String(tenants), SCALE_SIM_SECONDS: String(simSeconds) },
        stdio: ["ignore", "pipe", "inherit"],
      });
      if (child.pid) children.add(child.pid);
      let stdout = "";
      child.stdout!.on("data", (d) => (stdout += d));
      child.on("error", reject);
      child.on("exit", (code) => (children.delete(child.pid!), code === 0 ? resolve(stdout) : reject(new Error(`bench/scale-sim.ts exited with ${code}`))));
    });
    const result = JSON.parse(out.trim().split("\n").at(-1)!) as SimResult;
    sims.push(result);
    log(`sim rep ${rep}/${config.reps}: ${result.memory.map((m) => `${m.name} ${fmt(m.bytesPerInstance, 0)} B`).join(", ")}; ` +
      `budget bookkeeping ${fmt(result.budget.bytesPerHolder, 0)} B/holder, one grant ${fmt(result.budget.grantUs, 0)} µs; ` +
      `messages/s ${result.links.map((l) => `${l.name} ${fmt(l.messagesPerSecond, 0)}`).join(", ")}; load ${os.loadavg()[0]!.toFixed(2)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Report

function markdown(report: Report): string {
  const out: string[] = [];
  const about = (part: Part<unknown>) => {
    const m = part.machine;
    out.push(`Measured by \`${part.command}\` (bench/scale.ts, commit ${part.commit}) on ${part.started.slice(0, 16).replace("T", " ")} UTC in ${part.durationSeconds} s; ` +
      `every figure is the median of ${part.config.reps} runs, min–max in small type. \`uptime\` before: ${m.uptimeBefore}; after: ${m.uptimeAfter}.`, "");
  };
  out.push("# edgepool scale results", "");
  out.push("`npm run bench:scale` (bench/scale.ts): how far one coordinator goes, and 10,000 tenants simulated. Raw numbers: [scale-results.json](scale-results.json). " +
    "Each part says which run measured it (`SCALE_PARTS=ceiling` or `sim` reruns one part and keeps the other's figures).", "");
  const m = (report.ceiling ?? report.sim)?.machine;
  if (m) {
    out.push("## Machine", "");
    out.push(`${m.cores} cores (${m.cpu}), ${m.memoryGiB} GiB, ${m.os}; Node ${m.node}, wrangler ${m.wrangler}, workerd ${m.workerd}. ` +
      "Other engineers' test runs share these cores (see each part's `uptime`): read the figures as this machine's under that load.", "");
  }
  if (report.ceiling) {
    const part = report.ceiling;
    const config = part.config as { durationMs: number; warmupMs: number; pinned?: boolean };
    out.push("## One coordinator's ceiling", "");
    about(part);
    out.push(`One tenant (pool of ${POOL_SIZE}), \`select 1\`. Its coordinator runs alone in one workerd (process A); the load comes from a second wrangler session (process B), ` +
      "whose `EDGEPOOL` binding names the coordinator's class in A's script, so every call crosses between the processes (bench/lib/servers.ts `startSplit`). " +
      `Each run: ${config.durationMs} ms after ${config.warmupMs} ms of warm-up, started on an empty pool. CPU share = /proc CPU time over the run's wall time (warm-up included), ` +
      "for the whole process and its busiest thread (the JS thread when it is the limit); 100% is one core." +
      ((config as { pinned?: boolean }).pinned
        ? " Pinned (`SCALE_PIN=1`, taskset): process A's threads on core 1 only; this script (wrangler runs in it), process B and the embedded Postgres on core 0; other processes on the machine were not pinned."
        : ""), "");
    out.push("| client | clients | queries/s | mean ms | A: coordinator workerd CPU | A: busiest thread | B: load generator CPU | B: busiest thread | whole machine busy (cores) | A: CPU µs/query | A: busiest thread µs/query | 10⁶ / that: q/s with that thread saturated | errors |");
    out.push("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    const groups = new Map<string, CeilingRun[]>();
    for (const r of part.runs) {
      const key = `${r.contender}\t${r.concurrency}`;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key)!.push(r);
    }
    for (const [key, runs] of groups) {
      const [contender, concurrency] = key.split("\t");
      const col = (f: (r: CeilingRun) => number, d = 0, p = false) => cellOf(runs.map(f), d, p);
      out.push(`| ${clientLabel(contender!)} | ${concurrency} | ${col((r) => r.qps)} | ${col((r) => r.latency.mean, 2)} | ${col((r) => r.coordinatorCores, 0, true)} | ` +
        `${col((r) => r.coordinatorThread, 0, true)} | ${col((r) => r.loadCores, 0, true)} | ${col((r) => r.loadThread, 0, true)} | ${col((r) => r.machineBusyCores, 2)} | ` +
        `${col((r) => r.coordinatorCpuUsPerQuery)} | ${col((r) => r.coordinatorThreadUsPerQuery)} | ${col((r) => 1e6 / r.coordinatorThreadUsPerQuery)} | ${runs.reduce((s, r) => s + r.errors, 0)} |`);
    }
    out.push("");
    // Where queries/s stopped growing, per client: the level with the best median, and what the thread did there.
    const byClient = new Map<string, Map<number, CeilingRun[]>>();
    for (const r of part.runs) {
      if (r.contender === "rpc-noop-remote") continue;
      const levels = byClient.get(r.contender) ?? new Map<number, CeilingRun[]>();
      byClient.set(r.contender, levels);
      levels.set(r.concurrency, [...(levels.get(r.concurrency) ?? []), r]);
    }
    for (const [contender, levels] of byClient) {
      const medians = [...levels].map(([c, runs]) => ({ c, qps: median(runs.map((r) => r.qps)), runs }));
      const best = medians.reduce((a, b) => (b.qps > a.qps ? b : a));
      const last = medians.at(-1)!;
      out.push(`- ${clientLabel(contender)}: the best median, ${fmt(best.qps, 0)} queries/s, at ${best.c} clients (at ${last.c}: ${fmt(last.qps, 0)}); ` +
        `there the coordinator's busiest thread was ${cellOf(best.runs.map((r) => r.coordinatorThread), 0, true)} busy, the machine ${cellOf(best.runs.map((r) => r.machineBusyCores), 2)} of ${os.cpus().length} cores` +
        (best.runs.every((r) => r.coreBusy) ? ` (${best.runs[0]!.coreBusy!.map((_, i) => `core ${i} ${cellOf(best.runs.map((r) => r.coreBusy![i]!), 0, true)}`).join(", ")})` : "") + ", " +
        `and ${cellOf(best.runs.map((r) => r.coordinatorThreadUsPerQuery), 0)} µs of that thread per query: ${cellOf(best.runs.map((r) => 1e6 / r.coordinatorThreadUsPerQuery), 0)} queries/s if it had the core to itself.`);
    }
    out.push("");
  }
  if (report.sim) {
    const s = report.sim.runs;
    const first = s[0]!;
    out.push(`## ${fmt(first.tenants, 0)} tenants, simulated in Node`, "");
    about(report.sim);
    out.push("bench/scale-sim.ts, bundled with esbuild and run as `node --expose-gc`, a fresh process per run. " +
      `Heap = \`process.memoryUsage().heapUsed\` after \`gc()\`, before and after making ${fmt(first.tenants, 0)} instances, divided by their number.`, "");
    out.push("### Memory per idle coordinator state", "");
    out.push("| state | bytes per instance | what is in it |", "|---|--:|---|");
    for (const m of first.memory) out.push(`| ${m.name} | ${cellOf(s.map((r) => r.memory.find((x) => x.name === m.name)!.bytesPerInstance), 0)} | ${m.what} |`);
    out.push("");
    out.push("### The budget object's bookkeeping", "");
    out.push(`${fmt(first.tenants, 0)} holders in the budget object's \`Map\` of \`Holding\`s (worker/budget/object.ts keeps them so, and in SQLite storage): ` +
      `${cellOf(s.map((r) => r.budget.bytesPerHolder), 0)} bytes per holder, ${cellOf(s.map((r) => r.budget.totalBytes / 2 ** 20), 1)} MiB in all. ` +
      `One grant at that size — what \`Budget.lease()\` does per message without its storage writes: expire, collect the others, \`allocate()\` — ` +
      `costs ${cellOf(s.map((r) => r.budget.grantUs), 0)} µs of CPU (mean over ${first.budget.grants} grants), so one budget object can answer at most ` +
      `${cellOf(s.map((r) => 1e6 / r.budget.grantUs), 0)} messages/s at ${fmt(first.tenants, 0)} holders with its thread saturated` +
      (first.budget.grantUsBySize.length
        ? ` (one grant at ${first.budget.grantUsBySize.map((g) => `${fmt(g.holders, 0)} holders: ${cellOf(s.map((r) => r.budget.grantUsBySize.find((x) => x.holders === g.holders)!.grantUs), 0)} µs`).join("; ")}).`
        : "."), "");
    out.push("### The budget's messages per second", "");
    out.push(`${fmt(first.tenants, 0)} \`BudgetLink\`s (worker/budget/link.ts, unchanged: RENEW_MS, REPORT_GAP_MS, RETRY_MS) on a manual clock for ${first.simSeconds} simulated seconds; ` +
      "each link's `call` is counted and answered 5 ms later (simulated) by a budget with the object's grant rule (bench/lib/budget-sim.ts `CountingBudget`). " +
      "Messages per second = calls counted from a second after the last tenant started (tenants start within the first second; churn's within 5 s) to the end, over that time.", "");
    out.push("| scenario | messages/s to the budget object | per tenant | what the pools report |", "|---|--:|--:|---|");
    for (const l of first.links) {
      const rows = s.map((r) => r.links.find((x) => x.name === l.name)!);
      out.push(`| ${l.name} | ${cellOf(rows.map((r) => r.messagesPerSecond), 0)} | ${cellOf(rows.map((r) => r.messagesPerSecond / r.tenants), 2)} | ${l.what} |`);
    }
    out.push("");
  }
  return out.join("\n") + "\n";
}

function cellOf(values: number[], digits: number, percent = false): string {
  const f = (v: number) => (percent ? `${fmt(v * 100, digits)}%` : fmt(v, digits));
  const finite = values.filter(Number.isFinite);
  if (!finite.length) return "–";
  const lo = Math.min(...finite);
  const hi = Math.max(...finite);
  return `${f(median(finite))}${finite.length > 1 ? ` <sub>${f(lo)}–${f(hi)}</sub>` : ""}`;
}

function clientLabel(contender: string): string {
  switch (contender) {
    case "builtin-req": return "built-in client, new per request (`createPool()` + one query)";
    case "builtin-loop": return "built-in client, one per loop";
    case "pgjs-edgepool-loop": return "postgres.js session through `postgresOptions`, one instance per loop";
    case "rpc-noop-remote": return "a forwarded call that does nothing (the forwarding alone, for reading the CPU column)";
    default: return contender;
  }
}

function pct(v: number): string {
  return `${fmt(v * 100, 0)}%`;
}

function uptime(): string {
  try {
    return execFileSync("uptime", { encoding: "utf8" }).trim();
  } catch {
    return `load average ${os.loadavg().map((l) => l.toFixed(2)).join(", ")}`;
  }
}

function command(): string {
  const knobs = ["BENCH_DURATION_MS", "BENCH_WARMUP_MS", "BENCH_REPS", "SCALE_PARTS", "SCALE_CONCURRENCY", "SCALE_CLIENTS", "SCALE_TENANTS", "SCALE_SIM_SECONDS", "SCALE_PIN", "BENCH_OUT"]
    .filter((k) => process.env[k]).map((k) => `${k}=${process.env[k]}`);
  if (process.env.DATABASE_URL) knobs.push("DATABASE_URL=<your server>");
  return [...knobs, "npm run bench:scale"].join(" ");
}

function list(name: string, fallback: string[]): string[] {
  const raw = process.env[name];
  return raw ? raw.split(",").map((s) => s.trim()).filter(Boolean) : fallback;
}

function fail(message: string): never {
  console.error(`bench:scale: ${message}`);
  process.exit(2);
}
