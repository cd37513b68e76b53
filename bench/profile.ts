// `npm run bench:profile`: where the bench Worker's CPU goes inside workerd. V8's sampling profiler,
// attached over wrangler's inspector proxy, records each run; the report sums self time per
// function and per bucket (edgepool src/ and worker/, postgres.js, the runtime).
//
//   npm run bench:profile                    start Postgres + workerd, profile each run, write + print the reports
//   npm run bench:profile -- --report DIR    re-aggregate the profiles already in DIR (e.g. with another PROFILE_TOP)
//
// Knobs (environment):
//   PROFILE_RUNS (oneshot:10,lease:1)  contender:concurrency pairs; contenders of bench/worker.ts
//   PROFILE_QUERY (select1)  or point         PROFILE_TOP (25)  rows per list of the report
//   PROFILE_MS (5000)  profiled run           PROFILE_WARMUP_MS (1500)  unprofiled warm-up before it
//   PROFILE_INTERVAL_US (100)  sampling interval
//   PROFILE_REPS (0)   first, N plain runs per pair, without profiler or inspector session: CPU µs/query
//   PROFILE_OUT (a new directory under the system's temp directory, printed)
//   DATABASE_URL: use that server instead of an embedded one
//
// Writes per run <name>.cpuprofile (Chrome DevTools > Performance loads it), <name>.meta.json (the
// run's counts, for --report) and <name>.txt (the report, also printed); once, script-<id>.js: the
// bundle wrangler's esbuild made. esbuild keeps function names and puts a `// path/to/file.ts`
// comment before every module, which maps a sampled line of the bundle back to its source file.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import type { QueryName, RunRequest, RunResult, WorkerContender } from "./worker.ts";
import { POOL_SIZE, QUERIES } from "./lib/config.ts";
import { Inspector } from "./lib/inspector.ts";
import { ensureAccounts, startPostgres, startWorkerd, type Workerd } from "./lib/servers.ts";
import { cpuMs, log, logAs, machine, onCleanup, runToEnd, threadCpuMs } from "./lib/system.ts";

const here = dirname(fileURLToPath(import.meta.url));
logAs("profile");

// ---------------------------------------------------------------------------------------------
// Knobs

const WORKER_CONTENDERS = [
  "naive", "pgjs-workerd", "builtin-loop", "builtin-req", "pgjs-edgepool-loop", "pgjs-edgepool-req", "pg-edgepool-loop", "pg-edgepool-req",
  "oneshot", "lease", "rpc-noop", "rpc-noop-remote", "rpc-pg", "pg-exclusive", "pg-pipelined",
] as const satisfies readonly WorkerContender[];

/** One PROFILE_RUNS entry. */
interface Pair { contender: WorkerContender; concurrency: number }

interface Knobs {
  runs: Pair[];
  query: QueryName;
  ms: number;
  warmupMs: number;
  intervalUs: number;
  reps: number;
}

function readKnobs(): Knobs {
  const runs = (process.env.PROFILE_RUNS || "oneshot:10,lease:1").split(",").map((pair) => {
    const [contender, concurrency = "1"] = pair.trim().split(":");
    if (!WORKER_CONTENDERS.includes(contender as WorkerContender)) fail(`PROFILE_RUNS: unknown contender "${contender}" (known: ${WORKER_CONTENDERS.join(", ")})`);
    const c = Number(concurrency);
    if (!Number.isInteger(c) || c < 1) fail(`PROFILE_RUNS: concurrency "${concurrency}" of ${contender} is not a positive integer`);
    return { contender: contender as WorkerContender, concurrency: c };
  });
  const query = (process.env.PROFILE_QUERY || "select1") as QueryName;
  if (!QUERIES.includes(query)) fail(`PROFILE_QUERY: unknown query "${query}" (known: ${QUERIES.join(", ")})`);
  return {
    runs,
    query,
    ms: intKnob("PROFILE_MS", 5000, 1),
    warmupMs: intKnob("PROFILE_WARMUP_MS", 1500, 0),
    intervalUs: intKnob("PROFILE_INTERVAL_US", 100, 1),
    reps: intKnob("PROFILE_REPS", 0, 0),
  };
}

function intKnob(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) fail(`${name}="${raw}" must be an integer of at least ${min}`);
  return value;
}

