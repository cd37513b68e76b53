import { describe, expect, it } from "vitest";
import { acquireNow, makePool, rejection, track } from "./helpers.ts";

describe("acquire", () => {
  it("a first acquire opens one connection and leases it", async () => {
    const h = makePool({ maxConnections: 3 });
    const lease = await acquireNow(h);
    await h.settle();
    expect(h.driver.opens).toBe(1);
    expect(lease.connection.handle).toBe(h.driver.openedHandles[0]);
    expect(lease.state).toBe("active");
    expect(h.pool.stats()).toMatchObject({ total: 1, leased: 1, idle: 0, waiting: 0, acquired: 1 });
  });

  it("a free connection is reused instead of opening another", async () => {
    const h = makePool({ maxConnections: 3 });
    const first = await acquireNow(h);
    h.pool.release(first);
    await h.settle();
    const second = await acquireNow(h);
    expect(second.connection).toBe(first.connection);
    expect(h.driver.opens).toBe(1);
  });

  it("waiters are served in FIFO order", async () => {
    const h = makePool({ maxConnections: 1 });
    const held = await acquireNow(h);
    const order: number[] = [];
    const waiters = [1, 2, 3, 4].map((n) => track(h.pool.acquire().then((lease) => (order.push(n), lease))));
    await h.settle();
    expect(h.pool.stats().waiting).toBe(4);
    let current = held;
    for (let i = 0; i < 4; i++) {
      h.pool.release(current, { reset: false });
      await h.settle();
      expect(order).toEqual([1, 2, 3, 4].slice(0, i + 1));
      current = waiters[i]!.value!;
    }
    expect(h.pool.stats().waiting).toBe(0);
  });

  it("a waiter fails with ACQUIRE_TIMEOUT after acquireTimeoutMs, with the counters in the message", async () => {
    const h = makePool({ maxConnections: 2, acquireTimeoutMs: 1000 });
    await acquireNow(h);
    await acquireNow(h);
    await h.settle();
    const waiter = track(h.pool.acquire());
    const other = track(h.pool.acquire());
    await h.clock.advance(999);
    expect(waiter.status).toBe("pending");
    await h.clock.advance(1);
    expect(waiter.status).toBe("rejected");
    expect(waiter.code).toBe("ACQUIRE_TIMEOUT");
    expect((waiter.error as Error).message).toBe(
      'ACQUIRE_TIMEOUT: tenant "acme" had no free connection after 1000ms (max=2, total=2, leased=2, idle=0, opening=0, waiting=2)',
    );
    expect(other.code).toBe("ACQUIRE_TIMEOUT");
    expect((other.error as Error).message).toContain("(max=2, total=2, leased=2, idle=0, opening=0, waiting=1)");
    expect(h.pool.stats()).toMatchObject({ waiting: 0, timeouts: 2 });
  });

  it("a per-call timeoutMs overrides acquireTimeoutMs", async () => {
    const h = makePool({ maxConnections: 1, acquireTimeoutMs: 5000 });
    await acquireNow(h);
    const short = track(h.pool.acquire({ timeoutMs: 200 }));
    const normal = track(h.pool.acquire());
    const long = track(h.pool.acquire({ timeoutMs: 8000 }));
    await h.clock.advance(199);
    expect(short.status).toBe("pending");
    await h.clock.advance(1);
    expect(short.code).toBe("ACQUIRE_TIMEOUT");
    expect((short.error as Error).message).toContain("after 200ms");
    await h.clock.advance(4799);
    expect(normal.status).toBe("pending");
    await h.clock.advance(1);
    expect(normal.code).toBe("ACQUIRE_TIMEOUT");
    expect(long.status).toBe("pending");
    await h.clock.advance(3000);
    expect(long.code).toBe("ACQUIRE_TIMEOUT");
  });

  it("a timed-out waiter gives up its place: the next waiter gets the connection", async () => {
    const h = makePool({ maxConnections: 1 });
    const held = await acquireNow(h);
    const gaveUp = track(h.pool.acquire({ timeoutMs: 100 }));
    const patient = track(h.pool.acquire({ timeoutMs: 10_000 }));
    await h.clock.advance(100);
    expect(gaveUp.code).toBe("ACQUIRE_TIMEOUT");
    h.pool.release(held, { reset: false });
    await h.settle();
    expect(patient.status).toBe("resolved");
    expect(patient.value!.connection).toBe(held.connection);
    expect(patient.value!.waitedMs).toBe(100);
  });

  it("beyond maxWaiters an acquire fails at once with WAIT_QUEUE_FULL", async () => {
    const h = makePool({ maxConnections: 1, maxWaiters: 2 });
    await acquireNow(h);
    const a = track(h.pool.acquire());
    const b = track(h.pool.acquire());
    const start = h.clock.now();
    const full = await rejection(h.pool.acquire(), "WAIT_QUEUE_FULL");
    expect(h.clock.now()).toBe(start);
    expect(full.message).toBe(
      'WAIT_QUEUE_FULL: tenant "acme" 2 borrowers already wait (maxWaiters=2) (max=1, total=1, leased=1, idle=0, opening=0, waiting=2)',
    );
    expect(full.retryable).toBe(true);
    await h.settle();
    expect(a.status).toBe("pending");
    expect(b.status).toBe("pending");
    expect(h.pool.stats()).toMatchObject({ waiting: 2, waitQueueFull: 1 });
  });

  it("maxWaiters 0 means no queue: a busy pool refuses at once", async () => {
    const h = makePool({ maxConnections: 1, maxWaiters: 0 });
    await acquireNow(h);
    await rejection(h.pool.acquire(), "WAIT_QUEUE_FULL");
  });

  it("the queue bound holds while connections are still opening", async () => {
    // max 2 connections can still serve 2 borrowers; one more may wait (maxWaiters 1); the 4th is refused.
    const h = makePool(
      { maxConnections: 2, maxWaiters: 1, maxConcurrentConnects: 1 },
      { before: (d) => (d.defaultOpen = { kind: "ok", delayMs: 100 }) },
    );
    const borrowers = [0, 1, 2, 3].map(() => track(h.pool.acquire()));
    await h.clock.advance(0);
    expect(borrowers[3]!.code).toBe("WAIT_QUEUE_FULL");
    expect(h.pool.stats().waiting).toBe(3);
  });

  it("maxConnections 0 disables the pool: every acquire fails with POOL_DISABLED and nothing opens", async () => {
    const h = makePool({ maxConnections: 0 });
    const error = await rejection(h.pool.acquire(), "POOL_DISABLED");
    expect(error.message).toBe('POOL_DISABLED: tenant "acme" maxConnections is 0: the pool is disabled');
    await rejection(h.pool.acquire({ timeoutMs: 10 }), "POOL_DISABLED");
    await h.settle();
    expect(h.driver.opens).toBe(0);
    expect(h.pool.stats().total).toBe(0);
  });

  it("never more than maxConnections physical connections, however many borrowers", async () => {
    const h = makePool({ maxConnections: 3 });
    const borrowers = Array.from({ length: 10 }, () => track(h.pool.acquire({ timeoutMs: 60_000 })));
    await h.settle();
    expect(h.driver.opens).toBe(3);
    expect(h.driver.maxLive).toBe(3);
    expect(borrowers.filter((b) => b.status === "resolved")).toHaveLength(3);
    expect(h.pool.stats()).toMatchObject({ total: 3, leased: 3, waiting: 7 });
    for (let round = 0; round < 7; round++) {
      const holder = borrowers.find((b) => b.status === "resolved" && b.value!.state === "active")!;
      h.pool.release(holder.value!);
      await h.settle();
    }
    expect(borrowers.filter((b) => b.status === "resolved")).toHaveLength(10);
    expect(h.driver.opens).toBe(3);
    expect(h.driver.maxLive).toBe(3);
  });

  it("an acquire waits for a slot rather than opening when the pool is at max", async () => {
    const h = makePool({ maxConnections: 2 });
    const a = await acquireNow(h);
    await acquireNow(h);
    const waiter = track(h.pool.acquire());
    await h.clock.advance(50);
    expect(h.driver.opens).toBe(2);
    h.pool.release(a, { reset: false });
    await h.clock.advance(0);
    expect(waiter.value!.connection).toBe(a.connection);
    expect(waiter.value!.waitedMs).toBe(50);
  });
});

