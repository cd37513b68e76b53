import { describe, expect, it } from "vitest";
import { lifetimeSpacingMs } from "../../worker/pool/janitor.ts";
import { resolveOptions } from "../../worker/pool/options.ts";
import { acquireNow, hold, makePool, rejection, runAlarms, track } from "./helpers.ts";


describe("idle timeout", () => {
  it("idle connections older than idleTimeoutMs are closed with reason idle-timeout", async () => {
    const h = makePool({ idleTimeoutMs: 60_000, maxLifetimeMs: 0 });
    const t0 = h.clock.now();
    for (const lease of await hold(h, 3)) h.pool.release(lease, { reset: false });
    expect(h.pool.sweep()).toBe(t0 + 60_000);
    await h.clock.advance(59_999);
    expect(h.pool.sweep()).toBe(t0 + 60_000);
    await h.settle();
    expect(h.driver.closes).toBe(0);
    await h.clock.advance(1);
    expect(h.pool.sweep()).toBeUndefined();
    await h.settle();
    expect(h.driver.closedAt).toEqual([t0 + 60_000, t0 + 60_000, t0 + 60_000]);
    expect(h.pool.stats()).toMatchObject({ total: 0, idle: 0 });
    expect(h.pool.stats().closed["idle-timeout"]).toBe(3);
  });

  it("the least recently used connection is reaped first; the next deadline is the next one's", async () => {
    const h = makePool({ idleTimeoutMs: 60_000, maxLifetimeMs: 0 });
    const t0 = h.clock.now();
    const [a, b] = await hold(h, 2);
    h.pool.release(a!, { reset: false });
    await h.clock.advance(30_000);
    h.pool.release(b!, { reset: false });
    await h.clock.advance(30_000);
    expect(h.pool.sweep()).toBe(t0 + 90_000);
    await h.settle();
    expect(h.driver.closedIds).toEqual([a!.connection.handle!.id]);
    await h.clock.advance(30_000);
    h.pool.sweep();
    await h.settle();
    expect(h.driver.closedIds).toEqual([a!.connection.handle!.id, b!.connection.handle!.id]);
  });

  it("the pool asks the host for an alarm: a granted lease schedules its expiry check", async () => {
    const h = makePool({ leaseTimeoutMs: 30_000 });
    const t0 = h.clock.now();
    await acquireNow(h);
    expect(h.scheduled.at(-1)).toBe(t0 + 30_000);
    expect(Math.min(...(h.scheduled as number[]))).toBe(t0 + 30_000);
  });

  it("an empty pool has no next deadline", () => {
    const h = makePool();
    expect(h.pool.sweep()).toBeUndefined();
    expect(h.scheduled.at(-1)).toBeUndefined();
  });
});

