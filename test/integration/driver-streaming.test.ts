import pg from "pg";
import postgres from "postgres";
import { afterAll, describe, expect, it } from "vitest";
import { pgOptions, postgresOptions } from "../../src/index.ts";
import { configure, observer, serverPids, tenantName, testEnv } from "./helpers.ts";

// 50,000 rows of 1,000 characters: a 50 MB result (52 MB on the wire with the DataRow framing).
const ROWS = 50_000;
const WIDTH = 1_000;
const TEXT = "x".repeat(WIDTH);

const sql = observer();
afterAll(() => sql.end());

describe("a 50 MB result streams through the coordinator to a driver", () => {
  it("postgres.js, with forEach, with a cursor and as one plain query: every row arrives whole (count, each value)", async () => {
    const tenant = tenantName("stream-pgjs");
    await configure(tenant, { maxConnections: 1 });
    const db = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant }));
    const query = () => db<{ v: string }[]>`select repeat('x', ${WIDTH}::int) as v from generate_series(1, ${ROWS}::int)`;

    // forEach: one Execute, rows handed over as they arrive and not kept.
    let started = Date.now();
    let rows = 0;
    let wrong = 0;
    await query().forEach((row) => {
      rows++;
      if (row.v !== TEXT) wrong++;
    });
    const forEachMs = Date.now() - started;
    expect({ rows, wrong }).toEqual({ rows: ROWS, wrong: 0 });

    started = Date.now();
    rows = 0;
    for await (const batch of query().cursor(1_000)) {
      for (const row of batch) {
        rows++;
        if (row.v !== TEXT) wrong++;
      }
    }
    const cursorMs = Date.now() - started;
    expect({ rows, wrong }).toEqual({ rows: ROWS, wrong: 0 });

    started = Date.now();
    const result = await query();
    const plainMs = Date.now() - started;
    expect(result.count).toBe(ROWS);
    expect(result.reduce((n, row) => n + (row.v === TEXT ? row.v.length : 0), 0)).toBe(ROWS * WIDTH);
    console.log(`[driver-streaming] postgres.js 50 MB: forEach ${forEachMs}ms, cursor(1000) ${cursorMs}ms, plain query ${plainMs}ms`);

    const [after] = await db<{ pid: number }[]>`select pg_backend_pid() as pid`;
    expect(await serverPids(sql, tenant)).toEqual([after!.pid]);
    await db.end();
  }, 90_000);

  it("pg: every row of a 50 MB result arrives whole (row count, total length)", async () => {
    const tenant = tenantName("stream-pg");
    await configure(tenant, { maxConnections: 1 });
    const client = new pg.Client(pgOptions(testEnv.EDGEPOOL, { tenant }));
    await client.connect();
    const started = Date.now();
    const result = await client.query<{ v: string }>("select repeat('x', $1::int) as v from generate_series(1, $2::int)", [WIDTH, ROWS]);
    const ms = Date.now() - started;
    expect(result.rowCount).toBe(ROWS);
    expect(result.rows).toHaveLength(ROWS);
    expect(result.rows.reduce((n, row) => n + (row.v === TEXT ? row.v.length : 0), 0)).toBe(ROWS * WIDTH);
    console.log(`[driver-streaming] pg 50 MB: ${ms}ms`);
    expect((await client.query("select 1 as one")).rows).toEqual([{ one: 1 }]);
    await client.end();
  }, 60_000);
});