describe("the pool's own statements get connectTimeoutMs to answer", () => {
  it("a validation with no answer retires the connection (its socket is closed) and the borrower gets a new one", async () => {
    const h = makePool({ maxConnections: 1, validateAfterIdleMs: 1_000, connectTimeoutMs: 2_000, acquireTimeoutMs: 10_000 });
    h.pool.release(await acquireNow(h), { reset: false });
    await h.clock.advance(5_000);
    // The server went silent without closing the socket.
    h.driver.validateDelayMs = 1e9;
    const waiting = track(h.pool.acquire());
    await h.clock.advance(1_999);
    expect(waiting.status).toBe("pending");
    expect(h.driver.closedIds).toEqual([]);
    await h.clock.advance(1);
    expect(h.driver.closedIds).toEqual([1]);
    expect(waiting.status).toBe("resolved");
    expect(waiting.value!.connection.handle!.id).toBe(2);
    expect(h.pool.stats().closed).toMatchObject({ broken: 1 });
  });

  it("a reset with no answer retires the connection, so its slot serves the next borrower", async () => {
    const h = makePool({ maxConnections: 1, connectTimeoutMs: 2_000, acquireTimeoutMs: 10_000 });
    const first = await acquireNow(h);
    h.driver.resetDelayMs = 1e9;
    h.pool.release(first, { reset: true });
    const next = track(h.pool.acquire());
    await h.clock.advance(1_999);
    expect(next.status).toBe("pending");
    await h.clock.advance(1);
    expect(h.driver.closedIds).toEqual([1]);
    expect(next.status).toBe("resolved");
    expect(next.value!.connection.handle!.id).toBe(2);
  });
});
