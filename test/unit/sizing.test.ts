import { describe, expect, it } from "vitest";
import { acquireNow, hold, makePool, runAlarms, track } from "./helpers.ts";


describe("initialConnections", () => {
  it("opens initialConnections when the pool starts", async () => {
    const h = makePool({ maxConnections: 10, initialConnections: 3 });
    await h.settle();
    expect(h.driver.opens).toBe(3);
    expect(h.pool.stats()).toMatchObject({ total: 3, idle: 3 });
  });

  it("above maxConnections only max are opened", async () => {
    const h = makePool({ maxConnections: 3, initialConnections: 5 });
    await h.settle();
    await h.clock.advance(60_000);
    expect(h.driver.opens).toBe(3);
    expect(h.pool.stats().total).toBe(3);
  });

  it("initial opens respect maxConcurrentConnects", async () => {
    const h = makePool(
      { maxConnections: 10, initialConnections: 6, maxConcurrentConnects: 2 },
      { before: (d) => (d.defaultOpen = { kind: "ok", delayMs: 100 }) },
    );
    await h.settle();
    expect(h.driver.opens).toBe(2);
    await h.clock.advance(100);
    expect(h.driver.opens).toBe(4);
    await h.clock.advance(200);
    expect(h.driver.opens).toBe(6);
    expect(h.driver.maxInFlight).toBe(2);
    expect(h.pool.stats().idle).toBe(6);
  });

  it("below minConnections only initialConnections are opened", async () => {
    const h = makePool({ maxConnections: 10, minConnections: 5, initialConnections: 2 });
    await h.settle();
    await h.clock.advance(30_000);
    h.pool.sweep();
    await h.settle();
    expect(h.driver.opens).toBe(2);
    expect(h.pool.stats().total).toBe(2);
  });
});

describe("minConnections", () => {
  it("the pool grows to min with demand, one connection per borrower", async () => {
    const h = makePool({ maxConnections: 10, minConnections: 5, initialConnections: 2 });
    await h.settle();
    const leases = await hold(h, 3);
    expect(h.driver.opens).toBe(3);
    expect(h.pool.stats().total).toBe(3);
    leases.push(...(await hold(h, 2)));
    expect(h.driver.opens).toBe(5);
    expect(h.pool.stats().total).toBe(5);
  });

  it("it is not filled eagerly: if only 2 were ever needed, the pool stays at 2", async () => {
    const h = makePool({ maxConnections: 10, minConnections: 10, idleTimeoutMs: 0, maxLifetimeMs: 0 });
    const leases = await hold(h, 2);
    for (const lease of leases) h.pool.release(lease);
    await runAlarms(h, h.clock.now() + 600_000);
    expect(h.driver.opens).toBe(2);
    expect(h.pool.stats().total).toBe(2);
  });

  it("before min is reached, idle connections are reaped as usual", async () => {
    const h = makePool({ maxConnections: 10, minConnections: 5, idleTimeoutMs: 1000 });
    const leases = await hold(h, 3);
    for (const lease of leases) h.pool.release(lease);
    await runAlarms(h, h.clock.now() + 1000);
    expect(h.pool.stats().total).toBe(0);
    expect(h.pool.stats().closed["idle-timeout"]).toBe(3);
  });

  it("once reached, the janitor never shrinks the pool below min", async () => {
    const h = makePool({ maxConnections: 10, minConnections: 5, idleTimeoutMs: 1000, maxLifetimeMs: 0 });
    const leases = await hold(h, 7);
    for (const lease of leases) h.pool.release(lease);
    await runAlarms(h, h.clock.now() + 100_000);
    expect(h.pool.stats()).toMatchObject({ total: 5, idle: 5 });
    expect(h.pool.stats().closed["idle-timeout"]).toBe(2);
    expect(h.driver.closes).toBe(2);
  });

  it("a reached minimum is refilled after a lifetime retirement", async () => {
    const h = makePool({ maxConnections: 4, minConnections: 2, idleTimeoutMs: 0, maxLifetimeMs: 100_000 });
    const leases = await hold(h, 2);
    for (const lease of leases) h.pool.release(lease, { reset: false });
    await runAlarms(h, h.clock.now() + 100_000);
    expect(h.pool.stats().closed["max-lifetime"]).toBe(1);
    expect(h.driver.opens).toBe(3);
    expect(h.pool.stats().total).toBe(2);
  });

  it("idle reaping keeps min live connections even when another connection is closing", async () => {
    // Three idle at min 2: one rotates out for lifetime, so the other two stay (the third is replaced anyway).
    const h = makePool({ maxConnections: 4, minConnections: 2, idleTimeoutMs: 60_000, maxLifetimeMs: 100_000 });
    const leases = await hold(h, 3);
    for (const lease of leases) h.pool.release(lease, { reset: false });
    await h.clock.advance(100_000);
    h.pool.sweep();
    await h.settle();
    expect(h.pool.stats().closed).toMatchObject({ "max-lifetime": 1, "idle-timeout": 0 });
    expect(h.driver.opens).toBe(3);
    expect(h.pool.stats().total).toBe(2);
  });
});

