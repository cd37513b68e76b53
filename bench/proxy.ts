// `npm run bench:proxy`: pgbench direct, through pgbouncer and through `edgepool proxy`, in one
// run against one embedded Postgres, each pooler with 10 server connections (issue 10,
// Benchmarks). For each: `pgbench -S -M prepared -c 10 -j 2 -T <s>` and the default TPC-B-like
// script `-c 10 -T <s>`; tps, latency average, failed transactions, and the CPU seconds the proxy
// process, workerd and pgbouncer used during each run (/proc/<pid>/stat). Writes
// bench/proxy-results.md (BENCH_PROXY_OUT to write elsewhere).
//
//   BENCH_PROXY_SECONDS  seconds per pgbench run (default 15)
//   BENCH_PROXY_OUT      the report's path (default bench/proxy-results.md)
//
// Not part of `npm run bench`. Everything it starts is stopped by pid, also on failure or Ctrl-C.
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { ADMIN_TOKEN, startCoordinator } from "../test/remote/coordinator.ts";
import { startEmbeddedPostgres } from "../test/setup/embedded.ts";
import { POOL_SIZE } from "./lib/config.ts";
import { startPgbouncer } from "./lib/servers.ts";
import { alive, children, cpuMs, descendants, findPgbouncer, log, logAs, machine, onCleanup, runToEnd, sleep, stopChild, tool } from "./lib/system.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const SECONDS = Number(process.env.BENCH_PROXY_SECONDS ?? 15);
const OUT = resolve(process.env.BENCH_PROXY_OUT ?? join(root, "bench/proxy-results.md"));
const CLIENTS = 10;
const TENANT = "bench-proxy";

type Route = "direct" | "pgbouncer" | "edgepool proxy";
type Script = "select-only" | "tpcb";
/** One pgbench run's figures and the CPU each watched process used during it. */
interface Result {
  route: Route;
  script: Script;
  tps: number;
  latencyMs: number;
  transactions: number;
  failed: number;
  /** CPU ms during the run, by process label. */
  cpu: Record<string, number>;
  note?: string;
}

/** Runs pgbench to its end; rejects on a non-zero exit with its output. */
function pgbench(args: string[], env: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("pgbench", args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    if (child.pid) children.add(child.pid);
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.once("error", reject);
    child.once("exit", (code) => {
      if (child.pid) children.delete(child.pid);
      if (code === 0) resolve(out);
      else reject(new Error(`pgbench ${args.join(" ")} exited ${code}:\n${out.slice(-3000)}`));
    });
  });
}

/** tps, latency average, processed and failed transactions from pgbench's summary. */
function parse(out: string) {
  const number = (re: RegExp) => Number(re.exec(out)?.[1] ?? NaN);
  return {
    tps: number(/tps = ([\d.]+) \(without initial connection time\)/),
    latencyMs: number(/latency average = ([\d.]+) ms/),
    transactions: number(/number of transactions actually processed: (\d+)/),
    failed: number(/number of failed transactions: (\d+)/) || 0,
  };
}

