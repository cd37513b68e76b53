import { runInDurableObject } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import pg from "pg";
import postgres from "postgres";
import { createPool, getConnection, pgOptions, PoolError, postgresOptions } from "../../src/index.ts";
import { configure, observer, serverPids, tenantName, testEnv, until } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

describe("through a service binding to the coordinator Worker", () => {
  it("one-shot queries and leases work the same as through the Durable Object namespace", async () => {
    const tenant = tenantName("service");
    await configure(tenant, { maxConnections: 1 });
    const db = createPool(testEnv.EDGEPOOL_SERVICE as never, { tenant });
    expect((await db.sql<{ n: number }>`select ${5}::int as n`)[0]).toEqual({ n: 5 });
    const conn = await getConnection(testEnv.EDGEPOOL_SERVICE as never, { tenant });
    await conn.sql`set application_name = 'still-mine'`;
    expect((await conn.sql`show application_name`)[0]).toEqual({ application_name: "still-mine" });
    await conn.release();
    const [{ pid }] = (await db.sql<{ pid: number }>`select pg_backend_pid() as pid`) as unknown as [{ pid: number }];
    expect(pid).toBe(conn.pid);
    expect(await serverPids(sql, tenant)).toEqual([pid]); // reset restored the pool's application_name
    await expect(createPool(testEnv.EDGEPOOL_SERVICE as never, { tenant: "bad name" }).sql`select 1`).rejects.toMatchObject({ code: "BAD_REQUEST" });
  });

  it("postgres.js and pg sessions reach the tenant's coordinator through the PoolService binding too", async () => {
    const tenant = tenantName("service-drivers");
    await configure(tenant, { maxConnections: 1 });
    const sqlViaService = postgres(postgresOptions(testEnv.EDGEPOOL_SERVICE as never, { tenant }));
    const pool = new pg.Pool(pgOptions(testEnv.EDGEPOOL_SERVICE as never, { tenant }));
    try {
      const [fromPostgres] = await sqlViaService<{ n: number; pid: number }[]>`select ${7}::int as n, pg_backend_pid() as pid`;
      const { rows: [fromPg] } = await pool.query<{ n: number; pid: number }>("select $1::int as n, pg_backend_pid() as pid", [8]);
      expect(fromPostgres).toMatchObject({ n: 7 });
      expect(fromPg).toMatchObject({ n: 8 });
      // Both ran on the tenant's one pool connection, as the server sees it.
      expect(await serverPids(sql, tenant)).toEqual([fromPostgres!.pid]);
      expect(fromPg!.pid).toBe(fromPostgres!.pid);
    } finally {
      await sqlViaService.end();
      await pool.end();
    }
  });

  it("a driver session through the binding that ends inside a transaction has it rolled back and its connection returned", async () => {
    const tenant = tenantName("service-end");
    await configure(tenant, { maxConnections: 1 });
    const client = new pg.Client(pgOptions(testEnv.EDGEPOOL_SERVICE as never, { tenant }));
    await client.connect();
    await client.query("begin");
    const { rows: [held] } = await client.query<{ pid: number }>("select pg_backend_pid() as pid, pg_advisory_xact_lock(4242)");
    await client.end();
    // The server: that backend leaves its transaction (the lock with it), and the next session gets it.
    const state = await until(
      async () => (await sql<{ state: string }[]>`select state from pg_stat_activity where pid = ${held!.pid}`)[0]?.state,
      (s) => s === "idle",
    );
    expect(state).toBe("idle");
    expect(await sql`select 1 from pg_locks where locktype = 'advisory' and objid = 4242`).toHaveLength(0);
    const next = new pg.Client(pgOptions(testEnv.EDGEPOOL_SERVICE as never, { tenant }));
    await next.connect();
    expect((await next.query<{ pid: number }>("select pg_backend_pid() as pid")).rows[0]!.pid).toBe(held!.pid);
    await next.end();
  });

  it("a one-shot whose coordinator is reset while it runs fails with LEASE_LOST saying it may have run (retryable: false), as through the namespace", async () => {
    const tenant = tenantName("service-lost");
    const stub = await configure(tenant, { maxConnections: 1 });
    const db = createPool(testEnv.EDGEPOOL_SERVICE as never, { tenant });
    const running = db.sql`select pg_sleep(2)`.catch((e: unknown) => e);
    // The query is on the server when the object goes.
    await until(async () => (await sql`select 1 from pg_stat_activity where query = 'select pg_sleep(2)' and state = 'active'`).length, (n) => n > 0);
    await runInDurableObject(stub, (_, state) => state.abort("test: coordinator reset")).catch(() => {});
    const error = await running;
    expect(error).toBeInstanceOf(PoolError);
    expect(error).toMatchObject({ code: "LEASE_LOST", retryable: false, message: expect.stringContaining("the query may have run") });
  });
});
