import { abortAllDurableObjects } from "cloudflare:test";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPool, getConnection } from "../../src/index.ts";
import { ADMIN_TOKEN, http, observer, putTenant, serverPids, sleep, tenantName, testEnv, until } from "./helpers.ts";

const sql = observer();
const url = new URL(testEnv.DATABASE_URL);
const password = decodeURIComponent(url.password);

/** The test database's URL for another role and database. */
function databaseUrl(user: string, secret: string, database: string): string {
  return `postgres://${user}:${secret}@${url.host}/${database}`;
}

beforeAll(async () => {
  for (const name of ["tenant_alpha", "tenant_beta"]) {
    const exists = await sql`select 1 from pg_roles where rolname = ${name}`;
    if (exists.length === 0) await sql.unsafe(`create role ${name} login password '${name}-Secret-9'`);
    const db = await sql`select 1 from pg_database where datname = ${`${name}_db`}`;
    if (db.length === 0) await sql.unsafe(`create database ${name}_db owner ${name}`);
  }
});
afterAll(() => sql.end());

describe("tenant registry", () => {
  it("PUT, GET and DELETE round trip; GET never returns the password", async () => {
    const tenant = tenantName("registry");
    const put = await putTenant(tenant, { connectionString: testEnv.DATABASE_URL, maxConnections: 2, idleTimeoutMs: 5_000 });
    expect(put.status).toBe(200);
    expect(put.text).not.toContain(password);
    expect(put.json).toMatchObject({ tenant, options: { maxConnections: 2, idleTimeoutMs: 5_000, acquireTimeoutMs: 5_000 } });
    expect(put.json.connectionString).toBe(`postgres://${url.username}:***@${url.host}${url.pathname}`);
    const got = await http("GET", `/v1/tenants/${tenant}`, { token: ADMIN_TOKEN });
    expect(got.status).toBe(200);
    expect(got.json).toEqual(put.json);
    expect(got.text).not.toContain(password);
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    expect((await db.sql`select 1 as one`)[0]).toEqual({ one: 1 });
    expect(JSON.stringify(await db.stats())).not.toContain(password);

    const deleted = await http("DELETE", `/v1/tenants/${tenant}`, { token: ADMIN_TOKEN });
    expect(deleted.status).toBe(200);
    await expect(db.sql`select 1`).rejects.toMatchObject({ code: "POOL_CLOSED" });
    expect((await http("GET", `/v1/tenants/${tenant}`, { token: ADMIN_TOKEN })).status).toBe(404);
    expect(await until(() => serverPids(sql, tenant), (p) => p.length === 0)).toEqual([]);
  });

  it("DELETE drains: no new leases, existing leases finish, then the sockets close", async () => {
    const tenant = tenantName("drain");
    await putTenant(tenant, { connectionString: testEnv.DATABASE_URL, maxConnections: 2 });
    const conn = await getConnection(testEnv.EDGEPOOL, { tenant });
    expect((await http("DELETE", `/v1/tenants/${tenant}`, { token: ADMIN_TOKEN })).json).toMatchObject({ leased: 1 });
    await expect(getConnection(testEnv.EDGEPOOL, { tenant })).rejects.toMatchObject({ code: "POOL_CLOSED" });
    expect((await conn.sql`select 2 as two`)[0]).toEqual({ two: 2 }); // the existing lease still works
    expect(await serverPids(sql, tenant)).toEqual([conn.pid]);
    await conn.release();
    expect(await until(() => serverPids(sql, tenant), (p) => p.length === 0)).toEqual([]);
  });

  it("invalid options and bad tenant names are refused with clear errors; an unknown tenant is UNKNOWN_TENANT", async () => {
    const tenant = tenantName("invalid");
    const unknownKey = await putTenant(tenant, { connectionString: testEnv.DATABASE_URL, maxConections: 3 });
    expect(unknownKey.status).toBe(400);
    expect(unknownKey.json.error.message).toMatch(/^INVALID_OPTION: option "maxConections" = 3 is not an option/);
    const negative = await putTenant(tenant, { connectionString: testEnv.DATABASE_URL, maxConnections: -1 });
    expect(negative.json.error.message).toBe('INVALID_OPTION: option "maxConnections" = -1 must be an integer >= 0');
    const noUrl = await putTenant(tenant, { connectionString: "mysql://x" });
    expect(noUrl.json.error).toMatchObject({ code: "INVALID_OPTION" });
    expect((await http("PUT", `/v1/tenants/${tenant}`, { token: ADMIN_TOKEN, body: "{not json" })).json.error).toMatchObject({ code: "BAD_REQUEST" });
    for (const bad of ["%20", "a.b", "x".repeat(64), "-lead", "%C3%A9t%C3%A9"]) {
      const response = await http("GET", `/v1/tenants/${bad}`, { token: ADMIN_TOKEN });
      expect(response.status, bad).toBe(400);
      expect(response.json.error.code).toBe("BAD_REQUEST");
    }
    expect((await http("GET", "/v1/tenants/", { token: ADMIN_TOKEN })).status).toBe(404);
    const unknown = await http("GET", `/v1/tenants/${tenantName("nobody")}`, { token: ADMIN_TOKEN });
    expect(unknown.status).toBe(404);
    expect(unknown.json.error.code).toBe("UNKNOWN_TENANT");
  });

  it("the config survives the coordinator being reset", async () => {
    const tenant = tenantName("durable");
    await putTenant(tenant, { connectionString: testEnv.DATABASE_URL, maxConnections: 3, maxUses: 50 });
    expect((await createPool(testEnv.EDGEPOOL, { tenant }).sql`select 1 as one`)[0]).toEqual({ one: 1 });
    await abortAllDurableObjects();
    // In-memory state and sockets are gone; the config comes back from the coordinator's storage.
    expect(await until(() => serverPids(sql, tenant), (p) => p.length === 0)).toEqual([]);
    expect((await createPool(testEnv.EDGEPOOL, { tenant }).sql`select 2 as two`)[0]).toEqual({ two: 2 });
    const got = await http("GET", `/v1/tenants/${tenant}`, { token: ADMIN_TOKEN });
    expect(got.json.options).toMatchObject({ maxConnections: 3, maxUses: 50 });
  });

  it("a config change rotates connections without failing in-flight queries", async () => {
    const tenant = tenantName("rotate");
    await putTenant(tenant, { connectionString: testEnv.DATABASE_URL, maxConnections: 2, acquireTimeoutMs: 20_000 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    await Promise.all([1, 2].map(() => db.sql`select 1`));
    // The second connection may still be authenticating when both queries are answered (by the first): wait for it.
    const before = await until(() => serverPids(sql, tenant), (p) => p.length === 2);
    expect(before).toHaveLength(2);
    const running = Array.from({ length: 40 }, (_, i) => db.sql<{ n: number }>`select ${i}::int as n, pg_sleep(0.02)`);
    await sleep(60);
    expect((await putTenant(tenant, { connectionString: testEnv.DATABASE_URL, maxConnections: 3, acquireTimeoutMs: 20_000 })).status).toBe(200);
    const results = await Promise.all(running);
    expect(results.map((r) => r[0]!.n)).toEqual(Array.from({ length: 40 }, (_, i) => i));
    // The old connections are closed once their queries finished; new ones serve.
    const after = await until(() => serverPids(sql, tenant), (p) => p.every((pid) => !before.includes(pid)));
    expect(after.some((pid) => before.includes(pid))).toBe(false);
    expect((await db.stats()).maxConnections).toBe(3);
  });

  it("two tenants on two databases with two roles: each tenant's queries land only in its database, each cap is enforced separately", async () => {
    const alpha = tenantName("alpha");
    const beta = tenantName("beta");
    await putTenant(alpha, { connectionString: databaseUrl("tenant_alpha", "tenant_alpha-Secret-9", "tenant_alpha_db"), maxConnections: 1, acquireTimeoutMs: 20_000 });
    await putTenant(beta, { connectionString: databaseUrl("tenant_beta", "tenant_beta-Secret-9", "tenant_beta_db"), maxConnections: 3, acquireTimeoutMs: 20_000 });
    const a = createPool(testEnv.EDGEPOOL, { tenant: alpha });
    const b = createPool(testEnv.EDGEPOOL, { tenant: beta });
    expect((await a.sql`select current_database() as db, current_user as who`)[0]).toEqual({ db: "tenant_alpha_db", who: "tenant_alpha" });
    expect((await b.sql`select current_database() as db, current_user as who`)[0]).toEqual({ db: "tenant_beta_db", who: "tenant_beta" });

    let running = true;
    const seen: { tenant: string; db: string; who: string }[] = [];
    const peak = { [alpha]: 0, [beta]: 0 };
    const sampler = (async () => {
      while (running) {
        const rows = await sql<{ app: string; db: string; who: string }[]>`
          select application_name as app, datname as db, usename as who from pg_stat_activity
          where application_name in (${`edgepool:${alpha}`}, ${`edgepool:${beta}`})`;
        for (const t of [alpha, beta]) peak[t] = Math.max(peak[t]!, rows.filter((r) => r.app === `edgepool:${t}`).length);
        // A backend still authenticating shows no database or user yet.
        for (const r of rows) if (r.db !== null) seen.push({ tenant: r.app.slice("edgepool:".length), db: r.db, who: r.who });
      }
    })();
    await Promise.all([
      ...Array.from({ length: 30 }, () => a.sql`select pg_sleep(0.005)`),
      ...Array.from({ length: 30 }, () => b.sql`select pg_sleep(0.005)`),
    ]);
    running = false;
    await sampler;
    expect(peak[alpha]).toBe(1);
    expect(peak[beta]).toBeGreaterThan(1);
    expect(peak[beta]).toBeLessThanOrEqual(3);
    expect(seen.length).toBeGreaterThan(0);
    for (const s of seen) {
      expect(s.tenant === alpha ? ["tenant_alpha_db", "tenant_alpha"] : ["tenant_beta_db", "tenant_beta"]).toEqual([s.db, s.who]);
    }
    // Alpha's role cannot even see beta's rows: it is a different database.
    await expect(a.sql`select * from dblink_nothing`).rejects.toMatchObject({ code: "42P01" });
  });
});