await runToEnd(async () => {
  logAs("bench:proxy");
  if (!(SECONDS > 0)) throw new Error(`BENCH_PROXY_SECONDS must be a positive number, got ${JSON.stringify(process.env.BENCH_PROXY_SECONDS)}`);
  const pgbouncerBin = findPgbouncer();
  if (!pgbouncerBin) throw new Error("pgbouncer is not installed (Debian: apt-get install pgbouncer)");
  if (tool("pgbench", ["--version"]) === "not installed") throw new Error("pgbench is not installed (Debian: postgresql-15 has it)");
  const facts = machine(root);

  // Always its own embedded Postgres: pgbench -i drops and recreates pgbench_* tables.
  const pg = await startEmbeddedPostgres({ maxConnections: 100 });
  onCleanup("postgres", () => pg.stop());
  const db = new URL(pg.url);
  const password = decodeURIComponent(db.password);
  const libpq = (port: string | number, user = decodeURIComponent(db.username)) => ["-h", "127.0.0.1", "-p", String(port), "-U", user, "-d", "postgres"];
  const admin = postgres(pg.url, { max: 1, onnotice: () => {} });
  onCleanup("admin connection", () => admin.end({ timeout: 1 }));
  log(`${(await admin<{ v: string }[]>`select version() as v`)[0]!.v.split(",")[0]} on 127.0.0.1:${db.port}`);
  await pgbench(["-i", "-s", "1", "-q", ...libpq(db.port)], { PGPASSWORD: password });

  // pgbouncer < 1.21 cannot keep protocol-level prepared statements in transaction mode: its
  // `-S -M prepared` row then runs in session mode (10 clients, 10 server connections: no waiting).
  const version = /PgBouncer (\d+)\.(\d+)/.exec(tool(pgbouncerBin, ["--version"]));
  const preparedInTransactionMode = !!version && (Number(version[1]) > 1 || Number(version[2]) >= 21);
  const bouncer = await startPgbouncer(pgbouncerBin, db, "transaction", preparedInTransactionMode ? ["max_prepared_statements = 100"] : []);
  const sessionBouncer = preparedInTransactionMode ? bouncer : await startPgbouncer(pgbouncerBin, db, "session");

  // The coordinator under wrangler dev, without wrangler's local dev tools (not in production workerd; see bench/lib/servers.ts).
  process.env.WRANGLER_SEND_METRICS = "false";
  process.env.CLOUDFLARE_CF_FETCH_ENABLED ??= "false";
  process.env.X_LOCAL_OBSERVABILITY = "false";
  process.env.X_LOCAL_EXPLORER = "false";
  const before = new Set(descendants(process.pid).map((p) => p.pid));
  const coordinator = await startCoordinator(pg.url);
  const workerds = descendants(process.pid).filter((p) => p.comm === "workerd" && !before.has(p.pid)).map((p) => p.pid);
  for (const pid of workerds) children.add(pid);
  onCleanup("coordinator (wrangler dev)", async () => {
    await coordinator.stop();
    for (const pid of workerds) if (alive(pid)) process.kill(pid, "SIGKILL");
  });
  const token = await coordinator.tenant(TENANT, { maxConnections: POOL_SIZE, acquireTimeoutMs: 30_000 });
  log(`coordinator at ${coordinator.url} (workerd pids ${workerds.join(", ")}), tenant "${TENANT}" maxConnections ${POOL_SIZE}`);

  // `edgepool proxy` as users run it: bin/edgepool.ts under this Node (22), token from EDGEPOOL_TOKEN.
  const proxyEnv: NodeJS.ProcessEnv = { ...process.env, EDGEPOOL_TOKEN: token };
  for (const key of Object.keys(proxyEnv)) if (/^PG/.test(key)) delete proxyEnv[key];
  const proxy = spawn(process.execPath, [join(root, "bin/edgepool.ts"), "proxy", coordinator.url, "--tenant", TENANT, "--port", "0"], { env: proxyEnv, stdio: ["ignore", "ignore", "pipe"] });
  if (proxy.pid) children.add(proxy.pid);
  onCleanup("edgepool proxy", () => stopChild(proxy, "edgepool proxy"));
  let proxyOutput = "";
  const proxyPort = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`edgepool proxy did not listen within 10 s:\n${proxyOutput}`)), 10_000);
    proxy.stderr.on("data", (d) => {
      proxyOutput += d;
      const match = /listening on [^\s]+:(\d+) /.exec(proxyOutput);
      if (!match) return;
      clearTimeout(timer);
      resolve(Number(match[1]));
    });
    proxy.once("exit", (code) => reject(new Error(`edgepool proxy exited (${code}):\n${proxyOutput}`)));
  });
  log(`edgepool proxy (pid ${proxy.pid}) on 127.0.0.1:${proxyPort}`);

  const watched: Record<string, number> = { "edgepool proxy": proxy.pid! };
  // wrangler dev runs two workerd processes: its dev proxy (every request and WebSocket crosses it) and the one running the coordinator.
  workerds.forEach((pid, i) => (watched[`workerd ${i + 1} (pid ${pid})`] = pid));
  watched["pgbouncer (transaction)"] = bouncer.pid;
  if (sessionBouncer !== bouncer) watched["pgbouncer (session, for -S -M prepared)"] = sessionBouncer.pid;
  const bouncerPort = new URL(bouncer.url).port;
  const sessionBouncerPort = new URL(sessionBouncer.url).port;

  const routes: { route: Route; args: (script: Script) => string[]; env: Record<string, string>; note?: (script: Script) => string | undefined }[] = [
    { route: "direct", args: () => libpq(db.port), env: { PGPASSWORD: password } },
    {
      route: "pgbouncer",
      args: (script) => libpq(script === "select-only" ? sessionBouncerPort : bouncerPort),
      env: { PGPASSWORD: password },
      note: (script) => (script === "select-only" && !preparedInTransactionMode ? `session mode: ${version?.[0] ?? "this pgbouncer"} keeps no prepared statements in transaction mode` : undefined),
    },
    // The token is the proxy's (EDGEPOOL_TOKEN); the user and database names are the tenant's business.
    { route: "edgepool proxy", args: () => libpq(proxyPort, "edgepool"), env: {} },
  ];
  const scripts: { script: Script; args: string[] }[] = [
    { script: "select-only", args: ["-S", "-M", "prepared", "-c", String(CLIENTS), "-j", "2"] },
    { script: "tpcb", args: ["-c", String(CLIENTS)] },
  ];

  const results: Result[] = [];
  for (const { script, args } of scripts) {
    for (const { route, args: target, env, note } of routes) {
      // The same starting point for each: dead tuples of the previous TPC-B run vacuumed away (and -n below).
      await admin.unsafe("vacuum analyze pgbench_branches, pgbench_tellers, pgbench_accounts, pgbench_history");
      const cpuBefore = Object.fromEntries(Object.entries(watched).map(([label, pid]) => [label, cpuMs(pid)]));
      const out = await pgbench(["-n", ...args, "-T", String(SECONDS), ...target(script)], env);
      const cpu = Object.fromEntries(Object.entries(watched).map(([label, pid]) => [label, cpuMs(pid) - cpuBefore[label]!]));
      const result: Result = { route, script, ...parse(out), cpu, note: note?.(script) };
      if (Number.isNaN(result.tps)) throw new Error(`no tps in pgbench's output:\n${out}`);
      results.push(result);
      log(`${script.padEnd(11)} ${route.padEnd(14)} ${result.tps.toFixed(0).padStart(7)} tps, latency ${result.latencyMs.toFixed(3)} ms, failed ${result.failed}; CPU s: ${Object.entries(cpu).filter(([, ms]) => ms > 0).map(([l, ms]) => `${l} ${(ms / 1000).toFixed(2)}`).join(", ") || "none watched"}`);
      await sleep(200);
    }
  }

  const report = render(results, watched, { ...facts, seconds: SECONDS, proxyPid: proxy.pid!, workerds });
  writeFileSync(OUT, report);
  console.log(`\n${report}`);
  log(`wrote ${OUT}`);
});

