import { afterAll, describe, expect, it } from "vitest";
import { createPool, DatabaseError, getConnection, PoolError } from "../../src/index.ts";
import { configure, observer, pidOf, serverPids, tenantName, testEnv } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());


describe("per-query limits", () => {
  it("queryTimeoutMs cancels the query on the server and returns QUERY_TIMEOUT; the connection stays usable", async () => {
    const tenant = tenantName("query-timeout");
    await configure(tenant, { maxConnections: 1, queryTimeoutMs: 200 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const pid = await pidOf(db);
    const started = Date.now();
    const error = await db.sql`select pg_sleep(5)`.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PoolError);
    expect(error).toMatchObject({ code: "QUERY_TIMEOUT", message: expect.stringContaining("after 200ms") });
    expect(Date.now() - started).toBeLessThan(2_000);
    // Cancelled on the server: the backend is not still sleeping.
    const [activity] = await sql<{ state: string; query: string }[]>`select state, query from pg_stat_activity where pid = ${pid}`;
    expect(activity!.state).not.toBe("active");
    expect(await pidOf(db)).toBe(pid);
    // Per call: a longer limit lets the same query finish.
    const patient = createPool(testEnv.EDGEPOOL, { tenant, queryTimeoutMs: 3_000 });
    expect((await patient.sql`select pg_sleep(0.3), 1 as done`)[0]).toMatchObject({ done: 1 });
    const conn = await getConnection(testEnv.EDGEPOOL, { tenant, queryTimeoutMs: 100 });
    await expect(conn.sql`select pg_sleep(2)`).rejects.toMatchObject({ code: "QUERY_TIMEOUT" });
    expect((await conn.sql`select 1 as one`)[0]).toEqual({ one: 1 });
    await conn.release();
  });

  it("a statement_timeout the user sets is the database's own error, and it is reset for the next lease", async () => {
    const tenant = tenantName("statement-timeout");
    await configure(tenant, { maxConnections: 1 });
    const conn = await getConnection(testEnv.EDGEPOOL, { tenant });
    await conn.sql`set statement_timeout = 100`;
    const error = await conn.sql`select pg_sleep(1)`.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DatabaseError);
    expect(error).toMatchObject({ code: "57014" });
    await conn.release();
    const next = await getConnection(testEnv.EDGEPOOL, { tenant });
    expect(next.pid).toBe(conn.pid);
    expect((await next.sql`select pg_sleep(0.2), 1 as done`)[0]).toMatchObject({ done: 1 });
    await next.release();
  });

  it("a result above maxResultBytes is refused with RESULT_TOO_LARGE and the connection is still fine", async () => {
    const tenant = tenantName("too-large");
    await configure(tenant, { maxConnections: 1, maxResultBytes: 64 * 1024 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const pid = await pidOf(db);
    const error = await db.sql`select repeat('x', 1000) as filler from generate_series(1, 1000)`.catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "RESULT_TOO_LARGE", message: expect.stringContaining("maxResultBytes (65536 bytes") });
    expect((await db.sql`select count(*)::int as n from generate_series(1, 10)`)[0]).toEqual({ n: 10 });
    expect(await pidOf(db)).toBe(pid);
    expect(await serverPids(sql, tenant)).toEqual([pid]);
  });

  it("COPY to or from the client and LISTEN are refused with a clear error", async () => {
    const tenant = tenantName("unsupported");
    await configure(tenant, { maxConnections: 1 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    await expect(db.query("copy pg_class to stdout")).rejects.toMatchObject({ code: "BAD_REQUEST", message: expect.stringContaining("COPY is not supported") });
    await expect(db.query("  LISTEN channel")).rejects.toMatchObject({ code: "BAD_REQUEST", message: expect.stringContaining("LISTEN is not supported") });
    expect((await db.sql`select 1 as one`)[0]).toEqual({ one: 1 });
  });
});
