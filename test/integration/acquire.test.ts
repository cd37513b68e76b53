import { afterAll, describe, expect, it } from "vitest";
import { createPool, getConnection, PoolError } from "../../src/index.ts";
import { encodeQuery } from "../../src/codec.ts";
import { configure, observer, serverCount, tenantName, testEnv, until } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

describe("the wait queue", () => {
  it("serves waiters in arrival order", async () => {
    const tenant = tenantName("fifo");
    await configure(tenant, { maxConnections: 1 });
    const holder = await getConnection(testEnv.EDGEPOOL, { tenant });
    const order: string[] = [];
    const waiters = ["a", "b", "c", "d"].map(async (name, i) => {
      await new Promise((r) => setTimeout(r, i * 30)); // arrive in this order
      const conn = await getConnection(testEnv.EDGEPOOL, { tenant, acquireTimeoutMs: 5_000 });
      const [row] = await conn.sql<{ pid: number }>`select pg_backend_pid() as pid`;
      order.push(`${name}:${row!.pid}`);
      await conn.release();
    });
    await new Promise((r) => setTimeout(r, 200));
    await holder.release();
    await Promise.all(waiters);
    expect(order.map((o) => o.split(":")[0])).toEqual(["a", "b", "c", "d"]);
    // One server connection served everybody, one after the other.
    expect(new Set(order.map((o) => o.split(":")[1]))).toEqual(new Set([String(holder.pid)]));
    expect(await serverCount(sql, tenant)).toBe(1);
  });

  it("ACQUIRE_TIMEOUT after acquireTimeoutMs, with the pool's counters in the message", async () => {
    const tenant = tenantName("timeout");
    await configure(tenant, { maxConnections: 2, acquireTimeoutMs: 300, initialConnections: 2 });
    await until(() => serverCount(sql, tenant), (n) => n === 2); // both open before anyone waits
    const a = await getConnection(testEnv.EDGEPOOL, { tenant });
    const b = await getConnection(testEnv.EDGEPOOL, { tenant });
    const started = Date.now();
    const error = await getConnection(testEnv.EDGEPOOL, { tenant }).catch((e: unknown) => e);
    const waited = Date.now() - started;
    expect(error).toBeInstanceOf(PoolError);
    expect((error as PoolError).code).toBe("ACQUIRE_TIMEOUT");
    expect((error as PoolError).message).toMatch(/^ACQUIRE_TIMEOUT: tenant ".*" had no free connection after 300ms \(max=2, total=2, leased=2, idle=0, opening=0, waiting=1\)/);
    expect(waited).toBeGreaterThanOrEqual(290);
    expect(waited).toBeLessThan(2_000);
    // The per-call override wins over the pool's option.
    const quick = Date.now();
    const again = await getConnection(testEnv.EDGEPOOL, { tenant, acquireTimeoutMs: 50 }).catch((e: PoolError) => e);
    expect((again as PoolError).message).toContain("after 50ms");
    expect(Date.now() - quick).toBeLessThan(290);
    expect(await serverCount(sql, tenant)).toBe(2);
    await a.release();
    await b.release();
  });

  it("WAIT_QUEUE_FULL at once beyond maxWaiters", async () => {
    const tenant = tenantName("queue");
    await configure(tenant, { maxConnections: 1, maxWaiters: 2, acquireTimeoutMs: 3_000 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const holder = await db.getConnection();
    const queued = [db.sql`select 1`, db.sql`select 2`];
    await new Promise((r) => setTimeout(r, 50));
    const started = Date.now();
    const error = await db.sql`select 3`.catch((e: PoolError) => e);
    expect((error as PoolError).code).toBe("WAIT_QUEUE_FULL");
    expect((error as PoolError).message).toContain("2 borrowers already wait (maxWaiters=2)");
    expect(Date.now() - started).toBeLessThan(200);
    await holder.release();
    // The queued ones lost nothing.
    const rows = await Promise.all(queued);
    expect(rows.map((r) => r.count)).toEqual([1, 1]);
  });

  it("a one-shot refused with WAIT_QUEUE_FULL is refused as a call (ok: false), not answered: nothing of it ran, so a sharded client sends it to another shard", async () => {
    const tenant = tenantName("queue-call");
    const stub = await configure(tenant, { maxConnections: 1, maxWaiters: 0 });
    const holder = await getConnection(testEnv.EDGEPOOL, { tenant });
    const reply = await stub.run(tenant, encodeQuery("select 1"));
    expect(reply).toMatchObject({ ok: false, error: { kind: "pool", code: "WAIT_QUEUE_FULL" } });
    // The built-in client throws the same error as before.
    const error = await createPool(testEnv.EDGEPOOL, { tenant }).sql`select 1`.catch((e: PoolError) => e);
    expect(error).toMatchObject({ code: "WAIT_QUEUE_FULL" });
    await holder.release();
  });

  it("maxConnections 0 disables the pool: every acquire fails with POOL_DISABLED and no connection opens", async () => {
    const tenant = tenantName("disabled");
    await configure(tenant, { maxConnections: 0, initialConnections: 3 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    await expect(db.sql`select 1`).rejects.toMatchObject({ code: "POOL_DISABLED" });
    await expect(db.getConnection()).rejects.toMatchObject({ code: "POOL_DISABLED", tenant });
    expect(await serverCount(sql, tenant)).toBe(0);
  });
});
