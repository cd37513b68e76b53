import type { Clock } from "./pool/clock.ts";
import type { Sizing } from "./pool/metrics.ts";

/** Requests a second one Durable Object serves, as Cloudflare documents it (a soft limit: design §7). */
export const OBJECT_REQUESTS_PER_SECOND = 1_000;

/** Above this share of the thread (at the window's peak) the coordinator, not `maxConnections`, is the limit. */
export const BUSY_LIMIT = 0.7;

/** The share of its thread each coordinator should run at once the tenant has the suggested `shards`. */
export const BUSY_TARGET = 0.5;

/** Lateness not counted: the clock's 1 ms steps (an idle workerd fires most 10 ms timers 1 ms "late"). */
export const TIMER_SLACK_MS = 1;

/** How far back the peaks reach (the sizing window). */
export const THREAD_WINDOW_MS = 5 * 60_000;

/** How long after it is armed the probe is due. */
export const PROBE_INTERVAL_MS = 10;

/** How hard one coordinator's thread worked: the busiest second of the last `THREAD_WINDOW_MS`. */
export interface ThreadLoad {
  /** Entry calls (one-shots, lease batches, acquires, driver sessions and their incoming batches) in the busiest second. */
  callsPerSecond: number;
  /** Milliseconds the probe found the thread occupied, in the busiest second (at most 1000). */
  busyMsPerSecond: number;
  /** The busiest second's share of the thread: the larger of busy ms / 1000 and calls / 1000 (Cloudflare's soft limit). */
  busyRatio: number;
}

/**
 * Measures one coordinator's thread (a Durable Object runs on one) so the
 * sizing verdict can tell when `shards`, not `maxConnections`, is the limit.
 *
 * Two measures, per second, the peaks kept over `THREAD_WINDOW_MS`:
 *
 * - Calls: each entry into the coordinator (`call()`: a one-shot, a lease's
 *   batch, an acquire, a driver session, each batch of bytes a driver
 *   session receives) is one delivery the thread must handle. Cloudflare
 *   documents about 1,000 requests a second per object; calls / 1,000 is the
 *   share of that. It needs no clock, so it holds in production too.
 * - Busy time, from the event loop: while calls arrive, a probe timer is due
 *   `PROBE_INTERVAL_MS` after the last one fired. How late it fires is time
 *   the thread could not run a due event because it was occupied — by our
 *   JavaScript and by the runtime's own work for the object (RPC, streams,
 *   sockets), which no clock read inside a handler would see. The sum of the
 *   lateness in a second is a lower bound of the busy time that reaches the
 *   whole second as events queue behind each other, which is when another
 *   shard helps. In production the clock advances only on I/O and a timer's
 *   callback reads its due time, so there this reads about 0 and the call rate
 *   carries the verdict; in local workerd it is the real lateness (less
 *   `TIMER_SLACK_MS`: an idle thread's timers read 1 ms late).
 *
 * Cost on the hot path: `call()` is one increment and, when no probe is
 * armed, arming one (at most one timer per `PROBE_INTERVAL_MS`, none while
 * idle). Plain TypeScript: the clock is injected.
 */
export class ThreadMeter {
  private readonly clock: Clock;
  private readonly seconds: number;
  /** Per slot (second % seconds): which second it holds, its calls and its busy ms. */
  private readonly stamps: Float64Array;
  private readonly calls: Float64Array;
  private readonly busy: Float64Array;
  /** Calls since the probe was armed. */
  private pending = 0;
  private armedAt = 0;
  private dueAt = 0;
  private timer: unknown;
  private readonly fire = () => this.probe();

  constructor(clock: Clock, windowMs = THREAD_WINDOW_MS) {
    this.clock = clock;
    this.seconds = Math.max(1, Math.ceil(windowMs / 1000));
    this.stamps = new Float64Array(this.seconds).fill(-1);
    this.calls = new Float64Array(this.seconds);
    this.busy = new Float64Array(this.seconds);
  }

  /** One entry into the coordinator. */
  call(): void {
    this.pending++;
    if (this.timer === undefined) this.arm();
  }

  /** The busiest second of the window. */
  load(): ThreadLoad {
    const now = Math.floor(this.clock.now() / 1000);
    let calls = this.pending;
    let busyMs = 0;
    let ratio = calls / OBJECT_REQUESTS_PER_SECOND;
    for (let i = 0; i < this.seconds; i++) {
      if (this.stamps[i]! <= now - this.seconds) continue;
      const c = this.calls[i]! + (this.stamps[i] === now ? this.pending : 0);
      const b = Math.min(1000, this.busy[i]!);
      calls = Math.max(calls, c);
      busyMs = Math.max(busyMs, b);
      ratio = Math.max(ratio, b / 1000, c / OBJECT_REQUESTS_PER_SECOND);
    }
    return { callsPerSecond: Math.round(calls), busyMsPerSecond: busyMs, busyRatio: round(ratio) };
  }

  private arm(): void {
    this.armedAt = this.clock.now();
    this.dueAt = this.armedAt + PROBE_INTERVAL_MS;
    this.timer = this.clock.setTimer(this.fire, PROBE_INTERVAL_MS);
  }

  private probe(): void {
    const now = this.clock.now();
    this.timer = undefined;
    const second = Math.floor(now / 1000);
    const slot = second % this.seconds;
    if (this.stamps[slot] !== second) {
      this.stamps[slot] = second;
      this.calls[slot] = 0;
      this.busy[slot] = 0;
    }
    // A probe late by more than a second saw calls of several seconds: their rate, not their count, goes to this one.
    const span = now - this.armedAt;
    this.calls[slot]! += span > 1000 ? (this.pending * 1000) / span : this.pending;
    this.busy[slot]! += Math.max(0, now - this.dueAt - TIMER_SLACK_MS);
    const active = this.pending > 0;
    this.pending = 0;
    // Idle since the last probe: stop until the next call.
    if (active) this.arm();
  }
}

/**
 * The sizing verdict with the thread in view: when the busiest second of the
 * window used more than `BUSY_LIMIT` of the coordinator's thread, the verdict
 * is `coordinator-bound` and `suggestedShards` = ceil(shards × busy ratio /
 * `BUSY_TARGET`), which brings each coordinator back to about half its thread
 * (the pool's own suggestion for `maxConnections` stays). Otherwise the pool's
 * verdict, with `suggestedShards` = the current `shards`.
 */
export function threadSizing(pool: Sizing, load: ThreadLoad, shards: number): Sizing {
  if (load.busyRatio <= BUSY_LIMIT) return { ...pool, suggestedShards: shards };
  const suggestedShards = Math.max(shards + 1, Math.ceil((shards * load.busyRatio) / BUSY_TARGET));
  return {
    verdict: "coordinator-bound",
    suggestedMaxConnections: pool.suggestedMaxConnections,
    suggestedShards,
    reason: `coordinator thread at ${Math.round(load.busyRatio * 100)}% in its busiest second (${load.busyMsPerSecond} ms busy, ${load.callsPerSecond} calls against the ~${OBJECT_REQUESTS_PER_SECOND}/s one object serves) > ${BUSY_LIMIT * 100}%: shards ${shards} -> ${suggestedShards}; the pool: ${pool.verdict}, ${pool.reason}`,
  };
}

function round(ratio: number): number {
  return Math.round(ratio * 1000) / 1000;
}
