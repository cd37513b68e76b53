// Named prepared statements through drivers in transaction mode (design §4):
// a statement follows its session to any backend (re-prepared there), the
// per-backend set stays within maxPreparedStatements, and sessions sharing a
// backend never clash over client names. Checked in pg_prepared_statements,
// read from inside each backend (it is per backend).
import pg from "pg";
import postgres from "postgres";
import { afterAll, describe, expect, it } from "vitest";
import { pgOptions, postgresOptions } from "../../src/index.ts";
import { configure, observer, serverCount, tenantName, testEnv } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

interface PreparedRow {
  name: string;
  statement: string;
}

/** A pg client of the tenant; its queries without values use the simple protocol, so they add no prepared statement. */
async function pgClient(tenant: string): Promise<pg.Client> {
  const client = new pg.Client(pgOptions(testEnv.EDGEPOOL, { tenant }));
  await client.connect();
  return client;
}

/** Inside an open transaction of `client`: its backend's pid and prepared statements. */
async function insideBackend(client: pg.Client): Promise<{ pid: number; prepared: PreparedRow[] }> {
  const pid = (await client.query<{ pid: number }>("select pg_backend_pid() as pid")).rows[0]!.pid;
  const { rows } = await client.query<PreparedRow>("select name, statement from pg_prepared_statements where not from_sql order by name");
  return { pid, prepared: rows };
}

/** Runs the session's statement once; its answer and the backend that gave it. */
type RunOnce = (n: number) => Promise<{ n: number; pid: number }>;

/**
 * Prepares the statement on backend X through `run`, holds X in another
 * session's open transaction, runs it again (now on Y), and reads
 * pg_prepared_statements from inside both backends.
 */
async function followsToAnotherBackend(tenant: string, text: string, run: RunOnce): Promise<void> {
  const holders: pg.Client[] = [];
  try {
    const first = await run(7);
    expect(first.n).toBe(7);
    const x = first.pid;

    // Hold X in an open transaction: holders begin until one is on X; the others commit (at most 2 backends exist).
    let onX: pg.Client | undefined;
    let xSeen: PreparedRow[] = [];
    while (!onX) {
      const holder = await pgClient(tenant);
      holders.push(holder);
      await holder.query("BEGIN");
      const inside = await insideBackend(holder);
      if (inside.pid === x) {
        onX = holder;
        xSeen = inside.prepared;
      }
      expect(holders.length).toBeLessThanOrEqual(2);
    }
    for (const other of holders) if (other !== onX) await other.query("COMMIT");
    expect(xSeen.filter((p) => p.statement === text)).toHaveLength(1);
    const serverName = xSeen.find((p) => p.statement === text)!.name;
    expect(serverName).toMatch(/^edgepool_\d+$/);

    // X is held: the driver's cached statement (Bind+Execute, no Parse) must run on Y.
    const second = await run(8);
    expect(second.n).toBe(8);
    const y = second.pid;
    expect(y).not.toBe(x);

    // Y, from inside: it holds the statement now, under the same server-side name.
    const onY = await pgClient(tenant);
    holders.push(onY);
    await onY.query("BEGIN");
    const ySeen = await insideBackend(onY);
    expect(ySeen.pid).toBe(y);
    expect(ySeen.prepared.filter((p) => p.statement === text)).toEqual([{ name: serverName, statement: text }]);
    // X still has it too (read again from inside X's open transaction).
    const xAgain = await insideBackend(onX);
    expect(xAgain.pid).toBe(x);
    expect(xAgain.prepared.filter((p) => p.statement === text)).toEqual([{ name: serverName, statement: text }]);
    await onY.query("COMMIT");
    await onX.query("COMMIT");

    // And it keeps working wherever it lands.
    const again = await Promise.all([1, 2, 3, 4].map((n) => run(n)));
    expect(again.map((r) => r.n)).toEqual([1, 2, 3, 4]);
  } finally {
    await Promise.all(holders.map((h) => h.end()));
  }
}