function render(results: Result[], watched: Record<string, number>, facts: ReturnType<typeof machine> & { seconds: number; proxyPid: number; workerds: number[] }): string {
  const row = (script: Script, route: Route) => results.find((r) => r.script === script && r.route === route)!;
  const lines: string[] = [
    "# edgepool proxy next to pgbouncer and direct (pgbench)",
    "",
    `\`npm run bench:proxy\`, ${facts.seconds} s per run, ${CLIENTS} clients, ${POOL_SIZE} server connections for each pooler (pgbouncer pool ${POOL_SIZE}; tenant maxConnections ${POOL_SIZE}), one embedded Postgres, pgbench -i -s 1.`,
    `Machine: ${facts.cores} × ${facts.cpu}, ${facts.memoryGiB} GiB, ${facts.os}; Node ${facts.node}, wrangler ${facts.wrangler}, workerd ${facts.workerd}, ${facts.pgbench}, ${facts.pgbouncer}.`,
    "",
    "| script | route | tps | latency avg (ms) | failed | edgepool / pgbouncer |",
    "|---|---|---:|---:|---:|---:|",
  ];
  for (const script of ["select-only", "tpcb"] as const) {
    const bouncer = row(script, "pgbouncer");
    for (const route of ["direct", "pgbouncer", "edgepool proxy"] as const) {
      const r = row(script, route);
      const label = script === "select-only" ? "`-S -M prepared -c 10 -j 2`" : "TPC-B-like `-c 10`";
      lines.push(`| ${label} | ${route}${r.note ? ` (${r.note})` : ""} | ${r.tps.toFixed(0)} | ${r.latencyMs.toFixed(3)} | ${r.failed} | ${route === "edgepool proxy" ? `${(r.tps / bouncer.tps).toFixed(2)}×` : ""} |`);
    }
  }
  const selectRatio = row("select-only", "edgepool proxy").tps / row("select-only", "pgbouncer").tps;
  lines.push("", `Target (issue 10): edgepool ≥ 0.5× pgbouncer on \`-S\` at 10 clients: **${selectRatio.toFixed(2)}× — ${selectRatio >= 0.5 ? "met" : "not met"}**.`, "");
  lines.push(
    "## Where the time goes",
    "",
    "CPU seconds (user + system, /proc/<pid>/stat) each process used during each run, and per transaction (µs). " +
      `The edgepool proxy is the Node process (pid ${facts.proxyPid}) that turns each TCP client into a WebSocket; ` +
      `wrangler dev runs two workerd processes (pids ${facts.workerds.join(", ")}): its dev proxy, which every WebSocket frame crosses (not there in production), and the one running the coordinator (the busier of the two on the edgepool rows). ` +
      "pgbench and the Postgres backends are not counted.",
    "",
  );
  const labels = Object.keys(watched);
  lines.push(`| script | route | ${labels.map((l) => `${l} CPU s (µs/tx)`).join(" | ")} |`, `|---|---|${labels.map(() => "---:").join("|")}|`);
  for (const r of results) {
    const cells = labels.map((l) => {
      const ms = r.cpu[l]!;
      return Number.isNaN(ms) ? "?" : `${(ms / 1000).toFixed(2)} (${r.transactions ? ((ms * 1000) / r.transactions).toFixed(1) : "-"})`;
    });
    lines.push(`| ${r.script} | ${r.route} | ${cells.join(" | ")} |`);
  }
  lines.push("");
  return lines.join("\n");
}
