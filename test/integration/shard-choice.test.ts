import { afterAll, describe, expect, it } from "vitest";
import { createPool } from "../../src/index.ts";
import type { CoordinatorApi } from "../../src/protocol.ts";
import { observer, putTenant, tenantName, testEnv } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

describe("power of two choices across shards", () => {
  it("with one shard made slow (its connections held by pg_sleep), new sessions move to the other shards", async () => {
    const tenant = tenantName("shard-p2c");
    expect((await putTenant(tenant, { connectionString: testEnv.DATABASE_URL, shards: 4, maxConnections: 8, acquireTimeoutMs: 30_000 })).status).toBe(200);
    const slow = 1;
    // Straight to shard 1's object (a stub is not a namespace, so no routing): two leases hold its two connections in pg_sleep.
    const onSlow = createPool(testEnv.EDGEPOOL.get(testEnv.EDGEPOOL.idFromName(`${tenant}#${slow}`)) as unknown as CoordinatorApi, { tenant });
    const leases = [await onSlow.getConnection(), await onSlow.getConnection()];
    const held = leases.map(async (l) => {
      await l.sql`select pg_sleep(2.5)`;
      await l.release();
    });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    await db.sql`select 1`;

    const served = new Map<string, number>();
    const until = Date.now() + 1_500;
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (Date.now() < until) {
        const [row] = await db.sql<{ app: string }>`select current_setting('application_name') as app, pg_sleep(0.01)`;
        served.set(row!.app, (served.get(row!.app) ?? 0) + 1);
      }
    }));
    await Promise.all(held);
    const total = [...served.values()].reduce((a, b) => a + b, 0);
    const name = (i: number) => `edgepool:${tenant}${i > 0 ? `#${i}` : ""}`;
    const spread = [0, 1, 2, 3].map((i) => served.get(name(i)) ?? 0);
    // Sessions sent to the slow shard before its load showed stay there until its leases end; the others go on elsewhere.
    console.log(`shard choice: ${total} one-shots from 16 workers in 1.5 s; per shard ${JSON.stringify(spread)} (shard ${slow} slow)`);
    expect(spread[slow]! / total).toBeLessThan(0.1);
    for (const i of [0, 2, 3]) expect(spread[i]! / total).toBeGreaterThan(0.2);
  }, 30_000);
});
