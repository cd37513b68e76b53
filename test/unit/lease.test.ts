import { describe, expect, it } from "vitest";
import { acquireNow, FatalError, makePool, rejection, track } from "./helpers.ts";

describe("leases", () => {
  it("use runs the function on the lease's connection and counts as activity", async () => {
    const h = makePool();
    const lease = await acquireNow(h);
    await h.clock.advance(500);
    expect(await h.pool.use(lease, async (handle) => `conn ${handle.id}`)).toBe("conn 1");
    expect(lease.lastActivityAt).toBe(h.clock.now());
  });

  it("release is idempotent: a second release changes nothing", async () => {
    const h = makePool({ maxConnections: 1 });
    const lease = await acquireNow(h);
    h.pool.release(lease);
    h.pool.release(lease);
    h.pool.release(lease, { reset: false });
    await h.settle();
    expect(h.pool.stats()).toMatchObject({ released: 1, idle: 1, leased: 0, total: 1 });
    expect(h.driver.resets).toBe(1);
    const next = await acquireNow(h);
    h.pool.release(lease);
    expect(next.state).toBe("active");
    expect(h.pool.stats()).toMatchObject({ released: 1, leased: 1 });
  });

  it("a released lease cannot be used: LEASE_RELEASED", async () => {
    const h = makePool();
    const lease = await acquireNow(h);
    h.pool.release(lease);
    let ran = false;
    const error = await rejection(h.pool.use(lease, async () => (ran = true)), "LEASE_RELEASED");
    expect(error.message).toBe('LEASE_RELEASED: tenant "acme" lease 1 was already released');
    expect(error.retryable).toBe(false);
    expect(ran).toBe(false);
  });

  it("a returned connection is reset before anyone else gets it", async () => {
    const h = makePool({ maxConnections: 1 });
    h.driver.resetDelayMs = 40;
    const lease = await acquireNow(h);
    const waiter = track(h.pool.acquire());
    await h.clock.advance(10);
    h.pool.release(lease);
    expect(h.driver.resetIds).toEqual([1]);
    await h.clock.advance(39);
    expect(waiter.status).toBe("pending");
    expect(h.pool.stats().closing).toBe(1);
    await h.clock.advance(1);
    expect(waiter.value!.connection).toBe(lease.connection);
    expect(waiter.value!.waitedMs).toBe(50);
  });

  it("release with reset: false skips the reset", async () => {
    const h = makePool();
    h.pool.release(await acquireNow(h), { reset: false });
    await h.settle();
    expect(h.driver.resets).toBe(0);
    expect(h.pool.stats().idle).toBe(1);
  });

  it("a connection whose reset fails is closed (broken), never reused", async () => {
    const h = makePool({ maxConnections: 1 });
    h.driver.resetFailsFor.add(1);
    const lease = await acquireNow(h);
    h.pool.release(lease);
    await h.settle();
    expect(h.driver.closedIds).toEqual([1]);
    expect(h.pool.stats().closed.broken).toBe(1);
    const next = await acquireNow(h);
    expect(next.connection.handle!.id).toBe(2);
  });

  it("a fatal error in use ends the lease with LEASE_LOST and closes the connection (broken)", async () => {
    const h = makePool({ maxConnections: 1 });
    const lease = await acquireNow(h);
    const waiter = track(h.pool.acquire());
    const error = await rejection(
      h.pool.use(lease, async () => {
        throw new FatalError("terminating connection due to administrator command");
      }),
      "LEASE_LOST",
    );
    expect(error.message).toBe(
      'LEASE_LOST: tenant "acme" lease 1 lost its connection (terminating connection due to administrator command); session state and any open transaction are gone, acquire again',
    );
    expect(error.retryable).toBe(true);
    await h.settle();
    expect(lease.state).toBe("lost");
    expect(h.driver.closedIds).toEqual([1]);
    expect(h.driver.resets).toBe(0);
    expect(waiter.value!.connection.handle!.id).toBe(2);
    h.pool.release(lease);
    expect(h.pool.stats()).toMatchObject({ released: 0, leasesLost: 1, total: 1, leased: 1 });
    expect(h.pool.stats().closed.broken).toBe(1);
    await rejection(h.pool.use(lease, async () => 1), "LEASE_LOST");
  });

  it("a non-fatal error in use is passed through and the lease stays usable", async () => {
    const h = makePool();
    const lease = await acquireNow(h);
    const sqlError = Object.assign(new Error('relation "nope" does not exist'), { code: "42P01" });
    await expect(h.pool.use(lease, async () => Promise.reject(sqlError))).rejects.toBe(sqlError);
    expect(lease.state).toBe("active");
    expect(await h.pool.use(lease, async () => 7)).toBe(7);
    h.pool.release(lease);
    await h.settle();
    expect(h.driver.closes).toBe(0);
    expect(h.pool.stats().idle).toBe(1);
  });

  it("markBroken on a leased connection frees its slot at once; the lease fails LEASE_LOST", async () => {
    const h = makePool({ maxConnections: 1 });
    const lease = await acquireNow(h);
    const waiter = track(h.pool.acquire());
    h.pool.markBroken(lease.connection.handle!);
    await h.settle();
    expect(h.driver.closedIds).toEqual([1]);
    expect(waiter.value!.connection.handle!.id).toBe(2);
    await rejection(h.pool.use(lease, async () => 1), "LEASE_LOST");
  });

  it("markBroken on an idle connection closes it at once", async () => {
    const h = makePool();
    const lease = await acquireNow(h);
    h.pool.release(lease, { reset: false });
    h.pool.markBroken(lease.connection.handle!);
    await h.settle();
    expect(h.driver.closedIds).toEqual([1]);
    expect(h.pool.stats()).toMatchObject({ total: 0 });
    expect(h.pool.stats().closed.broken).toBe(1);
  });

  it("markBroken during the reset closes the connection when the reset ends", async () => {
    const h = makePool();
    h.driver.resetDelayMs = 10;
    const lease = await acquireNow(h);
    h.pool.release(lease);
    h.pool.markBroken(lease.connection.handle!);
    await h.clock.advance(10);
    expect(h.driver.closedIds).toEqual([1]);
    expect(h.pool.stats().total).toBe(0);
  });

  it("markBroken for an unknown handle changes nothing", async () => {
    const h = makePool();
    h.pool.release(await acquireNow(h), { reset: false });
    h.pool.markBroken({ id: 99 });
    await h.settle();
    expect(h.pool.stats()).toMatchObject({ total: 1, idle: 1 });
  });
});

