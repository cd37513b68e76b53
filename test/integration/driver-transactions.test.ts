// Transactions through drivers in transaction mode (design §4): a transaction
// keeps one backend from BEGIN to COMMIT while others share the tenant, and a
// session's state never reaches the next session on the same backend.
import pg from "pg";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pgOptions, postgresOptions } from "../../src/index.ts";
import { configure, observer, sleep, tenantName, testEnv, until } from "./helpers.ts";

const sql = observer();
beforeAll(async () => {
  await sql`create table if not exists driver_tx_probe (id serial primary key, tag text not null)`;
});
afterAll(async () => {
  await sql`drop table if exists driver_tx_probe`;
  await sql.end();
});

interface Seen {
  pid: number;
  txid: string;
}

const SEEN = "select pg_backend_pid() as pid, txid_current()::text as txid";

/** Other sessions of the tenant running one-statement transactions until stopped; every (pid, txid) they saw. */
function hammer(tenant: string, sessions: number) {
  const instances = Array.from({ length: sessions }, () => postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, onnotice: () => {} })));
  const seen: Seen[] = [];
  let running = true;
  const done = Promise.all(
    instances.map(async (db) => {
      while (running) {
        const [row] = await db.unsafe<Seen[]>(`${SEEN}, pg_sleep(0.002)`);
        seen.push({ pid: row!.pid, txid: row!.txid });
      }
    }),
  );
  return {
    seen,
    async stop() {
      running = false;
      await done;
      await Promise.all(instances.map((db) => db.end()));
      return seen;
    },
  };
}

