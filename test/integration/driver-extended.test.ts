// The extended protocol's two-step exchange (design §4): postgres.js with
// `prepare: false` and `sql.unsafe(text, params)` sends Parse+Describe+Flush,
// waits for the description, then Bind+Execute+Sync on the unnamed statement.
// The server connection must stay attached from the Parse to the Sync: were
// it released after the Flush, the Bind would reach a backend holding another
// session's unnamed statement (wrong columns, wrong values, or an error).
import postgres from "postgres";
import { afterAll, describe, expect, it } from "vitest";
import { postgresOptions } from "../../src/index.ts";
import { configure, observer, serverCount, serverPids, tenantName, testEnv } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

/** Shapes with different parameter counts, types and columns, so a crossed unnamed statement cannot pass unnoticed. */
const SHAPES = [
  "select $1::int as a, $2::text as b, pg_backend_pid() as pid",
  "select $1::text as b, pg_backend_pid() as pid, $2::int as a, $3::int as c",
  "select pg_backend_pid() as pid, $1::bigint::text as a, length($2::text) as n, $2::text as b, pg_sleep(0.001)",
] as const;

type Row = { a: number | string; b: string; c?: number; n?: number; pid: number };

function args(shape: number, i: number, q: number): (string | number)[] {
  const b = `i${i}-q${q}-${"x".repeat((i * 7 + q) % 40)}`;
  if (shape === 0) return [i * 1000 + q, b];
  if (shape === 1) return [b, i * 1000 + q, -(i * 1000 + q)];
  return [String(i * 1000 + q), b];
}

function check(shape: number, i: number, q: number, row: Row): string | undefined {
  const want = args(shape, i, q);
  const ok =
    shape === 0 ? row.a === want[0] && row.b === want[1]
    : shape === 1 ? row.b === want[0] && row.a === want[1] && row.c === want[2]
    : row.a === want[0] && row.b === want[1] && row.n === (want[1] as string).length;
  return ok ? undefined : `instance ${i} query ${q} shape ${shape}: got ${JSON.stringify(row)}, want ${JSON.stringify(want)}`;
}

async function underContention(run: (db: postgres.Sql, shape: number, params: (string | number)[]) => Promise<Row>) {
  const tenant = tenantName("extended");
  await configure(tenant, { maxConnections: 2, acquireTimeoutMs: 30_000 });
  const instances = Array.from({ length: 40 }, () => postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, prepare: false, onnotice: () => {} })));
  let sampling = true;
  const samples: number[] = [];
  const sampler = (async () => {
    while (sampling) samples.push(await serverCount(sql, tenant));
  })();
  try {
    const outcomes = await Promise.all(
      instances.map(async (db, i) => {
        const problems: string[] = [];
        const pids = new Set<number>();
        // Pipelined on each instance too: 10 queries in flight per session.
        const rows = await Promise.all(Array.from({ length: 10 }, (_, q) => run(db, (i + q) % SHAPES.length, args((i + q) % SHAPES.length, i, q))));
        rows.forEach((row, q) => {
          const problem = check((i + q) % SHAPES.length, i, q, row);
          if (problem) problems.push(problem);
          pids.add(row.pid);
        });
        return { problems, pids };
      }),
    );
    sampling = false;
    await sampler;
    const tenantPids = new Set(await serverPids(sql, tenant));
    return { outcomes, samples, tenantPids };
  } finally {
    sampling = false;
    await sampler;
    await Promise.all(instances.map((db) => db.end()));
  }
}

describe("Parse/Describe/Flush then Bind/Execute/Sync keeps its server connection until the Sync", () => {
  it("40 postgres.js instances with prepare: false (tagged templates) on maxConnections 2: no error, no crossed answers, at most 2 backends", async () => {
    const { outcomes, samples, tenantPids } = await underContention(async (db, shape, p) => {
      if (shape === 0) return (await db<Row[]>`select ${p[0]}::int as a, ${p[1]}::text as b, pg_backend_pid() as pid`)[0]!;
      if (shape === 1) return (await db<Row[]>`select ${p[0]}::text as b, pg_backend_pid() as pid, ${p[1]}::int as a, ${p[2]}::int as c`)[0]!;
      return (await db<Row[]>`select pg_backend_pid() as pid, ${p[0]}::bigint::text as a, length(${p[1]}::text) as n, ${p[1]}::text as b, pg_sleep(0.001)`)[0]!;
    });
    expect(outcomes.flatMap((o) => o.problems)).toEqual([]);
    const pids = new Set(outcomes.flatMap((o) => [...o.pids]));
    expect(pids.size).toBeLessThanOrEqual(2);
    for (const pid of pids) expect(tenantPids.has(pid)).toBe(true);
    expect(Math.max(...samples)).toBeGreaterThan(0);
    expect(Math.max(...samples)).toBeLessThanOrEqual(2);
  });

  it("40 postgres.js instances using sql.unsafe(text, params) on maxConnections 2: no error, no crossed answers, at most 2 backends", async () => {
    const { outcomes, samples, tenantPids } = await underContention(async (db, shape, p) => (await db.unsafe<Row[]>(SHAPES[shape]!, p))[0]!);
    expect(outcomes.flatMap((o) => o.problems)).toEqual([]);
    const pids = new Set(outcomes.flatMap((o) => [...o.pids]));
    expect(pids.size).toBeLessThanOrEqual(2);
    for (const pid of pids) expect(tenantPids.has(pid)).toBe(true);
    expect(Math.max(...samples)).toBeLessThanOrEqual(2);
  });

  it("no statement is left prepared on the server by unnamed-statement traffic", async () => {
    const tenant = tenantName("extended-unnamed");
    await configure(tenant, { maxConnections: 1, acquireTimeoutMs: 10_000 });
    const db = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, prepare: false, onnotice: () => {} }));
    try {
      for (let q = 0; q < 5; q++) {
        const [row] = await db.unsafe<Row[]>(SHAPES[0], [q, `q${q}`]);
        expect(row!.a).toBe(q);
      }
      // Same backend (maxConnections 1), seen from inside: the unnamed statement is not listed, nothing named was made.
      const rows = await db.unsafe<{ name: string }[]>("select name from pg_prepared_statements");
      expect(rows.map((r) => r.name)).toEqual([]);
    } finally {
      await db.end();
    }
  });
});
