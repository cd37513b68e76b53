import { runInDurableObject } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import { createPool, type PoolError } from "../../src/index.ts";
import { observer, putTenant, tenantName, testEnv } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

describe("shard fault isolation", () => {
  it("one shard's Durable Object is aborted: only the leases on that shard fail (LEASE_LOST); new sessions all succeed", async () => {
    const tenant = tenantName("shard-fault");
    expect((await putTenant(tenant, { connectionString: testEnv.DATABASE_URL, shards: 4, maxConnections: 40, acquireTimeoutMs: 10_000 })).status).toBe(200);
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    await db.sql`select 1`;
    const leases = [];
    for (let i = 0; i < 12; i++) leases.push(await db.getConnection());
    const rows = await sql<{ pid: number; name: string }[]>`select pid, application_name as name from pg_stat_activity where pid in ${sql(leases.map((l) => l.pid))}`;
    const shardOf = new Map(rows.map((r) => [r.pid, r.name.endsWith(tenant) ? 0 : Number(r.name.split("#")[1])]));
    const victim = 1;
    const onVictim = leases.filter((l) => shardOf.get(l.pid) === victim).length;
    expect(onVictim, `leases per shard: ${JSON.stringify([...shardOf.values()])}`).toBeGreaterThan(0);

    const stub = testEnv.EDGEPOOL.get(testEnv.EDGEPOOL.idFromName(`${tenant}#${victim}`));
    await runInDurableObject(stub, (_instance, state) => state.abort("test: shard aborted")).catch(() => {});

    const after = await Promise.allSettled(leases.map(async (l) => (await l.sql`select 1 as one`)[0]));
    const failedShards = leases.filter((_, i) => after[i]!.status === "rejected").map((l) => shardOf.get(l.pid));
    const codes = after.filter((r) => r.status === "rejected").map((r) => ((r as PromiseRejectedResult).reason as PoolError).code);
    console.log(`shard fault: ${failedShards.length} of ${leases.length} leases failed (${onVictim} were on the aborted shard ${victim})`);
    expect(failedShards).toEqual(Array(onVictim).fill(victim));
    expect(new Set(codes)).toEqual(new Set(["LEASE_LOST"]));
    await Promise.allSettled(leases.map((l) => l.release()));

    // New sessions right away: none fails (the shard restarts from its stored config, or the others take them).
    const fresh = await Promise.allSettled(Array.from({ length: 60 }, () => db.sql`select 1 as one`));
    expect(fresh.filter((r) => r.status === "rejected").map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
  }, 30_000);
});
