import { describe, expect, it } from "vitest";
import type { Lease } from "../../worker/pool/connection.ts";
import { acquireNow, hold, makePool, rejection, track, type FakeHandle } from "./helpers.ts";

describe("drain", () => {
  it("an empty pool drains at once", async () => {
    const h = makePool();
    const drained = track(h.pool.drain());
    await h.settle();
    expect(drained.status).toBe("resolved");
  });

  it("waiters fail with POOL_CLOSED; new acquires fail POOL_CLOSED", async () => {
    const h = makePool({ maxConnections: 1 });
    const held = await acquireNow(h);
    const queued = track(h.pool.acquire());
    await h.settle();
    expect(queued.status).toBe("pending");
    const drained = track(h.pool.drain());
    await h.settle();
    expect(queued.code).toBe("POOL_CLOSED");
    expect((queued.error as Error).message).toBe('POOL_CLOSED: tenant "acme" the pool was closed while waiting');
    const late = await rejection(h.pool.acquire(), "POOL_CLOSED");
    expect(late.message).toBe('POOL_CLOSED: tenant "acme" the pool is closed: it takes no new leases');
    expect(h.pool.stats().waiting).toBe(0);
    expect(drained.status).toBe("pending");
    expect(held.state).toBe("active");
  });

  it("drain resolves once every leased connection has come back and closed", async () => {
    const h = makePool({ maxConnections: 3 });
    const [a, b] = (await hold(h, 2)) as [Lease<FakeHandle>, Lease<FakeHandle>];
    const c = await acquireNow(h);
    h.pool.release(c, { reset: false });
    await h.settle();
    const drained = track(h.pool.drain());
    await h.settle();
    expect(h.driver.closedIds).toEqual([c.connection.handle!.id]);
    expect(drained.status).toBe("pending");
    h.pool.release(a);
    await h.settle();
    expect(drained.status).toBe("pending");
    expect(await h.pool.use(b, async (handle) => handle.id)).toBe(b.connection.handle!.id);
    h.pool.release(b);
    await h.settle();
    expect(drained.status).toBe("resolved");
    expect(h.driver.resets).toBe(0);
    expect(h.driver.live.size).toBe(0);
    expect(h.pool.stats().closed.shutdown).toBe(3);
    expect(h.pool.stats().total).toBe(0);
  });

  it("a connection in its reset when the pool drains is closed when the reset ends", async () => {
    const h = makePool();
    h.driver.resetDelayMs = 30;
    const lease = await acquireNow(h);
    h.pool.release(lease);
    const drained = track(h.pool.drain());
    await h.clock.advance(29);
    expect(drained.status).toBe("pending");
    await h.clock.advance(1);
    expect(drained.status).toBe("resolved");
    expect(h.driver.closedIds).toEqual([1]);
    expect(h.pool.stats().closed.shutdown).toBe(1);
  });

  it("drain called twice resolves both callers", async () => {
    const h = makePool();
    const lease = await acquireNow(h);
    const first = track(h.pool.drain());
    const second = track(h.pool.drain());
    h.pool.release(lease);
    await h.settle();
    expect(first.status).toBe("resolved");
    expect(second.status).toBe("resolved");
    expect(h.driver.closes).toBe(1);
  });

  it("drain does not reopen toward minConnections, minIdle or initialConnections", async () => {
    const h = makePool({ maxConnections: 4, minConnections: 2, minIdle: 1, initialConnections: 2 });
    await h.settle();
    const opens = h.driver.opens;
    await h.pool.drain();
    await h.clock.advance(60_000);
    h.pool.sweep();
    await h.settle();
    expect(h.driver.opens).toBe(opens);
    expect(h.pool.stats().total).toBe(0);
  });

  it("a connection still opening when the pool drains is closed once it opens, and drain resolves", async () => {
    const h = makePool({}, { before: (d) => (d.defaultOpen = { kind: "ok", delayMs: 100 }) });
    const borrower = track(h.pool.acquire());
    await h.settle();
    const drained = track(h.pool.drain());
    await h.settle();
    expect(borrower.code).toBe("POOL_CLOSED");
    await h.clock.advance(100);
    expect(h.driver.closedIds).toEqual([1]);
    expect(h.pool.stats()).toMatchObject({ total: 0, opening: 0 });
    expect(drained.status).toBe("resolved");
  });

  it("a connection being validated for a borrower who gave up is closed when the pool drains", async () => {
    const h = makePool({ validateAfterIdleMs: 1000 });
    h.pool.release(await acquireNow(h), { reset: false });
    await h.clock.advance(5000);
    h.driver.validateDelayMs = 100;
    const impatient = track(h.pool.acquire({ timeoutMs: 50 }));
    await h.clock.advance(50);
    expect(impatient.code).toBe("ACQUIRE_TIMEOUT");
    const drained = track(h.pool.drain());
    await h.clock.advance(50);
    expect(h.driver.closedIds).toEqual([1]);
    expect(drained.status).toBe("resolved");
  });
});
