import pg from "pg";
import postgres from "postgres";
import { afterAll, describe, expect, it } from "vitest";
import { encodeQuery } from "../../src/codec.ts";
import { createPool, pgOptions, postgresOptions } from "../../src/index.ts";
import { ADMIN_TOKEN, http, observer, putTenant, tenantName, testEnv, until } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

/** Server connections per shard of a tenant (`edgepool:<tenant>` is shard 0, `edgepool:<tenant>#<i>` shard i), read from pg_stat_activity. */
async function perShard(tenant: string): Promise<Map<number, number>> {
  const rows = await sql<{ name: string; n: number }[]>`
    select application_name as name, count(*)::int as n from pg_stat_activity
    where application_name = ${`edgepool:${tenant}`} or application_name like ${`edgepool:${tenant}#%`}
    group by application_name`;
  return new Map(rows.map((r) => [r.name.includes("#") ? Number(r.name.split("#")[1]) : 0, r.n]));
}

/**
 * The test Worker's namespace under another object: clients of it get a
 * router of their own (routers are kept per namespace object), so what they
 * believe about the shard count is what they last heard, like another isolate's.
 */
function isolate() {
  const ns = testEnv.EDGEPOOL;
  return { idFromName: (name: string) => ns.idFromName(name), get: (id: DurableObjectId) => ns.get(id) } as unknown as typeof ns;
}

/** Sessions sent at once by a client that still believes in the shards it last heard of: one-shots, leases and postgres.js sessions; answers the errors. */
async function burst(target: ReturnType<typeof isolate>, tenant: string): Promise<{ ok: number; errors: string[] }> {
  const db = createPool(target, { tenant, acquireTimeoutMs: 30_000 });
  const results = await Promise.allSettled([
    ...Array.from({ length: 24 }, () => db.sql`select 1 as one`),
    ...Array.from({ length: 8 }, () => db.begin((tx) => tx.sql`select 1 as one`)),
    ...Array.from({ length: 8 }, async () => {
      const one = postgres(postgresOptions(target, { tenant, onnotice: () => {} }));
      try {
        return await one`select 1 as one`;
      } finally {
        await one.end();
      }
    }),
  ]);
  const errors = results.filter((r) => r.status === "rejected").map((r) => `stale client: ${String((r as PromiseRejectedResult).reason)}`);
  return { ok: results.length - errors.length, errors };
}

const sum = (m: Map<number, number>) => [...m.values()].reduce((a, b) => a + b, 0);

/** Samples `perShard(tenant)` about every 20 ms until `stop()`; answers the samples with when each was taken. */
function sampler(tenant: string) {
  const samples: { at: number; shards: Map<number, number> }[] = [];
  let running = true;
  const done = (async () => {
    while (running) {
      const started = Date.now();
      samples.push({ at: started, shards: await perShard(tenant) });
      const left = 20 - (Date.now() - started);
      if (left > 0) await new Promise((r) => setTimeout(r, left));
    }
  })();
  return { samples, stop: async () => ((running = false), await done, samples) };
}

async function putBudget(name: string, body: Record<string, unknown>) {
  const answer = await http("PUT", `/v1/budgets/${name}`, { token: ADMIN_TOKEN, body });
  expect(answer.status, answer.text).toBe(200);
}

/**
 * Clients that run until `stop()`, each counting its queries and its errors:
 * built-in one-shots, leases with a short transaction, a long-lived
 * postgres.js instance, postgres.js instances of one query each (a Worker's
 * request), and a pg client (transaction mode).
 */
function load(tenant: string) {
  const db = createPool(testEnv.EDGEPOOL, { tenant, acquireTimeoutMs: 30_000 });
  const counts = { oneShots: 0, leases: 0, postgresJs: 0, perRequest: 0, pg: 0, pinned: 0 };
  const errors: string[] = [];
  let running = true;
  const loop = async (kind: keyof typeof counts, once: () => Promise<unknown>) => {
    while (running) {
      try {
        await once();
        counts[kind]++;
      } catch (error) {
        errors.push(`${kind}: ${String(error)}`);
      }
    }
  };
  const pj = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, max: 2, onnotice: () => {} }));
  const pgClient = new pg.Client(pgOptions(testEnv.EDGEPOOL, { tenant }));
  const clients = (async () => {
    await pgClient.connect();
    return Promise.all([
      ...Array.from({ length: 12 }, () => loop("oneShots", () => db.sql`select pg_sleep(0.01), 1 as one`)),
      ...Array.from({ length: 3 }, () => loop("leases", () => db.begin(async (tx) => {
        await tx.sql`select pg_sleep(0.005)`;
        await tx.sql`select 1 as one`;
      }))),
      ...Array.from({ length: 2 }, () => loop("postgresJs", () => pj`select pg_sleep(0.01), 1 as one`)),
      ...Array.from({ length: 2 }, () => loop("perRequest", async () => {
        const one = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, onnotice: () => {} }));
        try {
          await one`select 1 as one`;
        } finally {
          await one.end();
        }
      })),
      loop("pg", () => pgClient.query("select pg_sleep(0.01), 1 as one")),
    ]);
  })().catch((error: unknown) => errors.push(`setup: ${String(error)}`));
  /** A pg client whose session is on this shard's object (no routing): it queries until `stop()`. */
  let pinned: Promise<unknown> = Promise.resolve();
  const pin = async (shard: number) => {
    const client = new pg.Client(pgOptions(testEnv.EDGEPOOL.get(testEnv.EDGEPOOL.idFromName(`${tenant}#${shard}`)), { tenant }));
    await client.connect();
    pinned = loop("pinned", () => client.query("select pg_sleep(0.01), 1 as one")).finally(() => client.end());
  };
  return {
    counts,
    errors,
    pin,
    total: () => Object.values(counts).reduce((a, b) => a + b, 0),
    stop: async () => {
      running = false;
      await clients;
      await pinned;
      await pj.end();
      await pgClient.end();
    },
  };
}

