import { runDurableObjectAlarm } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import { createPool } from "../../src/index.ts";
import { configure, observer, serverCount, sleep, tenantName, testEnv, until } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());
const count = (tenant: string) => () => serverCount(sql, tenant);

/** Holds `n` leases at once, then releases them all. */
async function demand(tenant: string, n: number): Promise<void> {
  const db = createPool(testEnv.EDGEPOOL, { tenant });
  const conns = await Promise.all(Array.from({ length: n }, () => db.getConnection()));
  await Promise.all(conns.map((c) => c.release()));
}

describe("pool size rules", () => {
  it("initialConnections above maxConnections opens only maxConnections when the coordinator starts", async () => {
    const tenant = tenantName("initial-max");
    await configure(tenant, { maxConnections: 3, initialConnections: 8 });
    expect(await until(count(tenant), (n) => n === 3)).toBe(3);
    await sleep(300);
    expect(await serverCount(sql, tenant)).toBe(3);
  });

  it("initialConnections below minConnections opens only the initial ones, grows to the minimum with demand and never shrinks below it", async () => {
    const tenant = tenantName("initial-min");
    const stub = await configure(tenant, { maxConnections: 6, minConnections: 4, initialConnections: 2, idleTimeoutMs: 800 });
    expect(await until(count(tenant), (n) => n === 2)).toBe(2);
    await sleep(200);
    expect(await serverCount(sql, tenant)).toBe(2); // not filled eagerly
    await demand(tenant, 5);
    expect(await serverCount(sql, tenant)).toBe(5);
    await sleep(900);
    await runDurableObjectAlarm(stub);
    // Idle reaping went down to the reached minimum and no further.
    expect(await until(count(tenant), (n) => n === 4)).toBe(4);
    await sleep(900);
    await runDurableObjectAlarm(stub);
    expect(await serverCount(sql, tenant)).toBe(4);
  });

  it("a minimum that was never reached is not filled: 2 of minConnections 10 stay 2, and are reaped", async () => {
    const tenant = tenantName("min-unreached");
    const stub = await configure(tenant, { maxConnections: 10, minConnections: 10, idleTimeoutMs: 100 });
    await demand(tenant, 2);
    expect(await serverCount(sql, tenant)).toBe(2);
    await sleep(200);
    await runDurableObjectAlarm(stub);
    expect(await until(count(tenant), (n) => n === 0)).toBe(0);
  });

  it("minIdle opens idle connections ahead of demand, within maxConnections", async () => {
    const tenant = tenantName("min-idle");
    await configure(tenant, { maxConnections: 3, minIdle: 2 });
    expect(await until(count(tenant), (n) => n === 2)).toBe(2);
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const a = await db.getConnection();
    // One idle was taken: another opens to keep two idle (3 in all = max).
    expect(await until(count(tenant), (n) => n === 3)).toBe(3);
    const b = await db.getConnection();
    const c = await db.getConnection();
    await sleep(200);
    expect(await serverCount(sql, tenant)).toBe(3); // never above max
    await Promise.all([a, b, c].map((x) => x.release()));
  });

  it("maxIdle closes idle connections beyond it when they are returned", async () => {
    const tenant = tenantName("max-idle");
    await configure(tenant, { maxConnections: 4, maxIdle: 1 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const conns = await Promise.all(Array.from({ length: 4 }, () => db.getConnection()));
    expect(await serverCount(sql, tenant)).toBe(4);
    await Promise.all(conns.map((c) => c.release()));
    expect(await until(count(tenant), (n) => n === 1)).toBe(1);
  });
});
