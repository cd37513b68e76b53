import { runInDurableObject } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import { createPool, type PoolError } from "../../src/index.ts";
import { observer, putTenant, sleep, tenantName, testEnv } from "./helpers.ts";

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

  it("while clients run: only sessions on the aborted shard fail, all LEASE_LOST; the others keep serving, and the shard serves again once it is back", async () => {
    const tenant = tenantName("shard-fault-live");
    expect((await putTenant(tenant, { connectionString: testEnv.DATABASE_URL, shards: 4, maxConnections: 16, acquireTimeoutMs: 10_000 })).status).toBe(200);
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const victim = 2;
    // Which shard served: its server connections' application_name ends with "#i" (shard 0: none).
    const shardOf = (app: string) => (app.endsWith(tenant) ? 0 : Number(app.split("#")[1]));
    type Outcome = { at: number; shard?: number; code?: string };
    const outcomes: Outcome[] = [];
    let abortedAt = Number.POSITIVE_INFINITY;
    let running = true;
    const started = Date.now();
    const worker = async (lease: boolean) => {
      while (running) {
        const at = Date.now();
        try {
          if (lease) {
            const conn = await db.getConnection();
            try {
              const [row] = await conn.begin((tx) => tx.sql<{ app: string }>`select current_setting('application_name') as app, pg_sleep(0.02)`);
              outcomes.push({ at, shard: shardOf(row!.app) });
            } finally {
              await conn.release().catch(() => {});
            }
          } else {
            const [row] = await db.sql<{ app: string }>`select current_setting('application_name') as app, pg_sleep(0.005)`;
            outcomes.push({ at, shard: shardOf(row!.app) });
          }
        } catch (error) {
          outcomes.push({ at, code: (error as PoolError).code ?? String(error) });
        }
      }
    };
    const workers = [...Array.from({ length: 8 }, () => worker(false)), ...Array.from({ length: 4 }, () => worker(true))];
    await sleep(1_000);
    const stub = testEnv.EDGEPOOL.get(testEnv.EDGEPOOL.idFromName(`${tenant}#${victim}`));
    abortedAt = Date.now();
    await runInDurableObject(stub, (_instance, state) => state.abort("test: shard aborted")).catch(() => {});
    // Long enough for the clients' mark on the broken shard (2 s) to lapse and the shard to be tried again.
    await sleep(4_000);
    running = false;
    await Promise.all(workers);

    const failed = outcomes.filter((o) => o.code !== undefined);
    const window = (from: number, to: number) => outcomes.filter((o) => o.at >= from && o.at < to && o.code === undefined).length;
    const perSecond = (from: number, to: number) => Math.round((window(from, to) * 1_000) / (to - from));
    const servedAgain = outcomes.filter((o) => o.at > abortedAt + 500 && o.shard === victim).length;
    console.log(`shard fault (live): ${failed.length} of ${outcomes.length} sessions failed (${failed.map((o) => `${o.code} started ${o.at - abortedAt} ms after the abort`).join(", ")}); ` +
      `sessions/s before ${perSecond(started, abortedAt)}, first second after ${perSecond(abortedAt, abortedAt + 1_000)}, last 2 s ${perSecond(abortedAt + 2_000, abortedAt + 4_000)}; ` +
      `shard ${victim} served ${servedAgain} sessions after it came back`);
    // Only sessions on the victim around the abort fail (those in flight, and the first call on each client's stub of
    // the reset object, which marks it): a few, all LEASE_LOST, none once the clients moved away.
    expect(failed.length).toBeLessThanOrEqual(24);
    expect(new Set(failed.map((o) => o.code))).toEqual(failed.length ? new Set(["LEASE_LOST"]) : new Set());
    for (const o of failed) expect(o.at - abortedAt, "a failure long after the abort").toBeLessThan(1_000);
    // The others kept serving right after the abort, and the shard serves again once it is back.
    expect(window(abortedAt, abortedAt + 1_000)).toBeGreaterThan(0);
    expect(servedAgain).toBeGreaterThan(0);
  }, 30_000);
});