describe("changing shards at run time", () => {
  it.each([
    { budgeted: true, bound: 8, name: "in a budget of 8: the server never shows more than 8" },
    // Without a budget nothing links the pools of a change: old ones drain while new ones open (README, Shards: "Changing shards").
    { budgeted: false, bound: 16, name: "without a budget: the server never shows more than the old plus the new maxConnections (16)" },
  ])("shards 2 -> 4 -> 2 under load, maxConnections 8, $name; no query fails, the new shards serve, the removed ones end with 0", async ({ budgeted, bound }) => {
    const tenant = tenantName("shard-change");
    const budget = budgeted ? `${tenant}-b` : undefined;
    if (budget) await putBudget(budget, { maxConnections: 8 });
    const config = (shards: number) => ({ connectionString: testEnv.DATABASE_URL, maxConnections: 8, shards, ...(budget ? { budget } : {}), acquireTimeoutMs: 30_000 });
    expect((await putTenant(tenant, config(2))).status).toBe(200);
    // The first answer tells this isolate the tenant has 2 shards.
    await createPool(testEnv.EDGEPOOL, { tenant }).sql`select 1`;

    const watch = sampler(tenant);
    const work = load(tenant);
    /** Lets the load run at least `ms` and at least 100 more queries. */
    const run = async (ms: number) => {
      const from = work.total();
      const end = Date.now() + ms;
      await until(async () => work.total(), (n) => n >= from + 100 && Date.now() >= end, ms + 15_000);
    };
    await run(1_000);

    const grownAt = Date.now();
    const grown = await putTenant(tenant, config(4));
    expect(grown.status, grown.text).toBe(200);
    // The new shards serve sessions (their connections show on the server).
    // A driver session on shard 3 that stays open through the change back to 2 shards.
    await work.pin(3);
    // Another isolate's client hears of 4 shards now, and sends nothing until after the change back to 2.
    const stale = isolate();
    await createPool(stale, { tenant }).sql`select 1`;
    const served = await until(async () => watch.samples.filter((s) => s.at >= grownAt), (s) => [2, 3].every((i) => s.some((x) => (x.shards.get(i) ?? 0) > 0)), 15_000);
    await run(1_500);

    const shrunkAt = Date.now();
    const shrunk = await putTenant(tenant, config(2));
    expect(shrunk.status, shrunk.text).toBe(200);
    const pinnedAtShrink = work.counts.pinned;
    const staleBurst = await burst(stale, tenant);
    await run(1_500);
    // Shard 2 (no session stays on it) drains while the load goes on; shard 3 keeps the pinned session's.
    const drained = await until(() => perShard(tenant), (m) => (m.get(2) ?? 0) === 0, 15_000);
    const drainedAfterMs = Date.now() - shrunkAt;
    const pinnedAfterShrink = work.counts.pinned - pinnedAtShrink;
    // Straight to the retired shard 2 (a client that picked it): a one-shot is refused with POOL_CLOSED and the new count (the routed client retries on a shard that stays);
    // a driver's new session is handed to a shard that stays.
    const retired = testEnv.EDGEPOOL.get(testEnv.EDGEPOOL.idFromName(`${tenant}#2`));
    const refused = await retired.run(tenant, encodeQuery("select 1"));
    // A remote session's upgrade (what the /connect route forwards) is refused before it opens, with the new count for the route.
    const upgrade = await retired.fetch(new Request("http://shard/connect", { headers: { Upgrade: "websocket", "X-Edgepool-Tenant": tenant, "X-Edgepool-Mode": "transaction" } }));
    const upgradeHint = JSON.parse(upgrade.headers.get("X-Edgepool-Hint") ?? "null");
    const upgradeError = ((await upgrade.json()) as { error: { code: string } }).error;
    const driver = new pg.Client(pgOptions(retired, { tenant }));
    await driver.connect();
    const servedBy = (await driver.query<{ app: string }>("select current_setting('application_name') as app")).rows[0]!.app;
    await driver.end();
    await work.stop();
    // The removed shards close their connections once their last sessions ended.
    const removed = await until(() => perShard(tenant), (m) => (m.get(2) ?? 0) + (m.get(3) ?? 0) === 0, 15_000);
    const samples = await watch.stop();

    const peak = Math.max(...samples.map((s) => sum(s.shards)));
    const peakPerShard = [0, 1, 2, 3].map((i) => Math.max(0, ...samples.map((s) => s.shards.get(i) ?? 0)));
    console.info(`shard change 2->4->2 ${budget ? "in a budget of 8" : "without a budget"}: ${work.total()} queries (${JSON.stringify(work.counts)}), ${work.errors.length} errors, a stale client's burst of 40 right after the change back: ${staleBurst.ok} ok, ${staleBurst.errors.length} errors; ${samples.length} samples, peak ${peak} on the server (per shard ${JSON.stringify(peakPerShard)}); grow took ${shrunkAt - grownAt} ms before the shrink; after it shard 2 showed 0 by ${drainedAfterMs} ms (first checked after 1.5 s more load) and the session pinned to shard 3 ran ${pinnedAfterShrink} more queries`);
    expect([...work.errors, ...staleBurst.errors]).toEqual([]);
    expect(staleBurst.ok).toBe(40);
    for (const n of Object.values(work.counts)) expect(n).toBeGreaterThan(0);
    expect(samples.length).toBeGreaterThan(20);
    expect(peak).toBeLessThanOrEqual(bound);
    expect([2, 3].every((i) => served.some((x) => (x.shards.get(i) ?? 0) > 0))).toBe(true);
    expect(drained.get(2) ?? 0).toBe(0);
    expect(refused).toMatchObject({ ok: false, error: { code: "POOL_CLOSED" }, hint: { shards: 2 } });
    expect(upgrade.status).not.toBe(101);
    expect(upgradeError.code).toBe("POOL_CLOSED");
    expect(upgradeHint).toMatchObject({ shards: 2 });
    expect([`edgepool:${tenant}`, `edgepool:${tenant}#1`]).toContain(servedBy);
    expect(pinnedAfterShrink).toBeGreaterThan(0);
    expect((removed.get(2) ?? 0) + (removed.get(3) ?? 0)).toBe(0);
  }, 90_000);
});

