import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { createPool } from "../../src/index.ts";
import handler, { type Env } from "../../worker/index.ts";
import { ALARM_LOST_MS } from "../../worker/coordinator.ts";
import { DIRECTORY_SHARDS } from "../../worker/directory.ts";
import { ADMIN_TOKEN, configure, http, putTenant, sleep, tenantName, testEnv, until } from "./helpers.ts";

const password = decodeURIComponent(new URL(testEnv.DATABASE_URL).password);
/** The default report interval (EDGEPOOL_REPORT_INTERVAL_MS unset): the directory's staleness bound. */
const REPORT_INTERVAL_MS = 5_000;

/**
 * The test's env with both Durable Object namespaces counted: every stub the
 * coordinator namespace hands out (no coordinator can be called without one)
 * and every RPC call into a directory shard.
 */
function countingEnv() {
  const calls = { coordinators: 0, directory: 0 };
  const coordinators = new Proxy(testEnv.EDGEPOOL, {
    get(target, key) {
      const value = Reflect.get(target, key);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        calls.coordinators++;
        return Reflect.apply(value as (...a: unknown[]) => unknown, target, args);
      };
    },
  });
  const directory = testEnv.EDGEPOOL_DIRECTORY!;
  const shards = new Proxy(directory, {
    get(target, key) {
      const value = Reflect.get(target, key);
      if (key !== "get") return typeof value === "function" ? value.bind(target) : value;
      return (id: DurableObjectId) => {
        const stub = target.get(id);
        return new Proxy(stub, {
          get(s, method) {
            const fn = Reflect.get(s, method);
            if (typeof fn !== "function") return fn;
            return (...args: unknown[]) => {
              calls.directory++;
              return Reflect.apply(fn as (...a: unknown[]) => unknown, s, args);
            };
          },
        });
      };
    },
  });
  const env = { ...testEnv, EDGEPOOL: coordinators, EDGEPOOL_DIRECTORY: shards } as Env;
  return { env, calls };
}

async function list(env: Env, query: string, token = ADMIN_TOKEN) {
  const response = await handler.fetch(new Request(`http://edge/v1/tenants${query}`, { headers: { Authorization: `Bearer ${token}` } }), env);
  return { status: response.status, body: (await response.json()) as { tenants: Record<string, any>[]; cursor: string | null } };
}

