import { CLOSE_REASONS, type CloseReason } from "./connection.ts";

const WAIT_SAMPLES = 1024;

/** Upper bounds (ms) of the acquire-wait histogram's buckets; a last `+Inf` bucket is implied. */
export const WAIT_BUCKETS_MS: readonly number[] = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/** Acquire waits as a Prometheus histogram: cumulative counts per upper bound (the last is `+Inf`, all acquires), and their sum. */
export interface WaitHistogram {
  bucketsMs: readonly number[];
  /** `counts[i]`: acquires that waited at most `bucketsMs[i]`; one more entry at the end for `+Inf`. */
  counts: number[];
  sumMs: number;
}

/** Counters and the acquire-wait sample the pool keeps for `stats()`. */
export class Metrics {
  acquired = 0;
  released = 0;
  timeouts = 0;
  queueFull = 0;
  created = 0;
  connectFailures = 0;
  leasesExpired = 0;
  leasesLost = 0;
  /** One-shot queries pipelined on a connection that was already running one. */
  pipelined = 0;
  /** Acquires that had to queue because every connection was busy at max. */
  waited = 0;
  /** Highest leased + waiting seen: the concurrent executors the pool had to serve. */
  peakDemand = 0;
  readonly closed = Object.fromEntries(CLOSE_REASONS.map((r) => [r, 0])) as Record<CloseReason, number>;
  private readonly waits = new Float64Array(WAIT_SAMPLES);
  private samples = 0;
  /** Acquires per bucket of WAIT_BUCKETS_MS (not cumulative), the last one beyond every bound. */
  private readonly buckets = new Array<number>(WAIT_BUCKETS_MS.length + 1).fill(0);
  private waitSumMs = 0;

  /** Records how long one acquire waited: in a ring of the last 1024 (percentiles) and in the histogram (since the pool started). */
  recordWait(ms: number): void {
    this.waits[this.samples++ % WAIT_SAMPLES] = ms;
    let i = 0;
    while (i < WAIT_BUCKETS_MS.length && ms > WAIT_BUCKETS_MS[i]!) i++;
    this.buckets[i]!++;
    this.waitSumMs += ms;
  }

  /** Every acquire's wait since the pool started, as cumulative buckets. */
  waitHistogram(): WaitHistogram {
    let total = 0;
    const counts = this.buckets.map((n) => (total += n));
    return { bucketsMs: WAIT_BUCKETS_MS, counts, sumMs: this.waitSumMs };
  }

  /** The p-th percentile (0..100) of the recent acquire waits, nearest rank. */
  waitPercentile(p: number): number {
    const n = Math.min(this.samples, WAIT_SAMPLES);
    if (n === 0) return 0;
    const sorted = Array.from(this.waits.subarray(0, n)).sort((a, b) => a - b);
    return sorted[Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))]!;
  }
}

/** The sizing verdicts: the pool's (demand against `maxConnections`) and the coordinator's thread (`coordinator-bound`: more `shards`). */
export const VERDICTS = ["undersized", "oversized", "balanced", "idle", "coordinator-bound"] as const;

/** Whether `maxConnections` fits the demand the pool measured (the balance rule), and whether one coordinator's thread is the limit. */
export interface Sizing {
  verdict: (typeof VERDICTS)[number];
  suggestedMaxConnections: number;
  /** `shards` the sizing rule suggests: the current count unless the coordinator's thread is the limit. */
  suggestedShards: number;
  reason: string;
}

/**
 * The balance rule: concurrent executors ≤ maxConnections means nobody waits.
 * Undersized when borrowers waited, timed out or shared a busy connection
 * (pipelined); oversized when the peak stayed
 * at half of max or below. `suggestedShards` is the current `shards` here;
 * the coordinator raises it when its thread is the limit (worker/thread-meter.ts).
 */
export function sizing(metrics: Metrics, maxConnections: number, minConnections: number, shards = 1): Sizing {
  const peak = metrics.peakDemand;
  const suggestedShards = shards;
  if (metrics.acquired === 0 && metrics.timeouts === 0 && metrics.queueFull === 0) {
    return { verdict: "idle", suggestedMaxConnections: maxConnections, suggestedShards, reason: "no demand measured yet" };
  }
  if (metrics.waited > 0 || metrics.pipelined > 0 || metrics.timeouts > 0 || metrics.queueFull > 0) {
    return {
      verdict: "undersized",
      suggestedMaxConnections: Math.max(peak, maxConnections + 1),
      suggestedShards,
      reason: `peak demand ${peak} > maxConnections ${maxConnections}: ${metrics.waited} acquires waited, ${metrics.pipelined} were pipelined on a busy connection, ${metrics.timeouts} timed out, ${metrics.queueFull} found the queue full`,
    };
  }
  if (maxConnections > 1 && peak * 2 <= maxConnections) {
    return {
      verdict: "oversized",
      suggestedMaxConnections: Math.max(peak, minConnections, 1),
      suggestedShards,
      reason: `peak demand ${peak} stayed at or below half of maxConnections ${maxConnections}`,
    };
  }
  return { verdict: "balanced", suggestedMaxConnections: maxConnections, suggestedShards, reason: `peak demand ${peak} fits maxConnections ${maxConnections}` };
}