describe("named statements follow their session across backends", () => {
  it("a postgres.js statement prepared on backend X runs on backend Y when X is busy, without a driver retry, and pg_prepared_statements on both backends holds it", async () => {
    const tenant = tenantName("prep-move");
    await configure(tenant, { maxConnections: 2, acquireTimeoutMs: 10_000 });
    const text = "select $1::int as n, pg_backend_pid() as pid";
    // postgres.js re-sends a query whose cached statement the server lacks (routine FetchPreparedStatement): count what it writes.
    const written: string[] = [];
    const db = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, onnotice: () => {}, debug: (_c: number, query: string) => void written.push(query) }));
    try {
      await followsToAnotherBackend(tenant, text, async (n) => {
        const [row] = await db<{ n: number; pid: number }[]>`select ${n}::int as n, pg_backend_pid() as pid`;
        return row!;
      });
      // One write per run (6 runs): none was retried after a "does not exist" error.
      expect(written).toHaveLength(6);
    } finally {
      await db.end();
    }
  });

  it("a pg named query ({ name }) prepared on backend X runs on backend Y when X is busy (pg sends Bind/Execute only), and pg_prepared_statements on both backends holds it", async () => {
    const tenant = tenantName("prep-move-pg");
    await configure(tenant, { maxConnections: 2, acquireTimeoutMs: 10_000 });
    const text = "select $1::int as n, pg_backend_pid() as pid";
    const client = await pgClient(tenant);
    try {
      await followsToAnotherBackend(tenant, text, async (n) => {
        const { rows } = await client.query<{ n: number; pid: number }>({ name: "move-n", text, values: [n] });
        return rows[0]!;
      });
    } finally {
      await client.end();
    }
  });
});

describe("maxPreparedStatements bounds each backend's statements", () => {
  it("with maxPreparedStatements 3, five distinct statements leave at most 3 in the backend's pg_prepared_statements, and all five still answer when run again", async () => {
    const tenant = tenantName("prep-evict");
    await configure(tenant, { maxConnections: 1, maxPreparedStatements: 3, acquireTimeoutMs: 10_000 });
    // Evicted statements are re-prepared by the coordinator, not by a postgres.js retry: count its writes.
    let written = 0;
    const db = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, onnotice: () => {}, debug: () => void written++ }));
    const texts = [0, 1, 2, 3, 4].map((k) => `select $1::int + ${k} as v, pg_backend_pid() as pid`);
    const viewer = await pgClient(tenant);
    try {
      const run = async () => {
        const out: { v: number; pid: number }[] = [];
        for (const [k, text] of texts.entries()) {
          const [row] = await db.unsafe<{ v: number; pid: number }[]>(text, [100 * k], { prepare: true });
          out.push(row!);
        }
        return out;
      };
      const firstRun = await run();
      expect(firstRun.map((r) => r.v)).toEqual([0, 101, 202, 303, 404]);
      const pid = firstRun[0]!.pid;
      expect(new Set(firstRun.map((r) => r.pid))).toEqual(new Set([pid]));

      // maxConnections 1: the viewer's simple query runs on the same backend.
      const seen = async () => {
        const { rows } = await viewer.query<PreparedRow & { pid: number }>(
          "select pg_backend_pid() as pid, name, statement from pg_prepared_statements where not from_sql",
        );
        for (const row of rows) expect(row.pid).toBe(pid);
        return rows.filter((r) => texts.includes(r.statement));
      };
      const afterFirst = await seen();
      expect(afterFirst.length).toBeGreaterThan(0);
      expect(afterFirst.length).toBeLessThanOrEqual(3);
      // The three most recent ones are the ones kept (LRU).
      expect(afterFirst.map((r) => r.statement).sort()).toEqual(texts.slice(2).sort());

      const secondRun = await run();
      expect(secondRun.map((r) => r.v)).toEqual([0, 101, 202, 303, 404]);
      expect(new Set(secondRun.map((r) => r.pid))).toEqual(new Set([pid]));
      const afterSecond = await seen();
      expect(afterSecond.length).toBeLessThanOrEqual(3);
      expect(afterSecond.map((r) => r.statement).sort()).toEqual(texts.slice(2).sort());
      expect(written).toBe(10);
    } finally {
      await db.end();
      await viewer.end();
    }
  });
});

