import { runDurableObjectAlarm, SELF } from "cloudflare:test";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPool, getConnection, PoolError } from "../../src/index.ts";
import { encodeQuery } from "../../src/codec.ts";
import { configure, observer, serverPids, sleep, tenantName, testEnv, until } from "./helpers.ts";

const sql = observer();
beforeAll(async () => {
  await sql`create table if not exists leak_probe (id serial primary key, tag text not null)`;
  await sql`create table if not exists lock_probe (id int primary key, n int not null)`;
  await sql`insert into lock_probe values (1, 0) on conflict do nothing`;
});
afterAll(() => sql.end());

describe("leases", () => {
  it("an abandoned lease is reclaimed after leaseTimeoutMs: its insert is rolled back, its row locks are gone, and it answers LEASE_EXPIRED", async () => {
    const tenant = tenantName("abandoned");
    const stub = await configure(tenant, { maxConnections: 1, leaseTimeoutMs: 300 });
    const tag = `abandoned-${tenant}`;
    const conn = await getConnection(testEnv.EDGEPOOL, { tenant });
    await conn.sql`begin`;
    await conn.sql`insert into leak_probe (tag) values (${tag})`;
    await conn.sql`select * from lock_probe where id = 1 for update`;
    // While the lease lives, the row is locked and the insert invisible to others.
    await expect(sql`select * from lock_probe where id = 1 for update nowait`).rejects.toMatchObject({ code: "55P03" });
    await sleep(400);
    await runDurableObjectAlarm(stub);
    await until(() => serverPids(sql, tenant), (p) => !p.includes(conn.pid));
    expect(await sql`select * from leak_probe where tag = ${tag}`).toHaveLength(0);
    await sql.begin(async (tx) => {
      expect(await tx`select * from lock_probe where id = 1 for update nowait`).toHaveLength(1);
    });
    const error = await conn.sql`select 1`.catch((e: PoolError) => e);
    expect(error).toBeInstanceOf(PoolError);
    expect((error as PoolError).code).toBe("LEASE_EXPIRED");
    expect((error as PoolError).message).toContain("300ms");
    // The slot came back: a new lease works.
    const next = await getConnection(testEnv.EDGEPOOL, { tenant, acquireTimeoutMs: 2_000 });
    expect(next.pid).not.toBe(conn.pid);
    await next.release();
  });

  it("a lease taken before a config change is still reclaimed after leaseTimeoutMs: the replaced pool keeps its janitor until it drains", async () => {
    const tenant = tenantName("old-pool-lease");
    const stub = await configure(tenant, { maxConnections: 2, leaseTimeoutMs: 300 });
    const conn = await getConnection(testEnv.EDGEPOOL, { tenant });
    // Outside a transaction: the server's own idle-in-transaction timeout (the safety net) does not end it.
    await conn.sql`select 1`;
    // New sessions now go to a new pool; this lease stays on the old one, which drains once it ends.
    await configure(tenant, { maxConnections: 2, leaseTimeoutMs: 60_000 });
    const fresh = createPool(testEnv.EDGEPOOL, { tenant });
    expect([...(await fresh.sql`select 1 as one`)]).toEqual([{ one: 1 }]);
    await sleep(400);
    await runDurableObjectAlarm(stub);
    expect(await until(() => serverPids(sql, tenant), (p) => !p.includes(conn.pid))).not.toContain(conn.pid);
    const error = await conn.sql`select 1`.catch((e: PoolError) => e);
    expect((error as PoolError).code).toBe("LEASE_EXPIRED");
  });

  it("a lease in use is not reclaimed while its query runs", async () => {
    const tenant = tenantName("busy-lease");
    const stub = await configure(tenant, { maxConnections: 1, leaseTimeoutMs: 200 });
    const conn = await getConnection(testEnv.EDGEPOOL, { tenant });
    const slow = conn.sql`select pg_sleep(0.5)`;
    await sleep(350);
    await runDurableObjectAlarm(stub);
    await slow;
    expect(await serverPids(sql, tenant)).toEqual([conn.pid]);
    await conn.release();
  });

  it("a Worker request that takes a lease and never releases it gives it back when the request ends", async () => {
    const tenant = tenantName("leak");
    await configure(tenant, { maxConnections: 1, leaseTimeoutMs: 60_000 });
    const tag = `leak-${tenant}`;
    const response = await SELF.fetch(`http://edge/leak?tenant=${tenant}&tx=${tag}`);
    const { pid } = await response.json<{ pid: number }>();
    // The connection is free again long before leaseTimeoutMs: the next lease gets the same backend ...
    const started = Date.now();
    const next = await getConnection(testEnv.EDGEPOOL, { tenant, acquireTimeoutMs: 5_000 });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(next.pid).toBe(pid);
    // ... with the leaked transaction rolled back.
    expect(await sql`select * from leak_probe where tag = ${tag}`).toHaveLength(0);
    const [state] = await sql<{ state: string }[]>`select state from pg_stat_activity where pid = ${pid}`;
    expect(state!.state).not.toBe("idle in transaction");
    await next.release();
  });

  it("a Worker request that throws while holding a lease gives it back when the request ends", async () => {
    const tenant = tenantName("throw");
    await configure(tenant, { maxConnections: 1, leaseTimeoutMs: 60_000 });
    const outcome = await SELF.fetch(`http://edge/throw?tenant=${tenant}`).then((r) => r.status, (e: Error) => e.message);
    expect(String(outcome)).toMatch(/500|thrown on purpose/);
    const next = await getConnection(testEnv.EDGEPOOL, { tenant, acquireTimeoutMs: 5_000 });
    expect(await serverPids(sql, tenant)).toEqual([next.pid]);
    await next.release();
  });

  it("a lease runs one parameterized statement many times, and so does the next lease on the same backend: prepared once on the server", async () => {
    const tenant = tenantName("lease-prepared");
    await configure(tenant, { maxConnections: 1 });
    const text = "select $1::int * 2 as n, pg_backend_pid() as pid";
    const runs: { n: number; pid: number }[] = [];
    for (let lease = 0; lease < 2; lease++) {
      const conn = await getConnection(testEnv.EDGEPOOL, { tenant });
      for (let i = 0; i < 3; i++) runs.push((await conn.query<{ n: number; pid: number }>(text, [i]))[0]!);
      await conn.release();
    }
    expect(runs.map((r) => r.n)).toEqual([0, 2, 4, 0, 2, 4]);
    expect(new Set(runs.map((r) => r.pid)).size).toBe(1);
    const conn = await getConnection(testEnv.EDGEPOOL, { tenant });
    const [row] = await conn.query<{ executions: number }>("select (generic_plans + custom_plans)::int as executions from pg_prepared_statements where statement = $1", [text]);
    expect(row).toEqual({ executions: 6 });
    await conn.release();
  });

  it("release is idempotent and a released lease answers LEASE_RELEASED, on the client and on the coordinator", async () => {
    const tenant = tenantName("released");
    const stub = await configure(tenant, { maxConnections: 1 });
    const conn = await getConnection(testEnv.EDGEPOOL, { tenant });
    await conn.release();
    await conn.release();
    await expect(conn.sql`select 1`).rejects.toMatchObject({ code: "LEASE_RELEASED" });
    // The raw lease object on the coordinator refuses too.
    const raw = await stub.acquire(tenant);
    if (!raw.ok) throw new Error(raw.error.message);
    await raw.value.lease.release();
    const reply = await raw.value.lease.run(encodeQuery("select 1"));
    expect(reply).toMatchObject({ ok: false, error: { kind: "pool", code: "LEASE_RELEASED" } });
    expect((await createPool(testEnv.EDGEPOOL, { tenant }).sql`select 1 as one`)[0]).toEqual({ one: 1 });
  });

  it("session state does not leak: SET, temp tables and prepared statements are gone for the next lease", async () => {
    const tenant = tenantName("reset");
    await configure(tenant, { maxConnections: 1 });
    const first = await getConnection(testEnv.EDGEPOOL, { tenant });
    await first.sql`set statement_timeout = 1234`;
    await first.sql`create temp table scratch (x int)`;
    await first.sql`prepare probe as select 1`;
    await first.sql`select pg_advisory_lock(4242)`;
    expect((await first.sql`show statement_timeout`)[0]).toEqual({ statement_timeout: "1234ms" });
    await first.release();

    const second = await getConnection(testEnv.EDGEPOOL, { tenant });
    expect(second.pid).toBe(first.pid); // same server session ...
    expect((await second.sql`show statement_timeout`)[0]).toEqual({ statement_timeout: "0" }); // ... reset
    expect((await second.sql`select to_regclass('pg_temp.scratch') as t`)[0]).toEqual({ t: null });
    // What the session prepared is gone; the pool's own protocol-level statements (from_sql = false) stay by design.
    expect((await second.sql`select count(*)::int as n from pg_prepared_statements where from_sql`)[0]).toEqual({ n: 0 });
    expect((await sql`select count(*)::int as n from pg_locks where locktype = 'advisory' and pid = ${first.pid}`)[0]).toEqual({ n: 0 });
    await second.release();
  });

  it("begin() commits on success and rolls back on throw", async () => {
    const tenant = tenantName("begin");
    await configure(tenant, { maxConnections: 2 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const kept = `kept-${tenant}`;
    const dropped = `dropped-${tenant}`;
    await db.begin(async (tx) => {
      await tx.sql`insert into leak_probe (tag) values (${kept})`;
    });
    await expect(
      db.begin(async (tx) => {
        await tx.sql`insert into leak_probe (tag) values (${dropped})`;
        throw new Error("abort");
      }),
    ).rejects.toThrow("abort");
    expect(await sql`select tag from leak_probe where tag in (${kept}, ${dropped})`).toEqual([{ tag: kept }]);
  });
});