describe("max lifetime", () => {
  it.each([
    ["without jitter a connection is retired exactly maxLifetimeMs after it opened", 0, 100_000],
    ["jitter takes at most 5 % off the lifetime", 0.99999, 95_001],
  ])("%s", async (_name, draw, lifetime) => {
    const h = makePool({ idleTimeoutMs: 0, maxLifetimeMs: 100_000 }, { random: () => draw });
    const t0 = h.clock.now();
    h.pool.release(await acquireNow(h), { reset: false });
    expect(h.pool.sweep()).toBe(t0 + lifetime);
    await h.clock.advance(lifetime - 1);
    h.pool.sweep();
    await h.settle();
    expect(h.driver.closes).toBe(0);
    await h.clock.advance(1);
    h.pool.sweep();
    await h.settle();
    expect(h.driver.closedAt).toEqual([t0 + lifetime]);
    expect(h.pool.stats().closed["max-lifetime"]).toBe(1);
  });

  it("jitter is drawn per connection", async () => {
    const draws = [0.2, 0.6];
    const h = makePool({ idleTimeoutMs: 0, maxLifetimeMs: 100_000, maxConnections: 2 }, { random: () => draws.shift() ?? 0 });
    const [a, b] = await hold(h, 2);
    const t0 = h.clock.now();
    expect(a!.connection.retireAt).toBe(t0 + 99_000);
    expect(b!.connection.retireAt).toBe(t0 + 97_000);
  });

  it("retirements are spaced maxLifetimeMs / maxConnections apart", async () => {
    const h = makePool({ idleTimeoutMs: 0, maxLifetimeMs: 400_000, maxConnections: 4 }, { random: () => 0 });
    expect(lifetimeSpacingMs(h.options)).toBe(100_000);
    const t0 = h.clock.now();
    for (const lease of await hold(h, 4)) h.pool.release(lease, { reset: false });
    await h.clock.advanceTo(t0 + 400_000);
    // One retires now; the alarm is asked for the next slot, not for the other three that are also due.
    expect(h.pool.sweep()).toBe(t0 + 500_000);
    await h.settle();
    expect(h.driver.closedAt).toEqual([t0 + 400_000]);
    await h.clock.advance(99_999);
    expect(h.pool.sweep()).toBe(t0 + 500_000);
    await runAlarms(h, t0 + 1_000_000);
    expect(h.driver.closedAt).toEqual([t0 + 400_000, t0 + 500_000, t0 + 600_000, t0 + 700_000]);
    expect(h.pool.stats().closed["max-lifetime"]).toBe(4);
  });

  it("lifetimeSpacingMs is 0 for a disabled pool", () => {
    expect(lifetimeSpacingMs(resolveOptions("acme", { maxConnections: 0 }))).toBe(0);
    expect(lifetimeSpacingMs(resolveOptions("acme", { maxConnections: 3, maxLifetimeMs: 100_000 }))).toBe(33_333);
  });

  it("a leased connection past its lifetime retires only when returned", async () => {
    const h = makePool({ idleTimeoutMs: 0, maxLifetimeMs: 100_000, leaseTimeoutMs: 500_000 });
    const t0 = h.clock.now();
    const lease = await acquireNow(h);
    await h.clock.advance(150_000);
    h.pool.sweep();
    await h.settle();
    expect(h.driver.closes).toBe(0);
    expect(await h.pool.use(lease, async (handle) => handle.id)).toBe(1);
    h.pool.release(lease);
    await h.settle();
    expect(h.driver.closedAt).toEqual([t0 + 150_000]);
    expect(h.driver.resets).toBe(0);
    expect(h.pool.stats().closed["max-lifetime"]).toBe(1);
    expect(h.pool.stats().total).toBe(0);
  });

  it("leased connections returned together past their lifetime still retire spaced apart", async () => {
    const h = makePool({ idleTimeoutMs: 0, maxLifetimeMs: 100_000, maxConnections: 2, leaseTimeoutMs: 500_000 });
    const t0 = h.clock.now();
    const [a, b] = await hold(h, 2);
    await h.clock.advance(120_000);
    h.pool.release(a!, { reset: false });
    h.pool.release(b!, { reset: false });
    await runAlarms(h, t0 + 400_000);
    expect(h.driver.closedAt).toEqual([t0 + 120_000, t0 + 170_000]);
  });

  it("rules run in order: an idle connection due for both lifetime and idle timeout closes for max-lifetime", async () => {
    const h = makePool({ idleTimeoutMs: 60_000, maxLifetimeMs: 100_000 });
    h.pool.release(await acquireNow(h), { reset: false });
    await h.clock.advance(100_000);
    h.pool.sweep();
    await h.settle();
    expect(h.pool.stats().closed).toMatchObject({ "max-lifetime": 1, "idle-timeout": 0 });
  });
});

describe("max uses", () => {
  it("after maxUses leases a connection is retired on return (max-uses)", async () => {
    const h = makePool({ maxConnections: 1, maxUses: 3 });
    for (let i = 0; i < 3; i++) {
      const lease = await acquireNow(h);
      expect(lease.connection.handle!.id).toBe(1);
      h.pool.release(lease);
      await h.settle();
    }
    expect(h.driver.closedIds).toEqual([1]);
    expect(h.pool.stats().closed["max-uses"]).toBe(1);
    const fourth = await acquireNow(h);
    expect(fourth.connection.handle!.id).toBe(2);
    expect(h.driver.opens).toBe(2);
  });

  it("maxUses 0 means no limit", async () => {
    const h = makePool({ maxConnections: 1, maxUses: 0 });
    for (let i = 0; i < 50; i++) {
      h.pool.release(await acquireNow(h), { reset: false });
      await h.settle();
    }
    expect(h.driver.opens).toBe(1);
    expect(h.driver.closes).toBe(0);
  });
});

