// Configuration: what is measured (contenders, queries, context probes) and the BENCH_* knobs
// that choose among it (documented at the top of bench/run.ts).
import { resolve } from "node:path";
import type { QueryName } from "../worker.ts";

export const CONTENDERS = ["naive", "oneshot", "lease", "direct", "pgbouncer", "pgbench"] as const;
export type Contender = (typeof CONTENDERS)[number];
/** Measurements of workerd itself, for context (not contenders). */
export type ContextProbe = "rpc-noop" | "rpc-pg" | "pg-exclusive" | "pg-pipelined";
export const CONTEXT: { probe: ContextProbe; concurrency: number; label: string }[] = [
  { probe: "rpc-noop", concurrency: 1, label: "Durable Object RPC round trip, method does nothing" },
  { probe: "rpc-pg", concurrency: 1, label: "Durable Object RPC whose method runs the query on its own postgres.js connection (no pool: the floor for a one-shot)" },
  { probe: "pg-exclusive", concurrency: 1, label: "postgres.js inside workerd, one connection, no RPC" },
  { probe: "pg-exclusive", concurrency: 10, label: "postgres.js inside workerd, 10 connections used one query at a time (the pool's discipline), no RPC" },
  { probe: "pg-pipelined", concurrency: 100, label: "postgres.js inside workerd, one pool of 10 that pipelines queries, no RPC" },
];
export const QUERIES: readonly QueryName[] = ["select1", "point"];
export const POOL_SIZE = 10;
export const ACCOUNTS = 100_000;
export const POINT_SELECT = "select abalance from pgbench_accounts where aid = $1";

export type Config = ReturnType<typeof readConfig>;

/** The knobs from the environment; exits (status 2) on a value it does not know. `here`: the default BENCH_OUT. */
export function readConfig(here: string) {
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
  return config;
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
