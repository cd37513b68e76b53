import { describe, expect, it } from "vitest";
import { acquireNow, FatalError, hold, makePool, rejection, track } from "./helpers.ts";

const SHARED = { shared: true, timeoutMs: 60_000 } as const;

describe("pipelining one-shot queries (pipelineDepth)", () => {
  it("at max with every connection busy, a one-shot rides on the busy connection with the fewest queries, up to pipelineDepth", async () => {
    const h = makePool({ maxConnections: 2, pipelineDepth: 3 });
    const [a, b] = [await acquireNow(h, SHARED), await acquireNow(h, SHARED)];
    expect(a.connection).not.toBe(b.connection);
    const riders = [];
    for (let i = 0; i < 4; i++) riders.push(await acquireNow(h, SHARED));
    // Spread evenly: two more on each connection, never a third connection.
    expect(riders.map((r) => r.connection.id).sort()).toEqual([1, 1, 2, 2]);
    expect(h.driver.opened).toBe(2);
    expect(h.pool.stats()).toMatchObject({ total: 2, leased: 2, waiting: 0, acquired: 6, pipelined: 4, peakDemand: 6 });
    // By the balance rule six executors on two connections is undersized, though nobody queued.
    expect(h.pool.stats().sizing).toMatchObject({ verdict: "undersized", suggestedMaxConnections: 6 });
    // Both connections carry pipelineDepth queries: the next one waits in the queue.
    const waiter = track(h.pool.acquire(SHARED));
    await h.settle();
    expect(waiter.status).toBe("pending");
    expect(h.pool.stats().waiting).toBe(1);
    // One query done: the waiter rides in its place, on the same connection.
    h.pool.release(riders[0]!, { reset: false });
    await h.settle();
    expect(waiter.value?.connection).toBe(riders[0]!.connection);
    expect(h.pool.stats()).toMatchObject({ waiting: 0, pipelined: 5 });
  });

  it("below max a one-shot gets a connection of its own instead of riding", async () => {
    const h = makePool({ maxConnections: 3 });
    await acquireNow(h, SHARED);
    const second = track(h.pool.acquire(SHARED));
    await h.settle();
    expect(second.value!.connection.id).toBe(2);
    expect(h.pool.stats().pipelined).toBe(0);
  });

  it("a lease (session mode) never rides and is never ridden on", async () => {
    const h = makePool({ maxConnections: 1, pipelineDepth: 4 });
    const session = await acquireNow(h);
    const oneShot = track(h.pool.acquire(SHARED));
    const lease = track(h.pool.acquire({ timeoutMs: 60_000 }));
    await h.settle();
    expect(oneShot.status).toBe("pending");
    expect(lease.status).toBe("pending");
    h.pool.release(session);
    await h.settle();
    // FIFO: the one-shot came first and gets the connection; the lease cannot share it.
    expect(oneShot.status).toBe("resolved");
    expect(lease.status).toBe("pending");
    h.pool.release(oneShot.value!, { reset: false });
    await h.settle();
    expect(lease.status).toBe("resolved");
    expect(h.pool.stats().pipelined).toBe(0);
  });

  it("a lease waiting at the head of the queue stops new riders, so the busy connections drain to it (FIFO)", async () => {
    const h = makePool({ maxConnections: 1, pipelineDepth: 8 });
    const first = await acquireNow(h, SHARED);
    const rider = await acquireNow(h, SHARED);
    const lease = track(h.pool.acquire({ timeoutMs: 60_000 }));
    const late = track(h.pool.acquire(SHARED));
    await h.settle();
    expect(h.pool.stats()).toMatchObject({ waiting: 2, pipelined: 1 });
    h.pool.release(rider, { reset: false });
    await h.settle();
    // Room on the connection, but the head of the queue is a lease: the later one-shot does not jump it.
    expect(late.status).toBe("pending");
    h.pool.release(first, { reset: false });
    await h.settle();
    expect(lease.status).toBe("resolved");
    expect(late.status).toBe("pending");
    h.pool.release(lease.value!);
    await h.settle();
    expect(late.status).toBe("resolved");
  });

  it("a reset asked by any query on a shared connection runs once, when the last one gives it back", async () => {
    const h = makePool({ maxConnections: 1, pipelineDepth: 3 });
    const [a, b, c] = [await acquireNow(h, SHARED), await acquireNow(h, SHARED), await acquireNow(h, SHARED)];
    h.pool.release(b); // failed: wants a reset
    h.pool.release(a, { reset: false });
    await h.settle();
    expect(h.driver.resets).toBe(0);
    expect(h.pool.stats()).toMatchObject({ leased: 1, idle: 0 });
    h.pool.release(c, { reset: false });
    await h.settle();
    expect(h.driver.resets).toBe(1);
    expect(h.pool.stats()).toMatchObject({ leased: 0, idle: 1, released: 3 });
  });

  it("a connection that dies under pipelined queries fails them all with LEASE_LOST and is closed once", async () => {
    const h = makePool({ maxConnections: 1, pipelineDepth: 3 });
    const leases = [await acquireNow(h, SHARED), await acquireNow(h, SHARED), await acquireNow(h, SHARED)];
    const runs = leases.map((lease) => track(h.pool.use(lease, async () => {
      throw new FatalError("socket closed");
    })));
    await h.settle();
    for (const run of runs) await rejection(Promise.reject(run.error), "LEASE_LOST");
    for (const lease of leases) h.pool.release(lease);
    await h.settle();
    expect(h.pool.stats()).toMatchObject({ leasesLost: 1, total: 0, closed: expect.objectContaining({ broken: 1 }) });
    expect(h.driver.closes).toBe(1);
    // The pool is whole again: the next one-shot opens a new connection and nobody rides a dead one.
    const next = await h.pool.acquire(SHARED);
    expect(next.connection.id).toBe(2);
    expect(next.holders).toBe(1);
  });

  it("a connection due to retire takes no riders", async () => {
    const h = makePool({ maxConnections: 1, maxUses: 2, pipelineDepth: 4 });
    const first = await acquireNow(h, SHARED);
    await acquireNow(h, SHARED); // the second use
    const third = track(h.pool.acquire(SHARED));
    await h.settle();
    expect(third.status).toBe("pending");
    expect(first.connection.uses).toBe(2);
  });

  it("pipelineDepth 1 turns pipelining off", async () => {
    const h = makePool({ maxConnections: 2, pipelineDepth: 1 });
    await hold(h, 2);
    const next = track(h.pool.acquire(SHARED));
    await h.settle();
    expect(next.status).toBe("pending");
    expect(h.pool.stats().pipelined).toBe(0);
  });
});