describe("reuse cooldown", () => {
  it("a freshly opened connection is handed out at once: the cooldown is for returned ones", async () => {
    const h = makePool({ maxConnections: 1, reuseCooldownMs: 1000 });
    const first = track(h.pool.acquire());
    await h.settle();
    expect(first.status).toBe("resolved");
    expect(first.value!.waitedMs).toBe(0);
  });

  it("a returned connection is not handed out again before reuseCooldownMs", async () => {
    const h = makePool({ maxConnections: 1, reuseCooldownMs: 1000 });
    const first = track(h.pool.acquire());
    await h.clock.advance(1000);
    expect(first.status).toBe("resolved");
    const t1 = h.clock.now();
    h.pool.release(first.value!, { reset: false });
    const next = track(h.pool.acquire());
    await h.clock.advance(999);
    expect(next.status).toBe("pending");
    await h.clock.advance(1);
    expect(next.status).toBe("resolved");
    expect(next.value!.connection).toBe(first.value!.connection);
    expect(next.value!.acquiredAt - t1).toBe(1000);
    expect(next.value!.waitedMs).toBe(1000);
  });

  it("below max, a borrower gets another connection rather than waiting for the cooldown", async () => {
    const h = makePool({ maxConnections: 3, reuseCooldownMs: 1000 });
    const first = track(h.pool.acquire());
    await h.clock.advance(1000);
    expect(h.driver.opens).toBe(1);
    h.pool.release(first.value!, { reset: false });
    const second = track(h.pool.acquire());
    await h.settle();
    expect(second.status).toBe("resolved");
    expect(second.value!.connection).not.toBe(first.value!.connection);
    expect(h.driver.opens).toBe(2);
  });
});

describe("lease timeout", () => {
  it("a lease without activity for leaseTimeoutMs is reclaimed: connection closed (lease-expired), use fails LEASE_EXPIRED", async () => {
    const h = makePool({ maxConnections: 1, leaseTimeoutMs: 30_000 });
    const t0 = h.clock.now();
    const lease = await acquireNow(h);
    const waiter = track(h.pool.acquire({ timeoutMs: 60_000 }));
    await h.clock.advance(29_999);
    expect(h.pool.sweep()).toBe(t0 + 30_000);
    await h.settle();
    expect(lease.state).toBe("active");
    await h.clock.advance(1);
    h.pool.sweep();
    await h.settle();
    expect(lease.state).toBe("expired");
    expect(h.driver.closedAt).toEqual([t0 + 30_000]);
    const error = await rejection(h.pool.use(lease, async () => 1), "LEASE_EXPIRED");
    expect(error.message).toBe(
      'LEASE_EXPIRED: tenant "acme" lease 1 was reclaimed after 30000ms without activity (leaseTimeoutMs); its transaction was rolled back',
    );
    h.pool.release(lease);
    expect(h.pool.stats()).toMatchObject({ leasesExpired: 1, released: 0 });
    expect(h.pool.stats().closed["lease-expired"]).toBe(1);
    // The slot went to the waiter, on a fresh connection.
    expect(waiter.status).toBe("resolved");
    expect(waiter.value!.connection.handle!.id).toBe(2);
  });

  it("activity on a lease pushes its expiry back", async () => {
    const h = makePool({ leaseTimeoutMs: 30_000 });
    const t0 = h.clock.now();
    const lease = await acquireNow(h);
    await h.clock.advance(20_000);
    await h.pool.use(lease, async () => "ok");
    await h.clock.advance(10_000);
    expect(h.pool.sweep()).toBe(t0 + 50_000);
    expect(lease.state).toBe("active");
    await h.clock.advance(20_000);
    h.pool.sweep();
    expect(lease.state).toBe("expired");
  });

  it("a query in flight prevents expiry; the timeout counts from its end", async () => {
    const h = makePool({ leaseTimeoutMs: 30_000 });
    const t0 = h.clock.now();
    const lease = await acquireNow(h);
    const query = track(h.pool.use(lease, () => new Promise<string>((r) => h.clock.setTimer(() => r("done"), 100_000))));
    for (const at of [30_000, 60_000, 90_000]) {
      await h.clock.advanceTo(t0 + at);
      h.pool.sweep();
      expect(lease.state).toBe("active");
    }
    await h.clock.advanceTo(t0 + 100_000);
    expect(query.value).toBe("done");
    expect(h.scheduled).toContain(t0 + 130_000);
    await h.clock.advanceTo(t0 + 129_999);
    h.pool.sweep();
    expect(lease.state).toBe("active");
    await h.clock.advance(1);
    h.pool.sweep();
    await h.settle();
    expect(lease.state).toBe("expired");
    expect(h.driver.closes).toBe(1);
  });
});
