// Configuration: what is measured (contenders, queries, context probes) and the BENCH_* knobs
// that choose among it (documented at the top of bench/run.ts).
import { resolve } from "node:path";
import type { QueryName } from "../worker.ts";

/**
 * The contenders. Worker contenders run inside workerd; `-loop` keeps one client instance per
 * client loop for the whole run, `-req` makes a new one per request for one query (what a Worker
 * must do: design §7).
 */
export const CONTENDERS = [
  "naive", "pgjs-workerd",
  "builtin-loop", "builtin-req",
  "pgjs-edgepool-loop", "pgjs-edgepool-req",
  "pg-edgepool-loop", "pg-edgepool-req",
  "lease", "direct", "pgbouncer", "pgbench",
] as const;
export type Contender = (typeof CONTENDERS)[number];
/** Contenders whose load generator runs in the bench Worker (workerd). */
export const WORKER_CONTENDERS = [
  "naive", "pgjs-workerd", "builtin-loop", "builtin-req", "pgjs-edgepool-loop", "pgjs-edgepool-req", "pg-edgepool-loop", "pg-edgepool-req", "lease",
] as const satisfies readonly Contender[];
export type WorkerContenderName = (typeof WORKER_CONTENDERS)[number];
/** Worker contenders that go through an edgepool coordinator (a tenant each). */
export const EDGEPOOL_CONTENDERS: readonly Contender[] = ["builtin-loop", "builtin-req", "pgjs-edgepool-loop", "pgjs-edgepool-req", "pg-edgepool-loop", "pg-edgepool-req", "lease"];
export const isWorkerContender = (c: string): c is WorkerContenderName => (WORKER_CONTENDERS as readonly string[]).includes(c);
/** The two-process run: contenders whose coordinator runs in a workerd of its own (the v1 one-shot is added by BENCH_V1_DIR). */
export const SPLIT_CONTENDERS = ["builtin-req", "builtin-loop", "pgjs-edgepool-req", "pgjs-edgepool-loop", "pg-edgepool-req", "pg-edgepool-loop"] as const satisfies readonly Contender[];
/** What the two-process run measures by default: the contenders the targets need. */
const SPLIT_DEFAULT: readonly Contender[] = ["builtin-req", "builtin-loop", "pgjs-edgepool-req", "pgjs-edgepool-loop"];
/** Measurements of workerd itself, for context (not contenders). */
export type ContextProbe = "rpc-noop" | "rpc-pg" | "pg-exclusive" | "pg-pipelined";
export const CONTEXT: { probe: ContextProbe; concurrency: number; label: string }[] = [
  { probe: "rpc-noop", concurrency: 1, label: "Durable Object RPC round trip, method does nothing" },
  { probe: "rpc-pg", concurrency: 1, label: "Durable Object RPC whose method runs the query on its own postgres.js connection (no pool: the floor for a one-shot)" },
  { probe: "pg-exclusive", concurrency: 1, label: "postgres.js inside workerd, one connection, no RPC" },
  { probe: "pg-exclusive", concurrency: 10, label: "postgres.js inside workerd, 10 connections used one query at a time (the pool's discipline), no RPC" },
];
export const QUERIES: readonly QueryName[] = ["select1", "point"];
export const POOL_SIZE = 10;
export const ACCOUNTS = 100_000;
export const POINT_SELECT = "select abalance from pgbench_accounts where aid = $1";

export type Config = ReturnType<typeof readConfig>;

/** The knobs from the environment; exits (status 2) on a value it does not know. `here`: the default BENCH_OUT. */
export function readConfig(here: string) {
  const config = {
    durationMs: intEnv("BENCH_DURATION_MS", 2000),
    warmupMs: intEnv("BENCH_WARMUP_MS", 500),
    reps: intEnv("BENCH_REPS", 3),
    concurrency: listEnv("BENCH_CONCURRENCY", ["1", "10", "100"]).map(Number),
    queries: listEnv("BENCH_QUERIES", [...QUERIES]) as QueryName[],
    contenders: selectContenders(),
    /** Two-process run: which contenders, at which concurrency levels ("0": skip it). */
    split: process.env.BENCH_SPLIT === "0" ? [] : selectSplit(),
    splitConcurrency: listEnv("BENCH_SPLIT_CONCURRENCY", ["10"]).map(Number),
    /** A checkout of v1 (commit 8ab601e) whose bench Worker's one-shot runs in the two-process setup too. */
    v1Dir: process.env.BENCH_V1_DIR ? resolve(process.cwd(), process.env.BENCH_V1_DIR) : undefined,
    /** Also measure workerd itself (RPC round trip, postgres.js without the pool) for context. */
    context: process.env.BENCH_CONTEXT !== "0",
    out: process.env.BENCH_OUT ? resolve(process.cwd(), process.env.BENCH_OUT) : here,
    poolSize: POOL_SIZE,
  };
  for (const c of config.splitConcurrency) if (!Number.isInteger(c) || c < 1) fail(`BENCH_SPLIT_CONCURRENCY: "${c}" is not a positive integer`);
  for (const q of config.queries) if (!QUERIES.includes(q)) fail(`BENCH_QUERIES: unknown query "${q}" (known: ${QUERIES.join(", ")})`);
  for (const c of config.concurrency) if (!Number.isInteger(c) || c < 1) fail(`BENCH_CONCURRENCY: "${c}" is not a positive integer`);
  return config;
}

/**
 * BENCH_ONLY (a list of names or prefixes: `pgjs-edgepool` selects both of its variants, `builtin`
 * both built-in ones) or BENCH_CONTENDERS (exact names); all of them by default.
 */
function selectContenders(): Contender[] {
  const only = listEnv("BENCH_ONLY", []);
  // `none`: only the two-process run (BENCH_SPLIT, BENCH_V1_DIR).
  if (only.length === 1 && only[0] === "none") return [];
  if (only.length) return pick("BENCH_ONLY", only, CONTENDERS);
  return pick("BENCH_CONTENDERS", listEnv("BENCH_CONTENDERS", [...CONTENDERS]), CONTENDERS);
}

/** BENCH_SPLIT (names or prefixes among SPLIT_CONTENDERS); with only BENCH_ONLY set, the split contenders it selects. */
function selectSplit(): Contender[] {
  const split = listEnv("BENCH_SPLIT", []);
  if (split.length) return pick("BENCH_SPLIT", split, SPLIT_CONTENDERS);
  const only = listEnv("BENCH_ONLY", []).filter((o) => o !== "none");
  if (only.length) return SPLIT_DEFAULT.filter((c) => only.some((o) => c === o || c.startsWith(`${o}-`)));
  return [...SPLIT_DEFAULT];
}

function pick(knob: string, wanted: string[], known: readonly Contender[]): Contender[] {
  for (const w of wanted) {
    if (!known.some((c) => c === w || c.startsWith(`${w}-`))) fail(`${knob}: unknown contender "${w}" (known: ${known.join(", ")}; a prefix such as "builtin" selects all its variants)`);
  }
  return known.filter((c) => wanted.some((w) => c === w || c.startsWith(`${w}-`)));
}

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