function fail(message: string): never {
  console.error(`profile: ${message}`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// The profile, and what the report needs besides it

interface CallFrame { functionName: string; scriptId: string; url: string; lineNumber: number; columnNumber: number }
interface ProfileNode { id: number; callFrame: CallFrame; children?: number[] }
interface CpuProfile { nodes: ProfileNode[]; startTime: number; endTime: number; samples: number[]; timeDeltas: number[] }

/** One profiled run's counts (<name>.meta.json, so --report can redo the report without workerd). */
interface Meta {
  name: string;
  contender: WorkerContender;
  query: QueryName;
  concurrency: number;
  ops: number;
  queries: number;
  elapsedMs: number;
  intervalUs: number;
  /** workerd's CPU during the run: the whole process, and its busiest thread (the JS thread). */
  workerdCpuMs: number;
  jsThreadCpuMs: number;
  loadAverage: number;
}

// ---------------------------------------------------------------------------------------------
// Bundle lines to source files: the `// file` comment esbuild puts before every module

/** Where each module of a bundle starts (0-based lines), in order. */
type ModuleIndex = { line: number; file: string }[];
/** Module indexes of the saved bundles, by the scriptId the profile's frames name. */
type Bundles = Map<string, ModuleIndex>;

function moduleIndex(source: string): ModuleIndex {
  const index: ModuleIndex = [];
  source.split("\n").forEach((text, line) => {
    const file = /^\/\/ (\S+\.(?:[cm]?[jt]s|json))$/.exec(text)?.[1];
    if (file) index.push({ line, file });
  });
  return index;
}

/** The module a bundle line belongs to: the last module comment at or above it. */
function fileAt(index: ModuleIndex, line: number): string {
  let lo = 0;
  let hi = index.length - 1;
  let found = "";
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (index[mid]!.line <= line) {
      found = index[mid]!.file;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found;
}

/** A bundle path as a repo path (esbuild's are relative to bench/, where wrangler.bench.toml is); packages by their name. */
function sourcePath(file: string): string {
  if (file.includes("node_modules/")) return file.replace(/^.*node_modules\//, "");
  if (file.startsWith("../")) return file.replace(/^(\.\.\/)+/, "");
  return file.startsWith(".wrangler/") ? file : `bench/${file}`;
}

function loadBundles(dir: string): Bundles {
  const bundles: Bundles = new Map();
  for (const f of readdirSync(dir)) {
    const scriptId = /^script-(\d+)\.js$/.exec(f)?.[1];
    if (scriptId) bundles.set(scriptId, moduleIndex(readFileSync(join(dir, f), "utf8")));
  }
  return bundles;
}

// ---------------------------------------------------------------------------------------------
// Aggregation

const BUILTINS = "V8 builtins / runtime natives called from JS";

/** A profile node as the report shows it: `key` tells functions apart, `where` is its file. */
interface FrameInfo { key: string; fn: string; where: string; bucket: string }

function frameInfo(frame: CallFrame, bundles: Bundles): FrameInfo {
  const fn = frame.functionName || "(anonymous)";
  const index = bundles.get(frame.scriptId);
  const file = index ? fileAt(index, frame.lineNumber) : "";
  // Bundle frames show their bundle line (@N): without a source map that is what tells two functions of a file apart.
  const where = file ? `${sourcePath(file)} @${frame.lineNumber + 1}` : frame.url ? `${frame.url.replace(/^.*\//, "")}:${frame.lineNumber + 1}` : "";
  return { key: `${fn}\t${where}`, fn, where, bucket: bucketOf(frame, file) };
}

function bucketOf(frame: CallFrame, file: string): string {
  const fn = frame.functionName;
  if (fn === "(program)") return "(program): native, outside JS (KJ event loop, RPC/capnp, sockets)";
  if (fn === "(garbage collector)" || fn === "(idle)" || fn === "(root)") return fn;
  if (!frame.url) return BUILTINS;
  if (!file) return `runtime JS (${frame.url.replace(/^.*\//, "")})`;
  if (file.includes("node_modules/postgres/")) return "postgres.js";
  if (file.includes("node_modules/")) return `node_modules: ${file.split("node_modules/")[1]!.split("/")[0]}`;
  const path = sourcePath(file);
  if (path.startsWith("src/")) return "edgepool src/ (client)";
  if (path.startsWith("worker/")) return "edgepool worker/ (coordinator)";
  if (path.startsWith("bench/")) return "bench/worker.ts (load generator)";
  return `other: ${path}`;
}

/** Self time per node, µs: timeDeltas[i + 1] is how long samples[i] lasted (as Chrome DevTools reads it). */
function selfTimes(profile: CpuProfile, intervalUs: number): Map<number, number> {
  const self = new Map<number, number>();
  const { samples, timeDeltas } = profile;
  samples.forEach((node, i) => {
    const us = i + 1 < timeDeltas.length ? Math.max(0, timeDeltas[i + 1]!) : intervalUs;
    self.set(node, (self.get(node) ?? 0) + us);
  });
  return self;
}

function add(sums: Map<string, number>, key: string, us: number): void {
  sums.set(key, (sums.get(key) ?? 0) + us);
}

interface Sums {
  totalUs: number;
  idleUs: number;
  byFunction: Map<string, number>;
  byBucket: Map<string, number>;
  /** Builtins and natives charged to the bucket of the JS that called them. */
  byCallerBucket: Map<string, number>;
  /** Each function counted once per stack, so recursion does not count twice. */
  inclusive: Map<string, number>;
  /** Self time of builtins and natives, by `builtin <- its nearest JS caller`. */
  nativesByCaller: Map<string, number>;
}

function aggregate(profile: CpuProfile, meta: Meta, bundles: Bundles): Sums {
  const infos = new Map(profile.nodes.map((n) => [n.id, frameInfo(n.callFrame, bundles)]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const jsCaller = (id: number) => {
    let p = parent.get(id);
    while (p !== undefined && infos.get(p)!.bucket === BUILTINS) p = parent.get(p);
    return p === undefined ? undefined : infos.get(p);
  };
  const sums: Sums = { totalUs: 0, idleUs: 0, byFunction: new Map(), byBucket: new Map(), byCallerBucket: new Map(), inclusive: new Map(), nativesByCaller: new Map() };
  for (const [id, us] of selfTimes(profile, meta.intervalUs)) {
    const info = infos.get(id)!;
    sums.totalUs += us;
    if (info.bucket === "(idle)") sums.idleUs += us;
    add(sums.byFunction, info.key, us);
    add(sums.byBucket, info.bucket, us);
    if (info.bucket === BUILTINS) {
      const caller = jsCaller(id);
      add(sums.byCallerBucket, caller && caller.bucket !== "(root)" ? caller.bucket : BUILTINS, us);
      add(sums.nativesByCaller, `${info.fn} <- ${caller?.fn ?? "?"}\t${caller?.where ?? ""}`, us);
    } else add(sums.byCallerBucket, info.bucket, us);
    const seen = new Set<string>();
    for (let p: number | undefined = id; p !== undefined; p = parent.get(p)) {
      const key = infos.get(p)!.key;
      if (!seen.has(key)) add(sums.inclusive, key, us);
      seen.add(key);
    }
  }
  return sums;
}

// ---------------------------------------------------------------------------------------------
// The report

function report(profile: CpuProfile, meta: Meta, bundles: Bundles, top: number): string {
  const sums = aggregate(profile, meta, bundles);
  const busyUs = sums.totalUs - sums.idleUs;
  const perQuery = (us: number) => us / Math.max(1, meta.queries);
  const figures = (us: number) => `${((100 * us) / busyUs).toFixed(1).padStart(5)}% ${perQuery(us).toFixed(1).padStart(7)} µs/q`;
  const rows = (totals: Map<string, number>, keep: (key: string) => boolean) =>
    [...totals].filter(([key]) => keep(key) && !key.startsWith("(idle)")).sort((a, b) => b[1] - a[1]).slice(0, top)
      .map(([key, us]) => {
        const [name, where] = key.split("\t");
        return `${figures(us)}  ${where === undefined ? name : `${name!.padEnd(34)} ${where}`}`;
      });
  const ours = (re: RegExp) => (key: string) => re.test(key.split("\t")[1] ?? "");
  const all = () => true;
  return [
    `# ${meta.name}: ${meta.contender}, ${meta.query}, concurrency ${meta.concurrency}`,
    `${profile.samples.length} samples over ${((profile.endTime - profile.startTime) / 1e6).toFixed(2)} s, every ${meta.intervalUs} µs; ` +
      `${meta.ops} ops, ${meta.queries} queries in ${meta.elapsedMs} ms = ${((meta.queries * 1000) / meta.elapsedMs).toFixed(0)} q/s`,
    `CPU per query: JS thread sampled busy ${perQuery(busyUs).toFixed(0)} µs; from /proc, workerd's JS thread ${perQuery(meta.jsThreadCpuMs * 1000).toFixed(0)} µs, ` +
      `whole process ${perQuery(meta.workerdCpuMs * 1000).toFixed(0)} µs (profiler included); load average ${meta.loadAverage.toFixed(2)}`,
    "%: of the non-idle samples. µs/q: sampled time / queries. @N: line N of the bundle (script-<id>.js next to this report).",
    "",
    "## By bucket (self time)",
    "",
    ...rows(sums.byBucket, all),
    "",
    "## By bucket, builtins and natives charged to the JS that called them",
    "",
    ...rows(sums.byCallerBucket, all),
    "",
    `## Top ${top} functions by self time`,
    "",
    ...rows(sums.byFunction, all),
    "",
    "## edgepool + bench functions by inclusive time",
    "",
    ...rows(sums.inclusive, ours(/^(src|worker|bench)\//)),
    "",
    "## edgepool functions by self time",
    "",
    ...rows(sums.byFunction, ours(/^(src|worker)\//)),
    "",
    "## Builtins and natives by their JS caller (self time)",
    "",
    ...rows(sums.nativesByCaller, all),
    "",
  ].join("\n");
}

/** Writes <name>.txt next to the profile and prints it. */
function writeReport(dir: string, profile: CpuProfile, meta: Meta, bundles: Bundles): void {
  const text = report(profile, meta, bundles, intKnob("PROFILE_TOP", 25, 1));
  writeFileSync(join(dir, `${meta.name}.txt`), text);
  console.log(text);
}

/** --report DIR: the reports again from the saved profiles, bundles and counts. */
function reportDir(dir: string | undefined): void {
  if (!dir || !existsSync(dir)) fail(`--report needs the directory a profile run wrote (got ${dir ?? "nothing"})`);
  const bundles = loadBundles(dir);
  const profiles = readdirSync(dir).filter((f) => f.endsWith(".cpuprofile")).sort();
  if (!profiles.length) fail(`no .cpuprofile in ${dir}`);
  for (const f of profiles) {
    const name = f.replace(/\.cpuprofile$/, "");
    const meta = JSON.parse(readFileSync(join(dir, `${name}.meta.json`), "utf8")) as Meta;
    writeReport(dir, JSON.parse(readFileSync(join(dir, f), "utf8")) as CpuProfile, meta, bundles);
  }
}

// ---------------------------------------------------------------------------------------------
// Capture

/** workerd's CPU over `work`: the whole process, and its busiest thread (the JS thread, when the Worker is busy). */
async function measureCpu<T>(pid: number | undefined, work: () => Promise<T>): Promise<{ value: T; processMs: number; jsThreadMs: number }> {
  const cpu0 = cpuMs(pid);
  const threads0 = pid ? threadCpuMs(pid) : new Map<number, number>();
  const value = await work();
  const processMs = cpuMs(pid) - cpu0;
  const threads1 = pid ? threadCpuMs(pid) : new Map<number, number>();
  const perThread = [...threads1].map(([tid, ms]) => ms - (threads0.get(tid) ?? 0));
  const jsThreadMs = perThread.length ? Math.max(...perThread) : NaN;
  return { value, processMs, jsThreadMs };
}

function request(knobs: Knobs, run: Pair, durationMs: number): RunRequest {
  return { contender: run.contender, query: knobs.query, concurrency: run.concurrency, durationMs, warmupMs: 0, tenant: `profile-${run.contender}` };
}

/** A fresh pool for the pooled contenders (a reconfigured tenant starts a new one), then an unmeasured warm-up. */
async function prepare(workerd: Workerd, knobs: Knobs, run: Pair): Promise<void> {
  const req = request(knobs, run, knobs.warmupMs);
  if (run.contender === "oneshot" || run.contender === "lease" || run.contender.includes("builtin") || run.contender.includes("edgepool")) await workerd.call("/setup", { tenants: [req.tenant], options: { maxConnections: POOL_SIZE } });
  if (knobs.warmupMs > 0) await workerd.call("/run", req);
}

/** PROFILE_REPS plain runs per pair, before any inspector session (an attached one costs every call). */
async function plainRuns(workerd: Workerd, pid: number | undefined, knobs: Knobs): Promise<void> {
  for (const run of knobs.runs) await prepare(workerd, knobs, run);
  // Rep-major, so drift on a shared machine hits every pair alike.
  for (let rep = 1; rep <= knobs.reps; rep++) {
    for (const run of knobs.runs) {
      const { value: r, processMs, jsThreadMs } = await measureCpu(pid, () => workerd.call("/run", request(knobs, run, knobs.ms)) as Promise<RunResult>);
      const perQuery = (ms: number) => ((ms * 1000) / Math.max(1, r.queries)).toFixed(0);
      log(`${run.contender} c=${run.concurrency} rep ${rep}/${knobs.reps}: ${((r.queries * 1000) / r.elapsedMs).toFixed(0)} q/s; ` +
        `JS thread ${perQuery(jsThreadMs)} µs/query, workerd process ${perQuery(processMs)} µs/query` +
        `${r.errors ? `; ${r.errors} errors (${r.firstError})` : ""}; load ${os.loadavg()[0]!.toFixed(2)}`);
    }
  }
}

/** Saves the bundles (scripts with esbuild's module comments) the profile's frames will point into. */
async function saveBundles(inspector: Inspector, dir: string): Promise<Bundles> {
  const parsed: { scriptId: string; url: string }[] = [];
  inspector.onEvent = (method, params) => {
    if (method === "Debugger.scriptParsed" && params.url) parsed.push(params);
  };
  // V8 announces every script it already has before it answers Debugger.enable.
  await inspector.call("Debugger.enable");
  const bundles: Bundles = new Map();
  for (const { scriptId, url } of parsed) {
    const { scriptSource } = await inspector.call<{ scriptSource: string }>("Debugger.getScriptSource", { scriptId });
    const index = moduleIndex(scriptSource);
    if (!index.length) continue;
    writeFileSync(join(dir, `script-${scriptId}.js`), scriptSource);
    bundles.set(scriptId, index);
    log(`bundle ${url}: script ${scriptId}, ${index.length} modules`);
  }
  // The debugger costs every call too: off before profiling.
  await inspector.call("Debugger.disable");
  inspector.onEvent = () => {};
  if (!bundles.size) log("warning: no bundle with esbuild's module comments; functions will have no source file");
  return bundles;
}

/** One profiled run after its warm-up: writes <name>.cpuprofile, .meta.json and .txt into `dir`. */
async function profileRun(workerd: Workerd, pid: number | undefined, inspector: Inspector, knobs: Knobs, run: Pair, dir: string, bundles: Bundles) {
  await prepare(workerd, knobs, run);
  await inspector.call("Profiler.enable");
  await inspector.call("Profiler.setSamplingInterval", { interval: knobs.intervalUs });
  await inspector.call("Profiler.start");
  const { value: r, processMs, jsThreadMs } = await measureCpu(pid, () => workerd.call("/run", request(knobs, run, knobs.ms)) as Promise<RunResult>);
  // A long run's profile takes a while to serialize and send.
  const { profile } = await inspector.call<{ profile: CpuProfile }>("Profiler.stop", {}, 120_000);
  await inspector.call("Profiler.disable");
  const name = `${run.contender}-${knobs.query}-c${run.concurrency}`;
  if (r.errors) log(`${name}: ${r.errors} errors (${r.firstError})`);
  const meta: Meta = {
    name, contender: run.contender, query: knobs.query, concurrency: run.concurrency, ops: r.ops, queries: r.queries, elapsedMs: r.elapsedMs,
    intervalUs: knobs.intervalUs, workerdCpuMs: processMs, jsThreadCpuMs: jsThreadMs, loadAverage: os.loadavg()[0]!,
  };
  writeFileSync(join(dir, `${name}.cpuprofile`), JSON.stringify(profile));
  writeFileSync(join(dir, `${name}.meta.json`), JSON.stringify(meta, null, 1) + "\n");
  writeReport(dir, profile, meta, bundles);
}

async function capture(): Promise<void> {
  const knobs = readKnobs();
  const out = process.env.PROFILE_OUT ? resolve(process.env.PROFILE_OUT) : mkdtempSync(join(os.tmpdir(), "edgepool-profile-"));
  mkdirSync(out, { recursive: true });
  log(`writing to ${out}`);

  const databaseUrl = await startPostgres();
  const dbUrl = new URL(databaseUrl);
  const admin = postgres(databaseUrl, { max: 1, onnotice: () => {}, connection: { application_name: "bench:monitor" } });
  onCleanup("monitor connection", () => admin.end({ timeout: 1 }));
  log(`${(await admin<{ v: string }[]>`select version() as v`)[0]!.v.split(",")[0]} at ${dbUrl.host}`);
  await ensureAccounts(admin, dbUrl);

  const workerd = await startWorkerd(join(here, "wrangler.bench.toml"), databaseUrl, { durationMs: knobs.ms, warmupMs: knobs.warmupMs }, machine(join(here, "..")));
  const pid = workerd.pids[0];
  if (knobs.reps > 0) await plainRuns(workerd, pid, knobs);

  const inspector = await Inspector.connect(workerd.inspectorUrl);
  onCleanup("inspector session", () => inspector.close());
  const bundles = await saveBundles(inspector, out);
  for (const run of knobs.runs) await profileRun(workerd, pid, inspector, knobs, run, out, bundles);
  log(`wrote ${knobs.runs.length} profiles and reports to ${out}; again with other PROFILE_TOP: npm run bench:profile -- --report ${out}`);
}

// ---------------------------------------------------------------------------------------------
// Main

if (process.argv[2] === "--report") {
  reportDir(process.argv[3] ? resolve(process.argv[3]) : undefined);
} else {
  await runToEnd(capture);
}