describe("tenant directory (GET /v1/tenants)", () => {
  it("lists 1,000 tenants created by the test without calling a single coordinator, each exactly once across pages", { timeout: 120_000 }, async () => {
    const run = crypto.randomUUID().slice(0, 6);
    const names = Array.from({ length: 1_000 }, (_, i) => `dir-${run}-${String(i).padStart(4, "0")}`);
    const started = Date.now();
    // Through each coordinator's configure (what PUT /v1/tenants/:tenant calls), 100 at a time.
    for (let i = 0; i < names.length; i += 100) {
      await Promise.all(names.slice(i, i + 100).map(async (name, j) => {
        const reply = await testEnv.EDGEPOOL.get(testEnv.EDGEPOOL.idFromName(name))
          .configure(name, { connectionString: testEnv.DATABASE_URL, options: { maxConnections: ((i + j) % 5) + 1 } });
        expect(reply.ok).toBe(true);
      }));
    }
    const createdMs = Date.now() - started;

    const { env, calls } = countingEnv();
    const seen = new Map<string, Record<string, any>>();
    const order: string[] = [];
    let cursor: string | null = "";
    let pages = 0;
    const listed = Date.now();
    while (cursor !== null) {
      const page = await list(env, `?limit=137${cursor ? `&cursor=${cursor}` : ""}`);
      expect(page.status, JSON.stringify(page.body)).toBe(200);
      pages++;
      if (page.body.cursor !== null) expect(page.body.tenants).toHaveLength(137);
      for (const entry of page.body.tenants) {
        order.push(entry.tenant);
        if (entry.tenant.startsWith(`dir-${run}-`)) {
          expect(seen.has(entry.tenant)).toBe(false);
          seen.set(entry.tenant, entry);
        }
      }
      cursor = page.body.cursor;
    }
    const listMs = Date.now() - listed;
    // Every page read the directory's shards only.
    expect(calls.coordinators).toBe(0);
    expect(calls.directory).toBe(pages * DIRECTORY_SHARDS);
    expect(order).toEqual([...new Set(order)].sort());
    expect([...seen.keys()]).toEqual(names);
    const sample = seen.get(names[7]!)!;
    expect(sample).toMatchObject({ options: { maxConnections: 3 } });
    expect(sample.connectionString).toContain(":***@");
    expect(JSON.stringify([...seen.values()])).not.toContain(password);
    console.info(`directory: 1,000 tenants created in ${createdMs} ms; listed in ${pages} pages of <= 137 (${order.length} tenants in all) in ${listMs} ms with ${calls.directory} directory calls and ${calls.coordinators} coordinator calls`);
  });

  it(`a tenant's counters reach the directory from its coordinator's alarm within the report interval (${REPORT_INTERVAL_MS} ms)`, async () => {
    const tenant = tenantName("dirstats");
    await putTenant(tenant, { connectionString: testEnv.DATABASE_URL, maxConnections: 2 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    for (let i = 0; i < 5; i++) await db.sql`select 1`;
    const ranAt = Date.now();
    const { env, calls } = countingEnv();
    const cursor = tenant.slice(0, -1);
    const entry = await until(
      async () => (await list(env, `?limit=1&cursor=${cursor}`)).body.tenants[0],
      (e) => e?.tenant === tenant && e.stats?.acquired === 5,
      REPORT_INTERVAL_MS + 2_000,
    );
    const lagMs = Date.now() - ranAt;
    expect(entry).toMatchObject({ tenant, stats: { acquired: 5, released: 5, total: 1, idle: 1, maxConnections: 2 } });
    expect(lagMs).toBeLessThanOrEqual(REPORT_INTERVAL_MS + 1_000);
    expect(Date.parse(entry!.reportedAt)).toBeGreaterThan(ranAt - REPORT_INTERVAL_MS);
    expect(calls.coordinators).toBe(0);
    console.info(`directory: counters of 5 queries listed ${lagMs} ms after the last one`);
  });

  it(`an alarm that never comes is set again once it is ${ALARM_LOST_MS} ms late: the counters still reach the directory`, { timeout: ALARM_LOST_MS + 20_000 }, async () => {
    const tenant = tenantName("dirlost");
    const stub = await configure(tenant, { maxConnections: 2 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    await db.sql`select 1`;
    // The report is now due from the alarm; the platform loses it (the coordinator still counts on it).
    await runInDurableObject(stub, (_, state) => state.storage.deleteAlarm());
    const lostAt = Date.now();
    const cursor = tenant.slice(0, -1);
    const listed = async () => (await list(testEnv as Env, `?limit=1&cursor=${cursor}`)).body.tenants[0];
    // Calls keep coming (each one marks the counters changed); none may set the alarm again before it counts as lost.
    let queries = 1;
    while (Date.now() - lostAt < ALARM_LOST_MS - 1_000) {
      await db.sql`select 1`;
      queries++;
      await sleep(250);
    }
    expect(await runInDurableObject(stub, (_, state) => state.storage.getAlarm())).toBeNull();
    expect((await listed())?.stats?.acquired ?? 0).toBeLessThan(queries);
    const entry = await until(async () => {
      await db.sql`select 1`;
      queries++;
      return listed();
    }, (e) => e?.stats?.acquired !== undefined && e.stats.acquired >= queries - 1, 10_000);
    expect(entry?.stats?.acquired).toBeGreaterThanOrEqual(queries - 1);
    // Said once, as a warning with how late the alarm was.
    const activity = await stub.activity(tenant);
    const late = activity.ok ? activity.value.events.filter((e) => e.event === "alarm-late") : [];
    expect(late).toHaveLength(1);
    expect(late[0]).toMatchObject({ level: "warn", tenant });
    expect((late[0] as { lateMs: number }).lateMs).toBeGreaterThanOrEqual(ALARM_LOST_MS);
    console.info(`directory: alarm lost; counters listed again ${Date.now() - lostAt} ms later (${queries} queries)`);
  });

  it("DELETE takes the tenant out of the list; the list needs the admin token and a sane page", async () => {
    const tenant = tenantName("dirgone");
    await putTenant(tenant, { connectionString: testEnv.DATABASE_URL });
    const first = async () => (await list(testEnv, `?limit=1&cursor=${tenant.slice(0, -1)}`)).body.tenants[0]?.tenant;
    expect(await first()).toBe(tenant);
    expect((await http("DELETE", `/v1/tenants/${tenant}`, { token: ADMIN_TOKEN })).status).toBe(200);
    expect(await first()).not.toBe(tenant);

    expect((await http("GET", "/v1/tenants")).status).toBe(401);
    const token = (await http("POST", `/v1/tenants/${tenantName("x").replace(/.*/, "default")}/tokens`, { token: ADMIN_TOKEN })).json.token as string;
    expect((await http("GET", "/v1/tenants", { token })).status).toBe(401);
    expect((await http("GET", "/v1/tenants?limit=0", { token: ADMIN_TOKEN })).status).toBe(400);
    expect((await http("GET", "/v1/tenants?limit=5000", { token: ADMIN_TOKEN })).status).toBe(400);
    expect((await http("GET", "/v1/tenants?cursor=..%2F", { token: ADMIN_TOKEN })).status).toBe(400);
    expect((await http("POST", "/v1/tenants", { token: ADMIN_TOKEN })).status).toBe(405);
  });
});
