import postgres from "postgres";
import { afterAll, describe, expect, it } from "vitest";
import { createPool, postgresOptions } from "../../src/index.ts";
import { ADMIN_TOKEN, http, observer, putTenant, tenantName, testEnv } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

/** Server connections per application_name of a tenant's shards (`edgepool:<tenant>`, `edgepool:<tenant>#<i>`). */
async function perShard(tenant: string): Promise<Map<string, number>> {
  const rows = await sql<{ name: string; n: number }[]>`
    select application_name as name, count(*)::int as n from pg_stat_activity
    where application_name = ${`edgepool:${tenant}`} or application_name like ${`edgepool:${tenant}#%`}
    group by application_name`;
  return new Map(rows.map((r) => [r.name, r.n]));
}

describe("shards per tenant", () => {
  it("shards and locationHint are validated like every option (INVALID_OPTION) and shown by GET /v1/tenants/:tenant", async () => {
    const tenant = tenantName("shard-opt");
    const put = (options: Record<string, unknown>) => putTenant(tenant, { connectionString: testEnv.DATABASE_URL, ...options });
    for (const [options, message] of [
      [{ shards: 0 }, /option "shards" = 0 must be an integer from 1 to 64/],
      [{ shards: 65, maxConnections: 100 }, /option "shards" = 65/],
      [{ shards: 4, maxConnections: 3 }, /option "shards" = 4 must not exceed maxConnections \(3\)/],
      [{ locationHint: "mars" }, /option "locationHint" = "mars" must be one of wnam, enam, sam, weur, eeur, apac, oc, afr, me/],
    ] as const) {
      const answer = await put(options);
      expect(answer.status, answer.text).toBe(400);
      expect(answer.json.error).toMatchObject({ code: "INVALID_OPTION" });
      expect(answer.json.error.message).toMatch(message);
    }
    expect((await put({ shards: 4, maxConnections: 8, locationHint: "weur" })).status).toBe(200);
    const shown = await http("GET", `/v1/tenants/${tenant}`, { token: ADMIN_TOKEN });
    expect(shown.json.options).toMatchObject({ shards: 4, maxConnections: 8, locationHint: "weur" });
  });

  it("shards: 4, maxConnections: 8 — 200 concurrent sessions all succeed; the server never shows more than 8 for the tenant nor more than 2 per shard", async () => {
    const tenant = tenantName("shard-load");
    expect((await putTenant(tenant, { connectionString: testEnv.DATABASE_URL, shards: 4, maxConnections: 8, acquireTimeoutMs: 30_000 })).status).toBe(200);
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    // The first answer (from shard 0) tells this isolate the tenant has 4 shards.
    await db.sql`select 1`;

    const samples: Map<string, number>[] = [];
    let running = true;
    const sampling = (async () => {
      while (running) samples.push(await perShard(tenant));
    })();
    const oneShots = Array.from({ length: 170 }, async () => (await db.sql`select pg_sleep(0.02), 1 as one`).length);
    const drivers = Array.from({ length: 30 }, async () => {
      const client = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, onnotice: () => {} }));
      try {
        return (await client`select pg_sleep(0.02), 1 as one`).length;
      } finally {
        await client.end();
      }
    });
    const results = await Promise.allSettled([...oneShots, ...drivers]);
    running = false;
    await sampling;

    const failed = results.filter((r) => r.status === "rejected");
    expect(failed.map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
    expect(results.filter((r) => r.status === "fulfilled" && r.value === 1)).toHaveLength(200);
    const totals = samples.map((s) => [...s.values()].reduce((a, b) => a + b, 0));
    const perShardMax = Math.max(...samples.flatMap((s) => [...s.values()]));
    const shardsSeen = new Set(samples.flatMap((s) => [...s.keys()]));
    console.log(`shards: ${samples.length} samples, peak ${Math.max(...totals)} for the tenant, peak ${perShardMax} per shard, shards seen: ${[...shardsSeen].sort().join(", ")}`);
    expect(samples.length).toBeGreaterThan(5);
    expect(Math.max(...totals)).toBeLessThanOrEqual(8);
    expect(perShardMax).toBeLessThanOrEqual(2);
    expect(shardsSeen).toEqual(new Set([0, 1, 2, 3].map((i) => `edgepool:${tenant}${i > 0 ? `#${i}` : ""}`)));

    // stats() sums the shards and lists each.
    const stats = (await db.stats()) as { maxConnections: number; acquired: number; shards: { shard: number; maxConnections: number; acquired: number }[] };
    expect(stats.maxConnections).toBe(8);
    expect(stats.shards.map((s) => [s.shard, s.maxConnections])).toEqual([[0, 2], [1, 2], [2, 2], [3, 2]]);
    expect(stats.acquired).toBe(stats.shards.reduce((a, s) => a + s.acquired, 0));
    for (const s of stats.shards) expect(s.acquired).toBeGreaterThan(0);
  }, 40_000);
});
