import { describe, expect, it } from "vitest";
import type { FrontStats } from "../../worker/front.ts";
import type { Clock } from "../../worker/pool/clock.ts";
import { Metrics, sizing, type Sizing } from "../../worker/pool/metrics.ts";
import { sumShards, type ShardStats } from "../../worker/shards.ts";
import { PROBE_INTERVAL_MS, threadSizing, ThreadMeter, type ThreadLoad } from "../../worker/thread-meter.ts";

/**
 * A manual clock for one thread: `idle(ms)` lets time pass with the thread
 * free (timers fire when due), `busy(ms)` keeps the thread occupied for that
 * long (timers due meanwhile fire late, at its end).
 */
class ThreadClock implements Clock {
  t = 1_000_000;
  private nextId = 1;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();

  now(): number {
    return this.t;
  }

  setTimer(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  }

  clearTimer(timer: unknown): void {
    this.timers.delete(timer as number);
  }

  get pending(): number {
    return this.timers.size;
  }

  idle(ms: number): void {
    const target = this.t + ms;
    for (let next = this.due(target); next; next = this.due(target)) {
      this.t = Math.max(this.t, next.at);
      next.fn();
    }
    this.t = target;
  }

  busy(ms: number): void {
    this.t += ms;
    for (let next = this.due(this.t); next; next = this.due(this.t)) next.fn();
  }

  private due(by: number): { at: number; fn: () => void } | undefined {
    let found: [number, { at: number; fn: () => void }] | undefined;
    for (const entry of this.timers) if (entry[1].at <= by && (!found || entry[1].at < found[1].at)) found = entry;
    if (!found) return undefined;
    this.timers.delete(found[0]);
    return found[1];
  }
}

const balanced: Sizing = { verdict: "balanced", suggestedMaxConnections: 10, suggestedShards: 1, reason: "peak demand 6 fits maxConnections 10" };