describe("minIdle / maxIdle", () => {
  it("minIdle connections are opened ahead of demand", async () => {
    const h = makePool({ maxConnections: 10, minIdle: 2 });
    await h.settle();
    expect(h.driver.opens).toBe(2);
    expect(h.pool.stats()).toMatchObject({ total: 2, idle: 2 });
  });

  it("after leases take idle connections, the janitor opens more to keep minIdle", async () => {
    const h = makePool({ maxConnections: 10, minIdle: 2 });
    await h.settle();
    await hold(h, 2);
    h.pool.sweep();
    await h.settle();
    expect(h.driver.opens).toBe(4);
    expect(h.pool.stats()).toMatchObject({ total: 4, idle: 2, leased: 2 });
  });

  it("minIdle is restored as soon as an acquire takes the last idle connection", async () => {
    const h = makePool({ maxConnections: 10, minIdle: 1 });
    await h.settle();
    await acquireNow(h);
    await h.settle();
    expect(h.driver.opens).toBe(2);
    expect(h.pool.stats()).toMatchObject({ total: 2, idle: 1, leased: 1 });
  });

  it("minIdle opens stay within maxConnections", async () => {
    const h = makePool({ maxConnections: 3, minIdle: 2 });
    await hold(h, 3);
    h.pool.sweep();
    await h.clock.advance(1000);
    h.pool.sweep();
    await h.settle();
    expect(h.driver.opens).toBe(3);
    expect(h.pool.stats()).toMatchObject({ total: 3, idle: 0 });
  });

  it("idle reaping never goes below minIdle", async () => {
    const h = makePool({ maxConnections: 10, minIdle: 2, idleTimeoutMs: 1000 });
    const leases = await hold(h, 5);
    // 5 for the borrowers, 2 more ahead of demand.
    expect(h.driver.opens).toBe(7);
    expect(h.pool.stats()).toMatchObject({ total: 7, idle: 2, leased: 5 });
    for (const lease of leases) h.pool.release(lease, { reset: false });
    await runAlarms(h, h.clock.now() + 10_000);
    expect(h.pool.stats()).toMatchObject({ total: 2, idle: 2 });
    expect(h.pool.stats().closed["idle-timeout"]).toBe(5);
    expect(h.driver.opens).toBe(7);
  });

  it("returned connections beyond maxIdle are closed (max-idle)", async () => {
    const h = makePool({ maxConnections: 10, maxIdle: 2 });
    const leases = await hold(h, 5);
    for (const lease of leases) h.pool.release(lease);
    await h.settle();
    expect(h.pool.stats()).toMatchObject({ total: 2, idle: 2 });
    expect(h.pool.stats().closed["max-idle"]).toBe(3);
    expect(h.driver.closes).toBe(3);
  });

  it("maxIdle does not close a returned connection while someone waits", async () => {
    const h = makePool({ maxConnections: 2, maxIdle: 0 });
    const [a] = await hold(h, 2);
    const waiter = track(h.pool.acquire());
    h.pool.release(a!, { reset: false });
    await h.settle();
    expect(waiter.value!.connection).toBe(a!.connection);
    expect(h.pool.stats().closed["max-idle"]).toBe(0);
  });

  it("maxIdle does not close below a reached minConnections", async () => {
    const h = makePool({ maxConnections: 10, minConnections: 4, maxIdle: 2 });
    const leases = await hold(h, 6);
    for (const lease of leases) h.pool.release(lease);
    await h.settle();
    expect(h.pool.stats().closed["max-idle"]).toBe(2);
    expect(h.pool.stats()).toMatchObject({ total: 4, idle: 4 });
  });

  it("a connection opened to refill a reached minConnections is kept, not closed as max-idle (no open/close storm)", async () => {
    const h = makePool({ maxConnections: 4, minConnections: 1, maxIdle: 0 });
    h.driver.openLimit = 200;
    const lease = await acquireNow(h);
    h.pool.release(lease, { reset: false });
    await h.settle();
    expect(h.pool.stats()).toMatchObject({ total: 1, idle: 1 });
    // The server drops the connection; the alarm runs while its close is still under way.
    h.pool.markBroken(lease.connection.handle!);
    h.pool.sweep();
    await h.settle();
    expect(h.driver.runaway).toBe(false);
    expect(h.driver.opens).toBe(2);
    expect(h.pool.stats().closed).toMatchObject({ broken: 1, "max-idle": 0 });
    expect(h.pool.stats()).toMatchObject({ total: 1, idle: 1 });
  });

  it("a connection that finishes opening after its borrower gave up, beyond maxIdle, is closed cleanly", async () => {
    const h = makePool({ maxConnections: 3, maxIdle: 1 });
    const a = await acquireNow(h);
    h.driver.defaultOpen = { kind: "ok", delayMs: 100 };
    const gaveUp = track(h.pool.acquire({ timeoutMs: 50 }));
    await h.clock.advance(50);
    expect(gaveUp.code).toBe("ACQUIRE_TIMEOUT");
    h.pool.release(a, { reset: false });
    await h.clock.advance(50);
    expect(h.driver.opened).toBe(2);
    expect(h.pool.stats()).toMatchObject({ total: 1, idle: 1, opening: 0 });
    expect(h.pool.stats().closed["max-idle"]).toBe(1);
    expect(h.driver.live.size).toBe(1);
  });
});
