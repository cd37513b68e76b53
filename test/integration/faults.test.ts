import { afterAll, describe, expect, it } from "vitest";
import { createPool, DatabaseError, getConnection, PoolError } from "../../src/index.ts";
import { configure, observer, serverPids, sleep, tenantName, testEnv, until } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

describe("faults", () => {
  it("a backend killed with pg_terminate_backend is detected and replaced; no slot leaks; the next query succeeds", async () => {
    const tenant = tenantName("killed");
    await configure(tenant, { maxConnections: 1 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const [before] = await db.sql<{ pid: number }>`select pg_backend_pid() as pid`;
    await sql`select pg_terminate_backend(${before!.pid})`;
    await until(() => serverPids(sql, tenant), (p) => p.length === 0);
    await sleep(50);
    const [after] = await db.sql<{ pid: number }>`select pg_backend_pid() as pid`;
    expect(after!.pid).not.toBe(before!.pid);
    expect(await serverPids(sql, tenant)).toEqual([after!.pid]);
    const stats = await db.stats();
    expect(stats).toMatchObject({ total: 1, leased: 0 });
  });

  it("a backend killed under a lease: the lease's next call fails with LEASE_LOST and its slot is freed", async () => {
    const tenant = tenantName("killed-lease");
    await configure(tenant, { maxConnections: 1 });
    const conn = await getConnection(testEnv.EDGEPOOL, { tenant });
    await conn.sql`begin`;
    await sql`select pg_terminate_backend(${conn.pid})`;
    await until(() => serverPids(sql, tenant), (p) => p.length === 0);
    const error = await conn.sql`select 1`.catch((e: PoolError) => e);
    expect((error as PoolError).code).toBe("LEASE_LOST");
    const next = await getConnection(testEnv.EDGEPOOL, { tenant, acquireTimeoutMs: 2_000 });
    expect(next.pid).not.toBe(conn.pid);
    await next.release();
    await conn.release();
  });

  it("invalid SQL returns the Postgres error with its SQLSTATE, and the connection stays usable", async () => {
    const tenant = tenantName("bad-sql");
    await configure(tenant, { maxConnections: 1 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const [{ pid }] = (await db.sql<{ pid: number }>`select pg_backend_pid() as pid`) as unknown as [{ pid: number }];
    const error = await db.query("selec 1").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DatabaseError);
    expect(error).toMatchObject({ code: "42601", severity: "ERROR", position: "1" });
    const missing = await db.sql`select * from no_such_table_anywhere`.catch((e: DatabaseError) => e);
    expect(missing).toMatchObject({ code: "42P01" });
    const conn = await db.getConnection();
    await expect(conn.query("select 1/0")).rejects.toMatchObject({ code: "22012" });
    expect((await conn.query<{ n: number }>("select $1::int as n", [7]))[0]).toEqual({ n: 7 });
    await conn.release();
    const [again] = await db.sql<{ pid: number }>`select pg_backend_pid() as pid`;
    expect(again!.pid).toBe(pid);
  });

  it("an unreachable database gives CONNECT_FAILED naming host:port, never the password", async () => {
    const tenant = tenantName("unreachable");
    const url = new URL(testEnv.DATABASE_URL);
    const stub = testEnv.EDGEPOOL.get(testEnv.EDGEPOOL.idFromName(tenant));
    const secret = "s3cret-Pa55word";
    const reply = await stub.configure(tenant, { connectionString: `postgres://nobody:${secret}@127.0.0.1:1/db`, options: { connectTimeoutMs: 1_000 } });
    expect(reply.ok).toBe(true);
    expect(JSON.stringify(reply)).not.toContain(secret);
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const error = await db.sql`select 1`.catch((e: PoolError) => e);
    expect((error as PoolError).code).toBe("CONNECT_FAILED");
    expect((error as PoolError).message).toContain("127.0.0.1:1");
    expect((error as PoolError).message).not.toContain(secret);
    expect(JSON.stringify(await db.stats())).not.toContain(secret);
    // A wrong password on the real server: the auth error comes back, the password does not.
    const wrong = tenantName("wrong-password");
    const wrongStub = testEnv.EDGEPOOL.get(testEnv.EDGEPOOL.idFromName(wrong));
    await wrongStub.configure(wrong, { connectionString: `postgres://${url.username}:${secret}@${url.host}${url.pathname}`, options: {} });
    const authError = await createPool(testEnv.EDGEPOOL, { tenant: wrong }).sql`select 1`.catch((e: PoolError) => e);
    expect((authError as PoolError).code).toBe("CONNECT_FAILED");
    expect((authError as PoolError).message).toMatch(/password authentication failed/);
    expect((authError as PoolError).message).not.toContain(secret);
  });
});
