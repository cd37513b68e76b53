import { describe, expect, it } from "vitest";
import { Metrics, sizing } from "../../worker/pool/metrics.ts";
import { acquireNow, hold, makePool, rejection, track } from "./helpers.ts";

describe("stats", () => {
  it("a fresh pool reports zeros and the idle verdict", () => {
    const h = makePool({ maxConnections: 5 });
    expect(h.pool.stats()).toEqual({
      tenant: "acme",
      maxConnections: 5,
      total: 0,
      idle: 0,
      leased: 0,
      opening: 0,
      closing: 0,
      waiting: 0,
      maxWaitMs: 0,
      acquired: 0,
      released: 0,
      timeouts: 0,
      waitQueueFull: 0,
      created: 0,
      connectFailures: 0,
      leasesExpired: 0,
      leasesLost: 0,
      pipelined: 0,
      closed: { "idle-timeout": 0, "max-idle": 0, "max-lifetime": 0, "max-uses": 0, "lease-expired": 0, broken: 0, shutdown: 0 },
      acquireWaitMs: { p50: 0, p99: 0 },
      acquireWaitHistogram: { bucketsMs: [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000], counts: new Array(13).fill(0), sumMs: 0 },
      peakDemand: 0,
      sizing: { verdict: "idle", suggestedMaxConnections: 5, suggestedShards: 1, reason: "no demand measured yet" },
    });
  });

  it("gauges: total, idle, leased, opening, waiting, maxWaitMs (age of the oldest waiter)", async () => {
    const h = makePool({ maxConnections: 3, maxConcurrentConnects: 1 });
    const [, b] = await hold(h, 2);
    h.pool.release(b!, { reset: false });
    await h.settle();
    expect(h.pool.stats()).toMatchObject({ total: 2, idle: 1, leased: 1, opening: 0, waiting: 0, maxWaitMs: 0 });
    h.driver.defaultOpen = { kind: "hang" };
    await acquireNow(h);
    track(h.pool.acquire({ timeoutMs: 60_000 }));
    await h.clock.advance(300);
    track(h.pool.acquire({ timeoutMs: 60_000 }));
    await h.clock.advance(200);
    expect(h.pool.stats()).toMatchObject({ total: 3, idle: 0, leased: 2, opening: 1, waiting: 2, maxWaitMs: 500 });
  });

  it("counters: acquired, released, timeouts, waitQueueFull, created, connectFailures, closed by reason", async () => {
    const h = makePool({ maxConnections: 2, maxWaiters: 1, maxUses: 2, idleTimeoutMs: 1000, maxLifetimeMs: 0 });
    const [a, b] = await hold(h, 2);
    const timedOut = track(h.pool.acquire({ timeoutMs: 10 }));
    await rejection(h.pool.acquire(), "WAIT_QUEUE_FULL");
    await h.clock.advance(10);
    expect(timedOut.code).toBe("ACQUIRE_TIMEOUT");
    h.pool.release(a!);
    h.pool.release(b!);
    await h.settle();
    // The most recently returned connection (b's) serves c and reaches maxUses.
    const c = await acquireNow(h);
    expect(c.connection).toBe(b!.connection);
    h.pool.release(c);
    await h.settle();
    await h.clock.advance(2000);
    h.pool.sweep();
    await h.settle();
    expect(h.pool.stats().total).toBe(0);
    await hold(h, 1);
    expect(h.pool.stats()).toMatchObject({
      acquired: 4,
      released: 3,
      timeouts: 1,
      waitQueueFull: 1,
      created: 3,
      connectFailures: 0,
      leasesExpired: 0,
      leasesLost: 0,
      pipelined: 0,
    });
    expect(h.pool.stats().closed).toMatchObject({ "max-uses": 1, "idle-timeout": 1 });
  });

  it("connectFailures and closed reasons count each event once", async () => {
    const h = makePool({ maxConnections: 3, leaseTimeoutMs: 1000, idleTimeoutMs: 5000, maxLifetimeMs: 0 }, { random: () => 0 });
    h.driver.openPlan.push({ kind: "fail" }, { kind: "fail" });
    const first = track(h.pool.acquire());
    await h.clock.advance(1000);
    const second = track(h.pool.acquire());
    await h.clock.advance(1000);
    expect([first.code, second.code]).toEqual(["CONNECT_FAILED", "CONNECT_FAILED"]);
    const [x, y, z] = await hold(h, 3);
    h.pool.markBroken(x!.connection.handle!);
    h.pool.release(y!, { reset: false });
    await h.clock.advance(1000);
    h.pool.sweep();
    await h.clock.advance(5000);
    h.pool.sweep();
    await h.settle();
    await h.pool.drain();
    expect(h.pool.stats()).toMatchObject({ connectFailures: 2, created: 3, leasesLost: 1, leasesExpired: 1, released: 1 });
    expect(h.pool.stats().closed).toEqual({
      "idle-timeout": 1, "max-idle": 0, "max-lifetime": 0, "max-uses": 0, "lease-expired": 1, broken: 1, shutdown: 0,
    });
    expect(z!.state).toBe("expired");
    expect(h.driver.closes).toBe(3);
  });

  it("acquire-wait p50 and p99 are nearest-rank percentiles of the recent waits", async () => {
    const h = makePool({ maxConnections: 1 });
    let current = await acquireNow(h);
    for (let k = 1; k <= 9; k++) {
      const next = track(h.pool.acquire({ timeoutMs: 60_000 }));
      await h.clock.advance(k * 10);
      h.pool.release(current, { reset: false });
      await h.settle();
      current = next.value!;
      expect(current.waitedMs).toBe(k * 10);
    }
    // Waits 0, 10, ..., 90.
    expect(h.pool.stats().acquireWaitMs).toEqual({ p50: 40, p99: 90 });
  });

  it("percentiles read only the last 1024 waits", () => {
    const m = new Metrics();
    for (let i = 0; i < 1024; i++) m.recordWait(1000);
    for (let i = 0; i < 1024; i++) m.recordWait(i < 1014 ? 1 : 5);
    expect(m.waitPercentile(50)).toBe(1);
    expect(m.waitPercentile(99)).toBe(1);
    expect(m.waitPercentile(100)).toBe(5);
    expect(m.waitPercentile(0)).toBe(1);
  });

  it("peakDemand is the highest leased + waiting seen", async () => {
    const h = makePool({ maxConnections: 2 });
    const leases = await hold(h, 2);
    expect(h.pool.stats().peakDemand).toBe(2);
    const waiters = [0, 1, 2].map(() => track(h.pool.acquire()));
    await h.settle();
    for (const l of leases) h.pool.release(l, { reset: false });
    await h.settle();
    expect(waiters.filter((w) => w.status === "resolved")).toHaveLength(2);
    expect(h.pool.stats().peakDemand).toBe(5);
  });
});