describe("thread meter", () => {
  it("measures nothing and arms nothing without calls", () => {
    const clock = new ThreadClock();
    const meter = new ThreadMeter(clock);
    clock.idle(5_000);
    expect(meter.load()).toEqual({ callsPerSecond: 0, busyMsPerSecond: 0, busyRatio: 0 });
    expect(clock.pending).toBe(0);
  });

  it("a call arms one probe, however many calls follow; the probe stops once a probe interval passed without calls", () => {
    const clock = new ThreadClock();
    const meter = new ThreadMeter(clock);
    for (let i = 0; i < 50; i++) meter.call();
    expect(clock.pending).toBe(1);
    clock.idle(PROBE_INTERVAL_MS);
    expect(clock.pending).toBe(1);
    clock.idle(PROBE_INTERVAL_MS);
    expect(clock.pending).toBe(0);
    expect(meter.load()).toMatchObject({ callsPerSecond: 50, busyMsPerSecond: 0 });
  });

  it("a free thread: probes fire on time, busy stays 0, the ratio is the calls over the ~1000/s an object serves", () => {
    const clock = new ThreadClock();
    const meter = new ThreadMeter(clock);
    // 400 calls a second, one every 2.5 ms, for 3 seconds.
    for (let i = 0; i < 1200; i++) {
      meter.call();
      clock.idle(2.5);
    }
    const load = meter.load();
    expect(load.busyMsPerSecond).toBe(0);
    expect(load.callsPerSecond).toBeGreaterThanOrEqual(400);
    expect(load.callsPerSecond).toBeLessThanOrEqual(404);
    expect(load.busyRatio).toBeCloseTo(load.callsPerSecond / 1000, 3);
  });

  it("a thread occupied 30 ms of every 40: each probe fires 20 ms late, 19 counted (1 ms slack), 475 ms a second (busy before the probe was due is not seen: a lower bound)", () => {
    const clock = new ThreadClock();
    const meter = new ThreadMeter(clock);
    clock.idle(1_000 - (clock.t % 1_000));
    for (let i = 0; i < 100; i++) {
      meter.call();
      clock.busy(30);
      clock.idle(PROBE_INTERVAL_MS);
    }
    expect(meter.load()).toEqual({ callsPerSecond: 25, busyMsPerSecond: 475, busyRatio: 0.475 });
  });

  it("a probe 1 ms late (the clock's step: an idle workerd's timers read so) counts nothing", () => {
    const clock = new ThreadClock();
    const meter = new ThreadMeter(clock);
    for (let i = 0; i < 200; i++) {
      meter.call();
      clock.idle(PROBE_INTERVAL_MS - 1);
      clock.busy(2);
    }
    expect(meter.load().busyMsPerSecond).toBe(0);
  });

  it("a saturated thread (each probe waits behind 90 ms of queued work): ~8/9 of each second busy, coordinator-bound", () => {
    const clock = new ThreadClock();
    const meter = new ThreadMeter(clock);
    for (let i = 0; i < 50; i++) {
      meter.call();
      clock.busy(90);
    }
    const load = meter.load();
    expect(load.busyMsPerSecond).toBeGreaterThanOrEqual(800);
    expect(load.busyMsPerSecond).toBeLessThanOrEqual(900);
    expect(threadSizing(balanced, load, 1)).toMatchObject({ verdict: "coordinator-bound", suggestedShards: 2 });
  });

  it("keeps the busiest second of the window, and forgets it after the window", () => {
    const clock = new ThreadClock();
    const meter = new ThreadMeter(clock, 60_000);
    for (let i = 0; i < 100; i++) {
      meter.call();
      clock.busy(90);
    }
    const peak = meter.load();
    expect(peak.busyMsPerSecond).toBeGreaterThanOrEqual(800);
    // Quiet traffic afterwards does not lower the peak within the window...
    for (let i = 0; i < 300; i++) {
      meter.call();
      clock.idle(100);
    }
    expect(meter.load().busyMsPerSecond).toBe(peak.busyMsPerSecond);
    // ...but after the window only the quiet seconds remain.
    clock.idle(60_000);
    meter.call();
    clock.idle(PROBE_INTERVAL_MS);
    expect(meter.load()).toEqual({ callsPerSecond: 1, busyMsPerSecond: 0, busyRatio: 0.001 });
  });

  it("a probe late by seconds counts the calls it saw as a rate (3000 calls over 3 s: 1000 a second, not 3000 in one)", () => {
    const clock = new ThreadClock();
    const meter = new ThreadMeter(clock);
    for (let i = 0; i < 3000; i++) meter.call();
    clock.busy(3_000);
    expect(meter.load().callsPerSecond).toBe(1000);
  });

  it("busy time in a second is capped at 1000 ms (one probe late by longer than a second)", () => {
    const clock = new ThreadClock();
    const meter = new ThreadMeter(clock);
    meter.call();
    clock.busy(2_500);
    expect(meter.load()).toMatchObject({ busyMsPerSecond: 1000, busyRatio: 1 });
  });
});

describe("sizing with the coordinator's thread", () => {
  const load = (busyRatio: number, callsPerSecond = 100): ThreadLoad => ({ callsPerSecond, busyMsPerSecond: Math.round(busyRatio * 1000), busyRatio });

  it("the pool's own rule suggests the shards it has", () => {
    const m = new Metrics();
    m.acquired = 10;
    m.peakDemand = 6;
    expect(sizing(m, 10, 0, 3)).toMatchObject({ verdict: "balanced", suggestedShards: 3 });
    expect(sizing(new Metrics(), 10, 0)).toMatchObject({ verdict: "idle", suggestedShards: 1 });
  });

  it("at or below 70% of the thread the pool's verdict stands and suggestedShards is the current shards", () => {
    expect(threadSizing(balanced, load(0.7), 1)).toEqual({ ...balanced, suggestedShards: 1 });
    expect(threadSizing({ ...balanced, suggestedShards: 3 }, load(0.2), 3)).toMatchObject({ verdict: "balanced", suggestedShards: 3 });
  });

  it("above 70% the verdict is coordinator-bound with shards = ceil(shards x busy / 0.5), the pool's maxConnections suggestion kept", () => {
    const one = threadSizing(balanced, load(0.9), 1);
    expect(one).toMatchObject({ verdict: "coordinator-bound", suggestedShards: 2, suggestedMaxConnections: 10 });
    expect(one.reason).toMatch(/^coordinator thread at 90% in its busiest second \(900 ms busy, 100 calls against the ~1000\/s one object serves\) > 70%: shards 1 -> 2; the pool: balanced/);
    expect(threadSizing(balanced, load(1), 4).suggestedShards).toBe(8);
    expect(threadSizing(balanced, load(0.71), 4).suggestedShards).toBe(6);
  });

  it("calls near the soft limit make it coordinator-bound with no measured busy time (production's clock)", () => {
    const clock = new ThreadClock();
    const meter = new ThreadMeter(clock);
    // 900 calls a second on a thread whose clock never shows it busy.
    for (let i = 0; i < 2700; i++) {
      meter.call();
      if (i % 9 === 8) clock.idle(10);
    }
    const measured = meter.load();
    expect(measured.busyMsPerSecond).toBe(0);
    expect(measured.busyRatio).toBeGreaterThanOrEqual(0.9);
    expect(threadSizing(balanced, measured, 2)).toMatchObject({ verdict: "coordinator-bound", suggestedShards: 4 });
  });
});

