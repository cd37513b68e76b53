import { describe, expect, it } from "vitest";
import { acquireNow, makePool, track } from "./helpers.ts";

describe("connecting", () => {
  it("an attempt that exceeds connectTimeoutMs fails with CONNECT_FAILED naming host:port and the cause", async () => {
    const h = makePool({ connectTimeoutMs: 1000 }, { before: (d) => (d.defaultOpen = { kind: "hang" }) });
    const borrower = track(h.pool.acquire({ timeoutMs: 20_000 }));
    await h.clock.advance(999);
    expect(borrower.status).toBe("pending");
    await h.clock.advance(1);
    expect(borrower.code).toBe("CONNECT_FAILED");
    expect((borrower.error as Error).message).toBe(
      'CONNECT_FAILED: tenant "acme" could not connect to db.example:5432: timed out after 1000ms (connectTimeoutMs) (attempt 1 in a row, next in 50ms)',
    );
    expect(h.pool.stats()).toMatchObject({ total: 0, opening: 0, waiting: 0, connectFailures: 1 });
  });

  it("a refused connection fails the waiters with CONNECT_FAILED carrying the driver's cause", async () => {
    const h = makePool({}, { before: (d) => (d.defaultOpen = { kind: "fail", message: "ECONNREFUSED 10.0.0.1:5432" }) });
    const a = track(h.pool.acquire());
    const b = track(h.pool.acquire());
    await h.settle();
    expect(a.code).toBe("CONNECT_FAILED");
    expect(b.code).toBe("CONNECT_FAILED");
    expect((a.error as Error).message).toContain("could not connect to db.example:5432: ECONNREFUSED 10.0.0.1:5432");
    expect((a.error as Error & { retryable: boolean }).retryable).toBe(true);
  });

  it("a timed-out attempt is aborted: the driver sees it end at connectTimeoutMs", async () => {
    const h = makePool({ connectTimeoutMs: 1000 }, { before: (d) => (d.defaultOpen = { kind: "hang" }) });
    track(h.pool.acquire({ timeoutMs: 20_000 }));
    await h.clock.advance(999);
    expect(h.driver.inFlight).toBe(1);
    await h.clock.advance(1);
    expect(h.driver.aborted).toBe(1);
    expect(h.driver.inFlight).toBe(0);
  });

  it("a connection that opens after its attempt timed out (driver ignoring the abort) is closed, not kept", async () => {
    const h = makePool({ connectTimeoutMs: 1000 }, { before: (d) => {
      d.ignoreAbort = true;
      d.openPlan.push({ kind: "ok", delayMs: 2000 });
    } });
    const borrower = track(h.pool.acquire({ timeoutMs: 20_000 }));
    await h.clock.advance(1000);
    expect(borrower.code).toBe("CONNECT_FAILED");
    await h.clock.advance(1000);
    expect(h.driver.opened).toBe(1);
    expect(h.driver.closedIds).toEqual([1]);
    expect(h.driver.live.size).toBe(0);
    expect(h.pool.stats()).toMatchObject({ total: 0, created: 0 });
  });

  it("never more than maxConcurrentConnects attempts in flight", async () => {
    const h = makePool(
      { maxConnections: 10, maxConcurrentConnects: 2 },
      { before: (d) => (d.defaultOpen = { kind: "ok", delayMs: 100 }) },
    );
    const t0 = h.clock.now();
    const borrowers = Array.from({ length: 10 }, () => track(h.pool.acquire({ timeoutMs: 60_000 })));
    await h.settle();
    expect(h.pool.stats().opening).toBe(2);
    await h.clock.advance(1000);
    expect(borrowers.every((b) => b.status === "resolved")).toBe(true);
    expect(h.driver.maxInFlight).toBe(2);
    expect(h.driver.opens).toBe(10);
    expect(h.driver.openStartedAt.map((t) => t - t0)).toEqual([0, 0, 100, 100, 200, 200, 300, 300, 400, 400]);
  });

  it("failures back off exponentially, each delay jittered within [backoff/2, backoff]", async () => {
    for (const [r, expected] of [
      [0, [50, 100, 200, 400, 800, 1600, 2500, 2500]],
      [0.5, [75, 150, 300, 600, 1200, 2400, 3750, 3750]],
      [0.99, [100, 199, 398, 796, 1592, 3184, 4975, 4975]],
    ] as const) {
      const h = makePool(
        { maxConnections: 2, initialConnections: 1 },
        { random: () => r, before: (d) => (d.defaultOpen = { kind: "fail" }) },
      );
      await h.clock.advance(30_000);
      const gaps = h.driver.openStartedAt.slice(1, 9).map((t, i) => t - h.driver.openStartedAt[i]!);
      expect(gaps).toEqual(expected);
    }
  });

  it("the failure message gives the attempt count and the delay to the next attempt", async () => {
    const h = makePool({}, { random: () => 0, before: (d) => (d.defaultOpen = { kind: "fail", message: "boom" }) });
    const first = track(h.pool.acquire());
    await h.settle();
    expect((first.error as Error).message).toContain("boom (attempt 1 in a row, next in 50ms)");
    await h.clock.advance(50);
    const second = track(h.pool.acquire());
    await h.settle();
    expect((second.error as Error).message).toContain("boom (attempt 2 in a row, next in 100ms)");
  });

  it("during a backoff a borrower waits for the next attempt instead of opening at once", async () => {
    const h = makePool({}, { random: () => 0, before: (d) => d.openPlan.push({ kind: "fail" }) });
    track(h.pool.acquire());
    await h.settle();
    const t1 = h.clock.now();
    const borrower = track(h.pool.acquire());
    await h.clock.advance(49);
    expect(h.driver.opens).toBe(1);
    expect(borrower.status).toBe("pending");
    await h.clock.advance(1);
    expect(h.driver.opens).toBe(2);
    expect(borrower.status).toBe("resolved");
    expect(borrower.value!.acquiredAt - t1).toBe(50);
  });

  it("after a success the backoff starts over", async () => {
    const h = makePool({}, { random: () => 0 });
    h.driver.openPlan.push({ kind: "fail" }, { kind: "fail" }, { kind: "fail" });
    const failed = track(h.pool.acquire({ timeoutMs: 60_000 }));
    await h.settle();
    expect(failed.code).toBe("CONNECT_FAILED");
    track(h.pool.acquire({ timeoutMs: 60_000 }));
    await h.clock.advance(50);
    track(h.pool.acquire({ timeoutMs: 60_000 }));
    await h.clock.advance(100);
    expect(h.driver.opens).toBe(3);
    const ok = track(h.pool.acquire({ timeoutMs: 60_000 }));
    await h.clock.advance(200);
    expect(ok.status).toBe("resolved");
    h.driver.openPlan.push({ kind: "fail", message: "again" });
    const afterRecovery = track(h.pool.acquire({ timeoutMs: 60_000 }));
    await h.settle();
    const failedAt = h.clock.now();
    // One connection is alive, so the borrower keeps waiting; the next attempt comes after 50ms (attempt 1), not 400ms.
    expect(afterRecovery.status).toBe("pending");
    expect(h.pool.stats().connectFailures).toBe(4);
    await h.clock.advance(49);
    expect(h.driver.opens).toBe(5);
    await h.clock.advance(1);
    expect(h.driver.opens).toBe(6);
    expect(afterRecovery.status).toBe("resolved");
    expect(afterRecovery.value!.acquiredAt - failedAt).toBe(50);
  });

  it("recovery: once the server answers, waiting borrowers are served", async () => {
    const h = makePool({ maxConnections: 2 }, { random: () => 0 });
    h.driver.openPlan.push({ kind: "fail" });
    const first = track(h.pool.acquire({ timeoutMs: 60_000 }));
    await h.settle();
    expect(first.code).toBe("CONNECT_FAILED");
    const a = track(h.pool.acquire({ timeoutMs: 60_000 }));
    const b = track(h.pool.acquire({ timeoutMs: 60_000 }));
    await h.clock.advance(50);
    expect(a.status).toBe("resolved");
    expect(b.status).toBe("resolved");
    expect(h.pool.stats()).toMatchObject({ total: 2, leased: 2, created: 2, connectFailures: 1 });
  });

  it("a failing open with other connections alive leaves waiters queued for them", async () => {
    const h = makePool({ maxConnections: 2 });
    const held = await acquireNow(h);
    h.driver.openPlan.push({ kind: "fail" });
    const waiter = track(h.pool.acquire({ timeoutMs: 60_000 }));
    await h.settle();
    expect(waiter.status).toBe("pending");
    h.pool.release(held, { reset: false });
    await h.settle();
    expect(waiter.value!.connection).toBe(held.connection);
  });

  it("opens for initialConnections are retried after failures until they succeed", async () => {
    const h = makePool({ initialConnections: 2, maxConcurrentConnects: 2 }, { random: () => 0 });
    h.driver.openPlan.push({ kind: "fail" }, { kind: "fail" });
    await h.clock.advance(1000);
    expect(h.driver.opens).toBe(4);
    expect(h.pool.stats()).toMatchObject({ total: 2, idle: 2, created: 2, connectFailures: 2 });
  });
});
