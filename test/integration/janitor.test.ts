import { runDurableObjectAlarm } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import { createPool, getConnection } from "../../src/index.ts";
import { configure, observer, pidOf, serverCount, serverPids, sleep, tenantName, testEnv, until } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());


describe("the janitor (alarm)", () => {
  it("idle reaping through the alarm lowers the server's connection count", async () => {
    const tenant = tenantName("idle");
    // Long enough that the coordinator's own alarm cannot reap them before they are counted on a loaded machine.
    const stub = await configure(tenant, { maxConnections: 3, idleTimeoutMs: 2_000 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    await Promise.all([1, 2, 3].map(() => db.sql`select pg_sleep(0.05)`));
    // A connection may still be authenticating (no application_name yet) when the queries are answered.
    expect(await until(() => serverCount(sql, tenant), (n) => n === 3)).toBe(3);
    await sleep(2_100);
    await runDurableObjectAlarm(stub);
    expect(await until(() => serverCount(sql, tenant), (n) => n === 0)).toBe(0);
    expect((await db.stats()).closed).toMatchObject({ "idle-timeout": 3 });
  });

  it("max lifetime rotates connections: the backend pid changes after the lifetime", async () => {
    const tenant = tenantName("lifetime");
    const stub = await configure(tenant, { maxConnections: 1, maxLifetimeMs: 400, validateAfterIdleMs: 60_000 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const first = await pidOf(db);
    expect(await pidOf(db)).toBe(first);
    await sleep(450);
    await runDurableObjectAlarm(stub);
    await until(() => serverPids(sql, tenant), (pids) => !pids.includes(first));
    const second = await pidOf(db);
    expect(second).not.toBe(first);
    expect(await serverPids(sql, tenant)).toEqual([second]);
  });

  it("a leased connection past its lifetime is retired only when returned", async () => {
    const tenant = tenantName("lifetime-leased");
    const stub = await configure(tenant, { maxConnections: 1, maxLifetimeMs: 300 });
    const conn = await getConnection(testEnv.EDGEPOOL, { tenant });
    await sleep(400);
    await runDurableObjectAlarm(stub);
    await sleep(50);
    expect(await serverPids(sql, tenant)).toEqual([conn.pid]); // still in use, untouched
    const [row] = await conn.sql<{ pid: number }>`select pg_backend_pid() as pid`;
    expect(row!.pid).toBe(conn.pid);
    await conn.release();
    expect(await until(() => serverPids(sql, tenant), (p) => p.length === 0)).toEqual([]);
  });

  it("lifetime retirements are spaced maxLifetimeMs / maxConnections apart", async () => {
    const tenant = tenantName("lifetime-spaced");
    // Spacing = 3000 / 2 = 1500ms.
    const stub = await configure(tenant, { maxConnections: 2, maxLifetimeMs: 3_000, validateAfterIdleMs: 60_000 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    await Promise.all([1, 2].map(() => db.sql`select pg_sleep(0.05)`));
    const original = await serverPids(sql, tenant);
    expect(original).toHaveLength(2);
    await sleep(3_050); // both are past their lifetime now
    await runDurableObjectAlarm(stub);
    await sleep(100);
    const afterFirst = (await serverPids(sql, tenant)).filter((p) => original.includes(p));
    expect(afterFirst).toHaveLength(1); // one retired, the other waits for its slot
    await runDurableObjectAlarm(stub);
    await sleep(100);
    expect((await serverPids(sql, tenant)).filter((p) => original.includes(p))).toHaveLength(1);
    await sleep(1_400);
    await runDurableObjectAlarm(stub);
    expect(await until(async () => (await serverPids(sql, tenant)).filter((p) => original.includes(p)), (p) => p.length === 0)).toEqual([]);
  });

  it("maxUses retires a connection after that many queries", async () => {
    const tenant = tenantName("max-uses");
    await configure(tenant, { maxConnections: 1, maxUses: 3 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const pids: number[] = [];
    for (let i = 0; i < 7; i++) pids.push(await pidOf(db));
    expect(pids[0]).toBe(pids[1]);
    expect(pids[1]).toBe(pids[2]);
    expect(pids[3]).not.toBe(pids[2]);
    expect(pids[3]).toBe(pids[5]);
    expect(pids[6]).not.toBe(pids[5]);
    expect(new Set(pids).size).toBe(3);
    expect(await serverCount(sql, tenant)).toBeLessThanOrEqual(1);
  });

  it("reuseCooldownMs: a returned connection is not handed out again before the delay", async () => {
    const tenant = tenantName("cooldown");
    await configure(tenant, { maxConnections: 1, reuseCooldownMs: 400 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const first = await pidOf(db);
    const started = Date.now();
    const second = await pidOf(db);
    expect(second).toBe(first); // the same server connection ...
    expect(Date.now() - started).toBeGreaterThanOrEqual(380); // ... only after the cooldown
    // With room to grow, a second connection opens instead of waiting.
    const wide = tenantName("cooldown-wide");
    await configure(wide, { maxConnections: 2, reuseCooldownMs: 5_000 });
    const db2 = createPool(testEnv.EDGEPOOL, { tenant: wide });
    const a = await pidOf(db2);
    const b = await pidOf(db2);
    expect(b).not.toBe(a);
  });
});
