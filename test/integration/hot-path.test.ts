import { afterAll, describe, expect, it } from "vitest";
import { createPool, type Connection } from "../../src/index.ts";
import { applicationName } from "../../worker/server/driver.ts";
import { configure, observer, serverCount, tenantName, testEnv } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

describe("hot path", () => {
  it("a statement with parameters is prepared once per connection; the reset keeps it but drops what a session made with PREPARE", async () => {
    const tenant = tenantName("prepared");
    await configure(tenant, { maxConnections: 1 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const text = "select $1::int + 1 as n, pg_backend_pid() as pid";
    const runs = [];
    for (let i = 0; i < 3; i++) runs.push((await db.query<{ n: number; pid: number }>(text, [i]))[0]!);
    expect(runs.map((r) => r.n)).toEqual([1, 2, 3]);
    const pid = runs[0]!.pid;
    expect(runs.every((r) => r.pid === pid)).toBe(true);
    const executions = async (conn: { query: Connection["query"] }) =>
      [...(await conn.query<{ executions: number }>("select (generic_plans + custom_plans)::int as executions from pg_prepared_statements where statement = $1", [text]))];

    // The server's view of that backend: one prepared statement, executed three times.
    const conn = await db.getConnection();
    expect(conn.pid).toBe(pid);
    expect(await executions(conn)).toEqual([{ executions: 3 }]);
    // A lease's statements are prepared the same way; what it prepares with PREPARE is its session state.
    await conn.query("select $1::int as lease_too", [1]);
    await conn.query('prepare "mine""odd" as select 1'); // a name that needs quoting to be deallocated
    await conn.release(); // the reset: DISCARD ALL, except the pool's own statements

    const again = (await db.query<{ n: number; pid: number }>(text, [10]))[0]!;
    expect(again).toEqual({ n: 11, pid });
    const next = await db.getConnection();
    expect(next.pid).toBe(pid);
    expect(await executions(next)).toEqual([{ executions: 4 }]);
    const left = await next.query<{ statement: string; from_sql: boolean }>("select statement, from_sql from pg_prepared_statements where statement like '%mine%' or statement like '%lease_too%'");
    expect([...left].filter((r) => !r.statement.includes("pg_prepared_statements"))).toEqual([{ statement: "select $1::int as lease_too", from_sql: false }]);
    // A session that drops prepared statements itself (DEALLOCATE ALL): the coordinator honours it and
    // prepares the statement afresh when it is next needed, on the same backend.
    await next.query("deallocate all");
    expect(await executions(next)).toEqual([]);
    await next.release();
    expect((await db.query<{ n: number; pid: number }>(text, [20]))[0]).toEqual({ n: 21, pid });
    const last = await db.getConnection();
    expect(await executions(last)).toEqual([{ executions: 1 }]);
    await last.release();
  });

  it("at max, one-shot queries are pipelined on the busy connections: never more server backends than maxConnections, every answer to its query", async () => {
    const tenant = tenantName("pipeline");
    await configure(tenant, { maxConnections: 2, pipelineDepth: 4 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const n = 60;
    const results = await Promise.all(Array.from({ length: n }, (_, i) =>
      db.query<{ i: number; pid: number }>("select $1::int as i, pg_backend_pid() as pid from pg_sleep(0.005)", [i])));
    expect(results.map((r) => r[0]!.i)).toEqual([...Array(n).keys()]);
    expect(new Set(results.map((r) => r[0]!.pid)).size).toBeLessThanOrEqual(2);
    expect(await serverCount(sql, tenant)).toBeLessThanOrEqual(2);
    const stats = await db.stats();
    expect(stats.pipelined).toBeGreaterThan(0);
    expect(stats.acquired).toBe(n);
  });

  it("a statement that changes session state is never pipelined: it runs alone and the connection is reset before the next one", async () => {
    const tenant = tenantName("pipeline-session");
    await configure(tenant, { maxConnections: 1, pipelineDepth: 4 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const [, , after] = await Promise.all([
      db.query("select pg_sleep(0.05)"),
      db.query("set application_name = 'leaked'"),
      db.query<{ name: string }>("select current_setting('application_name') as name, $1::int as one", [1]),
    ]);
    expect(after[0]!.name).toBe(applicationName(tenant));
    expect((await db.stats()).pipelined).toBe(0);
  });
});