describe("a sharded tenant's thread load", () => {
  function shard(shard: number, coordinator: ThreadLoad, sizing: Sizing): ShardStats {
    const base = {
      tenant: "acme", maxConnections: 4, total: 2, idle: 1, leased: 1, opening: 0, closing: 0, waiting: 0, maxWaitMs: 0,
      acquired: 10, released: 9, timeouts: 0, waitQueueFull: 0, created: 2, connectFailures: 0, leasesExpired: 0, leasesLost: 0, pipelined: 0,
      closed: {}, acquireWaitMs: { p50: 0, p99: 1 }, acquireWaitHistogram: { bucketsMs: [1], counts: [10, 10], sumMs: 0 }, peakDemand: 2,
      clients: 1, clientsActive: 1, clientsWaiting: 0, prepared: { hits: 0, parses: 0, reprepares: 0, evictions: 0 },
    };
    return { ...(base as unknown as FrontStats), coordinator, sizing, shard };
  }

  it("calls add up, busy time and ratio are the busiest shard's, and a coordinator-bound shard's verdict wins with its suggestedShards", () => {
    const quiet = { ...balanced, suggestedMaxConnections: 4, suggestedShards: 3 };
    const undersized: Sizing = { verdict: "undersized", suggestedMaxConnections: 5, suggestedShards: 3, reason: "waited" };
    const hot = threadSizing(quiet, { callsPerSecond: 800, busyMsPerSecond: 850, busyRatio: 0.85 }, 3);
    const total = sumShards([
      shard(0, { callsPerSecond: 200, busyMsPerSecond: 100, busyRatio: 0.2 }, quiet),
      shard(1, { callsPerSecond: 800, busyMsPerSecond: 850, busyRatio: 0.85 }, hot),
      shard(2, { callsPerSecond: 300, busyMsPerSecond: 200, busyRatio: 0.3 }, undersized),
    ]);
    expect(total.coordinator).toEqual({ callsPerSecond: 1300, busyMsPerSecond: 850, busyRatio: 0.85 });
    expect(total.sizing).toMatchObject({ verdict: "coordinator-bound", suggestedShards: 6, suggestedMaxConnections: 12 });
    expect(total.sizing.reason).toMatch(/^shard 1: coordinator thread at 85%/);
  });

  it("no shard bound by its thread: the undersized shard's verdict, suggestedShards the current count", () => {
    const quiet = { ...balanced, suggestedMaxConnections: 4, suggestedShards: 2 };
    const undersized: Sizing = { verdict: "undersized", suggestedMaxConnections: 5, suggestedShards: 2, reason: "waited" };
    const total = sumShards([
      shard(0, { callsPerSecond: 10, busyMsPerSecond: 0, busyRatio: 0.01 }, quiet),
      shard(1, { callsPerSecond: 20, busyMsPerSecond: 5, busyRatio: 0.02 }, undersized),
    ]);
    expect(total.sizing).toMatchObject({ verdict: "undersized", suggestedShards: 2, suggestedMaxConnections: 10 });
  });
});