describe("validation after idle", () => {
  it("a connection idle longer than validateAfterIdleMs is checked before it is handed out", async () => {
    const h = makePool({ validateAfterIdleMs: 1000 });
    const first = await acquireNow(h);
    h.pool.release(first, { reset: false });
    await h.clock.advance(1000);
    await acquireNow(h).then((l) => h.pool.release(l, { reset: false }));
    expect(h.driver.validations).toBe(0);
    await h.clock.advance(1001);
    const lease = await acquireNow(h);
    expect(h.driver.validatedIds).toEqual([1]);
    expect(lease.connection).toBe(first.connection);
  });

  it("a dead idle connection is replaced, not handed out", async () => {
    const h = makePool({ validateAfterIdleMs: 1000 });
    h.pool.release(await acquireNow(h), { reset: false });
    await h.clock.advance(5000);
    h.driver.dead.add(1);
    const lease = await acquireNow(h);
    await h.settle();
    expect(lease.connection.handle!.id).toBe(2);
    expect(h.driver.closedIds).toEqual([1]);
    expect(h.pool.stats().closed.broken).toBe(1);
    expect(h.pool.stats()).toMatchObject({ total: 1, leased: 1 });
  });

  it("at max, a dead connection's replacement is opened after it closes", async () => {
    const h = makePool({ maxConnections: 1, validateAfterIdleMs: 1000 });
    h.pool.release(await acquireNow(h), { reset: false });
    await h.clock.advance(5000);
    h.driver.dead.add(1);
    h.driver.closeDelayMs = 20;
    const lease = track(h.pool.acquire());
    await h.clock.advance(19);
    expect(h.driver.opens).toBe(1);
    await h.clock.advance(1);
    expect(lease.value!.connection.handle!.id).toBe(2);
    expect(h.driver.maxLive).toBe(1);
  });

  it("a borrower that gives up during validation leaves the connection idle for the next", async () => {
    const h = makePool({ validateAfterIdleMs: 1000, maxConnections: 1 });
    h.pool.release(await acquireNow(h), { reset: false });
    await h.clock.advance(5000);
    h.driver.validateDelayMs = 100;
    const impatient = track(h.pool.acquire({ timeoutMs: 50 }));
    await h.clock.advance(100);
    expect(impatient.code).toBe("ACQUIRE_TIMEOUT");
    expect(h.pool.stats()).toMatchObject({ idle: 1, leased: 0, total: 1 });
    const next = await acquireNow(h);
    expect(next.connection.handle!.id).toBe(1);
    expect(h.driver.validations).toBe(1);
  });

  it("a connection marked broken while it is being validated is not handed out", async () => {
    const h = makePool({ validateAfterIdleMs: 1000, maxConnections: 1 });
    h.pool.release(await acquireNow(h), { reset: false });
    await h.clock.advance(5000);
    h.driver.validateDelayMs = 100;
    const borrower = track(h.pool.acquire());
    await h.clock.advance(10);
    h.pool.markBroken(h.driver.openedHandles[0]!);
    await h.clock.advance(90);
    expect(borrower.status).toBe("resolved");
    expect(borrower.value!.connection.handle!.id).toBe(2);
    expect(h.driver.closedIds).toEqual([1]);
  });
});
