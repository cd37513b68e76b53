import { describe, expect, it } from "vitest";
import { logLine, type PoolEvent } from "../../worker/pool/events.ts";
import { Metrics } from "../../worker/pool/metrics.ts";
import { resolveOptions } from "../../worker/pool/options.ts";
import { Pool } from "../../worker/pool/pool.ts";
import { FakeDriver, ManualClock, rejection, track, type FakeHandle } from "./helpers.ts";

/** A pool whose log hook collects its events. */
function logged(input: Record<string, unknown>, log?: (event: PoolEvent) => void) {
  const clock = new ManualClock();
  const driver = new FakeDriver(clock);
  const events: PoolEvent[] = [];
  const pool = new Pool<FakeHandle>({
    tenant: "acme", options: resolveOptions("acme", input), driver, clock, random: () => 0,
    log: log ?? ((event) => events.push(event)),
  });
  return { pool, clock, driver, events, of: (name: string) => events.filter((e) => e.event === name) };
}

describe("pool events (the log hook)", () => {
  it("a failed connect: connect-failed with host:port, the driver's cause, the attempt and the backoff", async () => {
    const h = logged({ maxConnections: 2 });
    h.driver.openPlan.push({ kind: "fail", message: "connection refused" });
    await rejection(h.pool.acquire(), "CONNECT_FAILED");
    expect(h.of("connect-failed")).toEqual([
      { event: "connect-failed", tenant: "acme", target: "db.example:5432", cause: "connection refused", attempt: 1, retryInMs: 50 },
    ]);
  });

  it("every close carries its reason, the connection's age and uses; opens are logged too", async () => {
    const h = logged({ maxConnections: 1, maxLifetimeMs: 10_000, validateAfterIdleMs: 60_000 });
    const lease = await h.pool.acquire();
    h.pool.release(lease, { reset: false });
    await h.clock.advance(10_001);
    h.pool.sweep();
    await h.clock.advance(0);
    expect(h.of("connection-opened")).toEqual([{ event: "connection-opened", tenant: "acme", connection: 1, total: 1 }]);
    expect(h.of("connection-closed")).toEqual([
      { event: "connection-closed", tenant: "acme", connection: 1, reason: "max-lifetime", ageMs: 10_001, uses: 1, total: 1 },
    ]);
  });

  it("an acquire timeout carries the pool's counters; a full queue its bound", async () => {
    const h = logged({ maxConnections: 1, maxWaiters: 1, acquireTimeoutMs: 500 });
    await h.pool.acquire();
    const waiting = track(h.pool.acquire());
    await rejection(h.pool.acquire(), "WAIT_QUEUE_FULL");
    await h.clock.advance(500);
    expect(waiting.status).toBe("rejected");
    expect(h.of("wait-queue-full")).toEqual([{ event: "wait-queue-full", tenant: "acme", waiting: 1, maxWaiters: 1 }]);
    expect(h.of("acquire-timeout")).toEqual([
      { event: "acquire-timeout", tenant: "acme", timeoutMs: 500, total: 1, leased: 1, idle: 0, opening: 0, waiting: 1 },
    ]);
  });

  it("a reclaimed lease: lease-expired, then its connection closes with reason lease-expired", async () => {
    const h = logged({ maxConnections: 1, leaseTimeoutMs: 1_000 });
    const lease = await h.pool.acquire();
    await h.clock.advance(1_000);
    h.pool.sweep();
    await h.clock.advance(0);
    expect(h.of("lease-expired")).toEqual([{ event: "lease-expired", tenant: "acme", lease: lease.id, connection: 1, leaseTimeoutMs: 1_000 }]);
    expect(h.of("connection-closed")).toMatchObject([{ reason: "lease-expired" }]);
  });

  it("a log hook that throws never breaks the pool", async () => {
    const h = logged({ maxConnections: 1 }, () => {
      throw new Error("log sink down");
    });
    const lease = await h.pool.acquire();
    h.pool.release(lease);
    await h.clock.advance(0);
    expect(h.pool.stats()).toMatchObject({ acquired: 1, released: 1, idle: 1 });
  });

  it("a log line adds the ISO time and a level: warn for failures, timeouts, a full queue, a reclaimed lease and a broken connection", () => {
    const at = Date.UTC(2026, 0, 2, 3, 4, 5);
    expect(logLine({ event: "wait-queue-full", tenant: "t", waiting: 3, maxWaiters: 3 }, at)).toEqual({
      event: "wait-queue-full", tenant: "t", waiting: 3, maxWaiters: 3, level: "warn", time: "2026-01-02T03:04:05.000Z",
    });
    const closed = (reason: "broken" | "idle-timeout") => logLine({ event: "connection-closed", tenant: "t", connection: 1, reason, ageMs: 1, uses: 1, total: 0 }, at).level;
    expect([closed("broken"), closed("idle-timeout")]).toEqual(["warn", "info"]);
  });
});

describe("acquire-wait histogram", () => {
  it("counts every wait in cumulative buckets (upper bound inclusive) with their sum", () => {
    const m = new Metrics();
    for (const ms of [0, 1, 3, 10, 11, 7_000, 60_000]) m.recordWait(ms);
    const { bucketsMs, counts, sumMs } = m.waitHistogram();
    expect(bucketsMs).toEqual([1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]);
    expect(counts).toEqual([2, 3, 4, 5, 5, 5, 5, 5, 5, 5, 5, 6, 7]);
    expect(sumMs).toBe(67_025);
  });
});