describe("prepared statements under contention", () => {
  // With maxPreparedStatements 4 < 6 texts, backends keep evicting: cached Binds keep needing a re-prepare.
  it.each([
    { label: "default maxPreparedStatements", maxPreparedStatements: 200 },
    { label: "maxPreparedStatements 4 (evictions and re-prepares all along)", maxPreparedStatements: 4 },
  ])("50 postgres.js instances × 20 queries over 6 distinct parameterized texts (prepare: true) on maxConnections 3, $label: no error, no driver retry, every answer right, at most 3 backends", async ({ maxPreparedStatements }) => {
    const tenant = tenantName("prep-load");
    await configure(tenant, { maxConnections: 3, maxPreparedStatements, acquireTimeoutMs: 30_000 });
    type Row = { v: string; pid: number };
    const shapes: ((db: postgres.Sql, n: number) => Promise<{ got: string; want: string; pid: number }>)[] = [
      async (db, n) => ({ got: (await db<Row[]>`select ${n}::int::text as v, pg_backend_pid() as pid`)[0]!.v, want: String(n), pid: 0 }),
      async (db, n) => ({ got: (await db<Row[]>`select (${n}::int * 2)::text as v, pg_backend_pid() as pid`)[0]!.v, want: String(n * 2), pid: 0 }),
      async (db, n) => ({ got: (await db<Row[]>`select ${"s" + n}::text as v, pg_backend_pid() as pid`)[0]!.v, want: "s" + n, pid: 0 }),
      async (db, n) => ({ got: (await db<Row[]>`select (${n}::int + ${1}::int)::text as v, pg_backend_pid() as pid`)[0]!.v, want: String(n + 1), pid: 0 }),
      async (db, n) => ({ got: (await db<Row[]>`select concat(${n}::int, '-', ${"x"}::text) as v, pg_backend_pid() as pid`)[0]!.v, want: `${n}-x`, pid: 0 }),
      async (db, n) => ({ got: (await db<Row[]>`select v::text, pg_backend_pid() as pid from generate_series(${n}::int, ${n}::int) as v`)[0]!.v, want: String(n), pid: 0 }),
    ];
    // postgres.js silently re-sends a query whose statement the server lacks: count writes, so a retry shows.
    let written = 0;
    const instances = Array.from({ length: 50 }, () => postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, onnotice: () => {}, debug: () => void written++ })));
    let sampling = true;
    const samples: number[] = [];
    const sampler = (async () => {
      while (sampling) samples.push(await serverCount(sql, tenant));
    })();
    try {
      const results = await Promise.all(
        instances.map(async (db, i) => {
          const out: { got: string; want: string }[] = [];
          for (let q = 0; q < 20; q++) out.push(await shapes[(i + q) % shapes.length]!(db, i * 1000 + q));
          return out;
        }),
      );
      sampling = false;
      await sampler;
      const flat = results.flat();
      expect(flat).toHaveLength(1000);
      expect(flat.filter((r) => r.got !== r.want)).toEqual([]);
      expect(written).toBe(1000);
      const pids = await Promise.all(instances.slice(0, 10).map(async (db) => (await db<{ pid: number }[]>`select pg_backend_pid() as pid`)[0]!.pid));
      expect(new Set(pids).size).toBeLessThanOrEqual(3);
      expect(Math.max(...samples)).toBeGreaterThan(0);
      expect(Math.max(...samples)).toBeLessThanOrEqual(3);
    } finally {
      sampling = false;
      await sampler;
      await Promise.all(instances.map((db) => db.end()));
    }
  });
});

describe("pg named queries across sessions on one backend", () => {
  it("two pg Clients using { name: \"get-n\" } on the same backend both work with no \"already exists\" error, and the server holds edgepool's name, not the client's", async () => {
    const tenant = tenantName("prep-pg-name");
    await configure(tenant, { maxConnections: 1, acquireTimeoutMs: 10_000 });
    const text = "select $1::int as n, pg_backend_pid() as pid";
    const a = await pgClient(tenant);
    const b = await pgClient(tenant);
    // Same client name, another text: each session's name means its own statement.
    const c = await pgClient(tenant);
    try {
      const pids = new Set<number>();
      for (let round = 0; round < 5; round++) {
        const [ra, rb, rc] = await Promise.all([
          a.query<{ n: number; pid: number }>({ name: "get-n", text, values: [round] }),
          b.query<{ n: number; pid: number }>({ name: "get-n", text, values: [round + 100] }),
          c.query<{ n: number; pid: number }>({ name: "get-n", text: "select $1::int * -1 as n, pg_backend_pid() as pid", values: [round + 1] }),
        ]);
        expect([ra.rows[0]!.n, rb.rows[0]!.n, rc.rows[0]!.n]).toEqual([round, round + 100, -(round + 1)]);
        for (const r of [ra, rb, rc]) pids.add(r.rows[0]!.pid);
      }
      expect(pids.size).toBe(1);
      const { rows } = await a.query<PreparedRow & { pid: number }>("select pg_backend_pid() as pid, name, statement from pg_prepared_statements where not from_sql");
      expect(rows.every((r) => pids.has(r.pid))).toBe(true);
      expect(rows.map((r) => r.name)).not.toContain("get-n");
      expect(rows.filter((r) => r.statement === text)).toHaveLength(1);
      expect(rows.find((r) => r.statement === text)!.name).toMatch(/^edgepool_\d+$/);
    } finally {
      await Promise.all([a.end(), b.end(), c.end()]);
    }
  });
});