describe("sizing verdict", () => {
  it("oversized when peak demand stayed at half of max or below; suggests the peak", async () => {
    const h = makePool({ maxConnections: 10 });
    for (const l of await hold(h, 5)) h.pool.release(l);
    expect(h.pool.stats().sizing).toEqual({
      verdict: "oversized",
      suggestedMaxConnections: 5,
      suggestedShards: 1,
      reason: "peak demand 5 stayed at or below half of maxConnections 10",
    });
  });

  it("balanced when the peak is above half of max and nobody waited", async () => {
    const h = makePool({ maxConnections: 10 });
    for (const l of await hold(h, 6)) h.pool.release(l);
    expect(h.pool.stats().sizing).toEqual({ verdict: "balanced", suggestedMaxConnections: 10, suggestedShards: 1, reason: "peak demand 6 fits maxConnections 10" });
  });

  it("undersized when borrowers waited or timed out; suggests the peak demand", async () => {
    const h = makePool({ maxConnections: 4 });
    await hold(h, 4);
    const waiters = [0, 1, 2].map(() => track(h.pool.acquire({ timeoutMs: 100 })));
    await h.clock.advance(100);
    expect(waiters.every((w) => w.code === "ACQUIRE_TIMEOUT")).toBe(true);
    expect(h.pool.stats().sizing).toEqual({
      verdict: "undersized",
      suggestedMaxConnections: 7,
      suggestedShards: 1,
      reason: "peak demand 7 > maxConnections 4: 3 acquires waited, 0 were pipelined on a busy connection, 3 timed out, 0 found the queue full",
    });
  });

  it("undersized suggests at least max + 1", () => {
    const m = new Metrics();
    m.acquired = 10;
    m.peakDemand = 3;
    m.waited = 1;
    expect(sizing(m, 4, 0).suggestedMaxConnections).toBe(5);
  });

  it("oversized never suggests below minConnections", () => {
    const m = new Metrics();
    m.acquired = 10;
    m.peakDemand = 1;
    expect(sizing(m, 10, 3)).toMatchObject({ verdict: "oversized", suggestedMaxConnections: 3 });
  });

  it("a pool of 1 is never oversized", () => {
    const m = new Metrics();
    m.acquired = 1;
    m.peakDemand = 0;
    expect(sizing(m, 1, 0).verdict).toBe("balanced");
  });

  it("an acquire served after validating an idle connection is not a wait for capacity", async () => {
    const h = makePool({ maxConnections: 2, validateAfterIdleMs: 1000 });
    for (const l of await hold(h, 2)) h.pool.release(l, { reset: false });
    await h.clock.advance(5000);
    await hold(h, 2);
    const s = h.pool.stats();
    expect(h.driver.validations).toBe(2);
    expect(s.sizing.verdict).toBe("balanced");
  });

  it("with maxWaiters 0, a full pool whose idle connection needs validation still serves it", async () => {
    const h = makePool({ maxConnections: 1, maxWaiters: 0, validateAfterIdleMs: 1000 });
    h.pool.release(await acquireNow(h), { reset: false });
    await h.clock.advance(5000);
    const lease = await acquireNow(h);
    expect(lease.connection.handle!.id).toBe(1);
  });
});