async function visibleRows(tag: string): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from driver_tx_probe where tag = ${tag}`;
  return row!.n;
}

describe("a transaction stays on one backend from BEGIN to COMMIT", () => {
  it("postgres.js sql.begin: every statement has the same pid and txid, no other session's statement shares the txid, and its insert is invisible until COMMIT", async () => {
    const tenant = tenantName("tx-pgjs");
    await configure(tenant, { maxConnections: 2, acquireTimeoutMs: 20_000 });
    const tag = `tx-${tenant}`;
    const db = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, onnotice: () => {} }));
    const others = hammer(tenant, 8);
    try {
      // Let the others get going on both backends first.
      await until(async () => others.seen.length, (n) => n > 20);
      const inside: Seen[] = [];
      const invisibleInside: number[] = [];
      let duringTx = -others.seen.length;
      await db.begin(async (tx) => {
        for (let k = 0; k < 6; k++) {
          const [row] = await tx.unsafe<Seen[]>(SEEN);
          inside.push({ pid: row!.pid, txid: row!.txid });
          if (k === 2) await tx`insert into driver_tx_probe (tag) values (${tag})`;
          if (k >= 2) invisibleInside.push(await visibleRows(tag));
          await sleep(20);
        }
        duringTx += others.seen.length;
      });
      expect(await visibleRows(tag)).toBe(1);
      const seen = await others.stop();

      expect(inside).toHaveLength(6);
      expect(new Set(inside.map((s) => s.pid)).size).toBe(1);
      expect(new Set(inside.map((s) => s.txid)).size).toBe(1);
      expect(invisibleInside).toEqual([0, 0, 0, 0]);
      // The others ran meanwhile (on the other backend), never inside the transaction.
      expect(seen.length).toBeGreaterThan(50);
      // The other sessions kept running while the transaction was open (on the other backend).
      expect(duringTx).toBeGreaterThan(10);
      expect(seen.filter((s) => s.txid === inside[0]!.txid)).toEqual([]);
      expect(new Set(seen.map((s) => s.pid)).size).toBeLessThanOrEqual(2);
    } finally {
      await others.stop();
      await db.end();
      await sql`delete from driver_tx_probe where tag = ${tag}`;
    }
  });

  it("pg Client BEGIN … COMMIT: every statement has the same pid and txid, no other session's statement shares the txid, and its insert is invisible until COMMIT", async () => {
    const tenant = tenantName("tx-pg");
    await configure(tenant, { maxConnections: 2, acquireTimeoutMs: 20_000 });
    const tag = `tx-${tenant}`;
    const client = new pg.Client(pgOptions(testEnv.EDGEPOOL, { tenant }));
    await client.connect();
    const others = hammer(tenant, 8);
    try {
      await until(async () => others.seen.length, (n) => n > 20);
      const inside: Seen[] = [];
      const invisibleInside: number[] = [];
      let duringTx = -others.seen.length;
      await client.query("BEGIN");
      for (let k = 0; k < 6; k++) {
        // With values: pg's unnamed extended protocol; without: the simple protocol.
        const { rows } = k % 2 === 0 ? await client.query<Seen>(`${SEEN} where $1::int >= 0`, [k]) : await client.query<Seen>(SEEN);
        inside.push({ pid: rows[0]!.pid, txid: rows[0]!.txid });
        if (k === 2) await client.query("insert into driver_tx_probe (tag) values ($1)", [tag]);
        if (k >= 2) invisibleInside.push(await visibleRows(tag));
        await sleep(20);
      }
      duringTx += others.seen.length;
      await client.query("COMMIT");
      expect(await visibleRows(tag)).toBe(1);
      const seen = await others.stop();

      expect(new Set(inside.map((s) => s.pid)).size).toBe(1);
      expect(new Set(inside.map((s) => s.txid)).size).toBe(1);
      expect(invisibleInside).toEqual([0, 0, 0, 0]);
      expect(seen.length).toBeGreaterThan(50);
      // The other sessions kept running while the transaction was open (on the other backend).
      expect(duringTx).toBeGreaterThan(10);
      expect(seen.filter((s) => s.txid === inside[0]!.txid)).toEqual([]);
    } finally {
      await others.stop();
      await client.end();
      await sql`delete from driver_tx_probe where tag = ${tag}`;
    }
  });
});

describe("session state does not leak between sessions in transaction mode", () => {
  it("SET statement_timeout, a temp table and pg_advisory_lock of session A are gone for session B on the same backend (same pid; pg_locks shows no advisory lock)", async () => {
    const tenant = tenantName("leak-state");
    await configure(tenant, { maxConnections: 1, acquireTimeoutMs: 10_000 });
    const lockKey = 0x5eed0000 + Math.floor(Math.random() * 0xffff);
    const a = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, onnotice: () => {} }));
    const b = new pg.Client(pgOptions(testEnv.EDGEPOOL, { tenant }));
    try {
      // Session A: one transaction that changes session state three ways (a SET outlives its COMMIT).
      const [locked] = await a.begin(async (tx) => {
        await tx.unsafe("set statement_timeout = '4321ms'");
        await tx`create temp table driver_leak_a (x int)`;
        return tx<{ pid: number; timeout: string; temp: string | null }[]>`
          select pg_backend_pid() as pid, pg_advisory_lock(${lockKey}::bigint)::text as locked,
                 current_setting('statement_timeout') as timeout, to_regclass('driver_leak_a')::text as temp`;
      });
      const pidA = locked!.pid;
      // Sanity: within A's own batch the state was there (else the test could not fail).
      expect(locked!.temp).toBe("driver_leak_a");
      expect(locked!.timeout).toBe("4321ms");

      // The backend is A's no more: pg_locks shows no advisory lock with that key (the reset ran).
      const locks = await until(
        () => sql<{ pid: number }[]>`select pid from pg_locks where locktype = 'advisory' and ((classid::bigint << 32) | objid::bigint) = ${lockKey}`,
        (rows) => rows.length === 0,
      );
      expect(locks).toEqual([]);

      await b.connect();
      const { rows } = await b.query<{ pid: number; timeout: string; temp: string | null; free: boolean }>(
        "select pg_backend_pid() as pid, current_setting('statement_timeout') as timeout, to_regclass('driver_leak_a')::text as temp, pg_try_advisory_lock($1::bigint) as free",
        [lockKey],
      );
      const seenByB = rows[0]!;
      expect(seenByB.pid).toBe(pidA);
      expect(seenByB.timeout).toBe("0");
      expect(seenByB.temp).toBeNull();
      expect(seenByB.free).toBe(true);
    } finally {
      await a.end();
      await b.end();
    }
    // B's own lock went with the reset too: nothing is left behind.
    expect(await until(
      () => sql`select 1 from pg_locks where locktype = 'advisory' and ((classid::bigint << 32) | objid::bigint) = ${lockKey}`,
      (rows) => rows.length === 0,
    )).toHaveLength(0);
  });

  it("a SET hidden behind a comment (no statement text the pool could read as one) still does not reach the next session on the same backend", async () => {
    const tenant = tenantName("leak-comment");
    await configure(tenant, { maxConnections: 1, acquireTimeoutMs: 10_000 });
    const a = new pg.Client(pgOptions(testEnv.EDGEPOOL, { tenant }));
    const b = new pg.Client(pgOptions(testEnv.EDGEPOOL, { tenant }));
    try {
      await a.connect();
      await a.query("/* looks like a comment */ SET statement_timeout = '4321ms'");
      const { rows: [inA] } = await a.query<{ pid: number; timeout: string }>("select pg_backend_pid() as pid, current_setting('statement_timeout') as timeout");
      await b.connect();
      const { rows: [inB] } = await b.query<{ pid: number; timeout: string }>("select pg_backend_pid() as pid, current_setting('statement_timeout') as timeout");
      // Same backend; A's setting was seen by A's own next statement only if it landed there before the reset.
      expect(inB!.pid).toBe(inA!.pid);
      expect(inB!.timeout).toBe("0");
    } finally {
      await a.end();
      await b.end();
    }
  });

  it("a session's SET inside its own transaction is seen by all its statements, but not by the next session's transaction on the same backend", async () => {
    const tenant = tenantName("leak-set");
    await configure(tenant, { maxConnections: 1, acquireTimeoutMs: 10_000 });
    const a = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, onnotice: () => {} }));
    const b = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, onnotice: () => {} }));
    try {
      const [inA] = await a.begin(async (tx) => {
        await tx.unsafe("set search_path = pg_catalog, public");
        await tx.unsafe("set application_name = 'not-edgepool'");
        return tx<{ pid: number; path: string }[]>`select pg_backend_pid() as pid, current_setting('search_path') as path`;
      });
      expect(inA!.path).toBe("pg_catalog, public");
      const [inB] = await b<{ pid: number; path: string; app: string }[]>`
        select pg_backend_pid() as pid, current_setting('search_path') as path, current_setting('application_name') as app`;
      expect(inB!.pid).toBe(inA!.pid);
      expect(inB!.path).toBe('"$user", public');
      expect(inB!.app).toBe(`edgepool:${tenant}`);
    } finally {
      await a.end();
      await b.end();
    }
  });
});
