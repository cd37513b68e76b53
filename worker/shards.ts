import type { FrontStats } from "./front.ts";
import type { Sizing } from "./pool/metrics.ts";

/** One shard's counters, with its number. */
export type ShardStats = FrontStats & { shard: number };

/** A sharded tenant's counters: the sums over its shards, and each shard's own under `shards`. */
export type ShardedStats = FrontStats & { shards?: ShardStats[] };

/**
 * Fields that are a maximum, not a count: the tenant's is the largest
 * shard's. A coordinator's busy time and its share of its thread are its own
 * thread's (the most loaded one limits); its calls add up.
 */
const MAXIMA = new Set(["maxWaitMs", "p50", "p99", "busyMsPerSecond", "busyRatio"]);

/**
 * Sums shards' counters: counts add up (nested ones and histogram counts
 * too), waits, percentiles and thread load take the largest shard's (an upper
 * bound), the sizing verdict is the most pressed shard's with the suggestion
 * scaled to the whole tenant.
 */
export function sumShards(shards: ShardStats[]): ShardedStats {
  const [first] = shards;
  if (!first) throw new Error("sumShards: no shard");
  const total = merge(shards.map(({ shard: _, ...s }) => s)) as FrontStats;
  total.tenant = first.tenant;
  total.acquireWaitHistogram = { ...total.acquireWaitHistogram, bucketsMs: first.acquireWaitHistogram.bucketsMs };
  total.sizing = tenantSizing(shards);
  return { ...total, shards };
}

function merge(values: unknown[], key = ""): unknown {
  const [first] = values;
  if (typeof first === "number") {
    const numbers = values.map((v) => (typeof v === "number" ? v : 0));
    return MAXIMA.has(key) ? Math.max(...numbers) : numbers.reduce((a, b) => a + b, 0);
  }
  if (Array.isArray(first)) return first.map((_, i) => merge(values.map((v) => (v as unknown[])[i]), key));
  if (typeof first === "object" && first !== null) {
    return Object.fromEntries(Object.keys(first).map((k) => [k, merge(values.map((v) => (v as Record<string, unknown>)[k]), k)]));
  }
  return first;
}

/**
 * Coordinator-bound if any shard's thread is the limit (the one that suggests
 * the most shards: each suggests for the whole tenant), else undersized if
 * any shard is (the one that suggests the most connections), else shard 0's
 * verdict; the suggested maxConnections counts every shard at that size.
 */
function tenantSizing(shards: ShardStats[]): Sizing {
  const by = (verdict: Sizing["verdict"], key: "suggestedShards" | "suggestedMaxConnections") =>
    shards.filter((s) => s.sizing.verdict === verdict).sort((a, b) => b.sizing[key] - a.sizing[key])[0];
  const pressed = by("coordinator-bound", "suggestedShards") ?? by("undersized", "suggestedMaxConnections") ?? shards[0]!;
  const { verdict, suggestedMaxConnections, suggestedShards, reason } = pressed.sizing;
  return { verdict, suggestedMaxConnections: suggestedMaxConnections * shards.length, suggestedShards, reason: `shard ${pressed.shard}: ${reason}` };
}