describe("budgets with sharded tenants", () => {
  it("4 tenants x shards 2 x maxConnections 10 in a budget of 12: the server never shows more than 12 for them, every tenant completes its work, each shard is a holder of its own", async () => {
    const budget = tenantName("bud-shards");
    await putBudget(budget, { maxConnections: 12 });
    const prefix = `${budget}-t`;
    const tenants = Array.from({ length: 4 }, (_, i) => `${prefix}${i}`);
    for (const t of tenants) expect((await putTenant(t, { connectionString: testEnv.DATABASE_URL, maxConnections: 10, shards: 2, budget, acquireTimeoutMs: 30_000 })).status).toBe(200);
    // Each client learns its tenant's 2 shards from a first answer.
    const dbs = tenants.map((tenant) => createPool(testEnv.EDGEPOOL, { tenant, acquireTimeoutMs: 30_000 }));
    await Promise.all(dbs.map((db) => db.sql`select 1`));

    const samples: number[] = [];
    const holders = new Set<string>();
    let mostHolders = 0;
    let running = true;
    const onServer = async () => {
      const [row] = await sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where application_name like ${`edgepool:${prefix}%`}`;
      return row!.n;
    };
    const sampling = (async () => {
      while (running) {
        const started = Date.now();
        samples.push(await onServer());
        const view = (await http("GET", `/v1/budgets/${budget}`, { token: ADMIN_TOKEN })).json as { holders: { tenant: string; shard: number }[] };
        mostHolders = Math.max(mostHolders, view.holders.length);
        for (const h of view.holders) holders.add(`${h.tenant}#${h.shard}`);
        const left = 20 - (Date.now() - started);
        if (left > 0) await new Promise((r) => setTimeout(r, left));
      }
    })();
    const started = Date.now();
    const errors: string[] = [];
    const done = await Promise.all(dbs.map(async (db) => {
      let ok = 0;
      await Promise.all(Array.from({ length: 10 }, async () => {
        for (let r = 0; r < 4; r++) {
          try {
            await db.sql`select pg_sleep(0.05)`;
            ok++;
          } catch (error) {
            errors.push(String(error));
          }
        }
      }));
      return ok;
    }));
    const elapsed = Date.now() - started;
    running = false;
    await sampling;

    const peak = Math.max(...samples);
    console.info(`budget 12, 4 tenants x 2 shards x maxConnections 10: ${done.reduce((a, b) => a + b, 0)} queries in ${elapsed} ms, ${errors.length} errors; ${samples.length} server samples, peak ${peak}; ${holders.size} distinct holders (tenant#shard), at most ${mostHolders} at once`);
    expect(errors).toEqual([]);
    expect(done).toEqual(tenants.map(() => 40));
    expect(samples.length).toBeGreaterThan(10);
    expect(peak).toBeLessThanOrEqual(12);
    // The budget was the limit, not a quiet run.
    expect(peak).toBeGreaterThan(10);
    expect(holders).toEqual(new Set(tenants.flatMap((t) => [`${t}#0`, `${t}#1`])));
  }, 60_000);
});
