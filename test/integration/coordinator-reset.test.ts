import { abortAllDurableObjects } from "cloudflare:test";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPool, getConnection, PoolError } from "../../src/index.ts";
import { configure, observer, serverPids, tenantName, testEnv, until } from "./helpers.ts";

const sql = observer();
beforeAll(() => sql`create table if not exists reset_probe (id serial primary key, tag text not null)`);
afterAll(() => sql.end());

describe("coordinator reset", () => {
  it("outstanding leases fail with LEASE_LOST (retryable), never hang; the next acquire works; no backend is left idle in transaction", async () => {
    const tenant = tenantName("reset");
    await configure(tenant, { maxConnections: 2 });
    const tag = `reset-${tenant}`;
    const conn = await getConnection(testEnv.EDGEPOOL, { tenant });
    await conn.sql`begin`;
    await conn.sql`insert into reset_probe (tag) values (${tag})`;
    const [before] = await sql<{ state: string }[]>`select state from pg_stat_activity where pid = ${conn.pid}`;
    expect(before!.state).toBe("idle in transaction");

    await abortAllDurableObjects();
    const started = Date.now();
    const error = await conn.sql`select 1`.catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(error).toBeInstanceOf(PoolError);
    expect(error).toMatchObject({ code: "LEASE_LOST", retryable: true });
    await conn.release(); // harmless after the loss

    // The coordinator's sockets died with it: the server rolled the transaction back.
    expect(await until(() => serverPids(sql, tenant), (p) => !p.includes(conn.pid))).not.toContain(conn.pid);
    const stuck = await sql`select pid from pg_stat_activity where application_name = ${`edgepool:${tenant}`} and state = 'idle in transaction'`;
    expect(stuck).toHaveLength(0);
    expect(await sql`select 1 from reset_probe where tag = ${tag}`).toHaveLength(0);

    const next = await getConnection(testEnv.EDGEPOOL, { tenant, acquireTimeoutMs: 2_000 });
    expect(next.pid).not.toBe(conn.pid);
    await next.release();
    expect((await createPool(testEnv.EDGEPOOL, { tenant }).sql`select 1 as one`)[0]).toEqual({ one: 1 });
  });

  it("pool connections carry idle_in_transaction_session_timeout as a safety net", async () => {
    const tenant = tenantName("safety-net");
    await configure(tenant, { maxConnections: 1, leaseTimeoutMs: 7_000 });
    const conn = await getConnection(testEnv.EDGEPOOL, { tenant });
    expect((await conn.sql`show idle_in_transaction_session_timeout`)[0]).toEqual({ idle_in_transaction_session_timeout: "14s" });
    await conn.release();
  });
});
