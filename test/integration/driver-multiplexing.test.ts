// Many driver sessions over few server connections (design §4, transaction mode):
// every answer belongs to its own query, and the server never holds more
// backends for the tenant than maxConnections, as pg_stat_activity shows.
import pg from "pg";
import postgres from "postgres";
import { afterAll, describe, expect, it } from "vitest";
import { pgOptions, postgresOptions } from "../../src/index.ts";
import { configure, observer, serverCount, tenantName, testEnv } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

/** Samples the tenant's backend count on the server until stopped. */
function sampler(tenant: string) {
  let running = true;
  const samples: number[] = [];
  const done = (async () => {
    while (running) samples.push(await serverCount(sql, tenant));
  })();
  return {
    samples,
    async stop() {
      running = false;
      await done;
      return samples;
    },
  };
}

const QUERY = "select $1::int as i, pg_backend_pid() as pid, pg_sleep(0.01)";

describe("driver sessions are multiplexed over maxConnections server connections", () => {
  it("200 postgres.js instances × 3 queries each get their own answers, and the server never shows more than 10 backends for the tenant", async () => {
    const tenant = tenantName("mux-pgjs");
    await configure(tenant, { maxConnections: 10, acquireTimeoutMs: 30_000 });
    const instances = Array.from({ length: 200 }, () => postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, onnotice: () => {} })));
    const watch = sampler(tenant);
    try {
      const answers = await Promise.all(
        instances.map(async (db, n) => {
          const seen: { want: number; got: number; pid: number }[] = [];
          for (let q = 0; q < 3; q++) {
            const want = n * 100 + q;
            const [row] = await db.unsafe<{ i: number; pid: number }[]>(QUERY, [want]);
            seen.push({ want, got: row!.i, pid: row!.pid });
          }
          return seen;
        }),
      );
      const samples = await watch.stop();
      const flat = answers.flat();
      expect(flat).toHaveLength(600);
      expect(flat.filter((a) => a.got !== a.want)).toEqual([]);
      const pids = new Set(flat.map((a) => a.pid));
      expect(pids.size).toBeGreaterThan(1);
      expect(pids.size).toBeLessThanOrEqual(10);
      expect(samples.length).toBeGreaterThan(3);
      expect(Math.max(...samples)).toBeGreaterThan(0);
      expect(Math.max(...samples)).toBeLessThanOrEqual(10);
      // Every pid that answered is one of the tenant's own backends on the server.
      const serverSide = await sql<{ pid: number }[]>`select pid from pg_stat_activity where pid in ${sql([...pids])} and application_name like 'edgepool:%'`;
      expect(serverSide.length).toBe(pids.size);
    } finally {
      await watch.stop();
      await Promise.all(instances.map((db) => db.end()));
    }
  });

  it("200 postgres.js instances using tagged templates (prepared statements) get their own answers within 10 backends", async () => {
    const tenant = tenantName("mux-pgjs-tag");
    await configure(tenant, { maxConnections: 10, acquireTimeoutMs: 30_000 });
    const instances = Array.from({ length: 200 }, () => postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, onnotice: () => {} })));
    const watch = sampler(tenant);
    try {
      const answers = await Promise.all(
        instances.map(async (db, n) => {
          const wrong: number[] = [];
          for (let q = 0; q < 3; q++) {
            const want = n * 100 + q;
            const [row] = await db<{ i: number }[]>`select ${want}::int as i, pg_sleep(0.01)`;
            if (row!.i !== want) wrong.push(want);
          }
          return wrong;
        }),
      );
      const samples = await watch.stop();
      expect(answers.flat()).toEqual([]);
      expect(Math.max(...samples)).toBeLessThanOrEqual(10);
      expect(Math.max(...samples)).toBeGreaterThan(0);
    } finally {
      await watch.stop();
      await Promise.all(instances.map((db) => db.end()));
    }
  });

  it("pg.Pool and pg.Client instances (20 each, 5 queries each) get their own answers, and the server never shows more than 10 backends", async () => {
    const tenant = tenantName("mux-pg");
    await configure(tenant, { maxConnections: 10, acquireTimeoutMs: 30_000 });
    const pools = Array.from({ length: 20 }, () => new pg.Pool(pgOptions(testEnv.EDGEPOOL, { tenant, max: 2 })));
    const clients = Array.from({ length: 20 }, () => new pg.Client(pgOptions(testEnv.EDGEPOOL, { tenant })));
    const watch = sampler(tenant);
    try {
      await Promise.all(clients.map((c) => c.connect()));
      const run = async (db: pg.Pool | pg.Client, base: number) => {
        // A pool runs its 5 queries concurrently over its 2 sessions; a client pipelines them on its one.
        const results = await Promise.all(
          Array.from({ length: 5 }, (_, q) => db.query<{ i: number; pid: number }>(QUERY, [base + q])),
        );
        return results.map((r, q) => ({ want: base + q, got: r.rows[0]!.i, pid: r.rows[0]!.pid }));
      };
      const answers = await Promise.all([
        ...pools.map((p, n) => run(p, n * 100)),
        ...clients.map((c, n) => run(c, 100_000 + n * 100)),
      ]);
      const samples = await watch.stop();
      const flat = answers.flat();
      expect(flat).toHaveLength(200);
      expect(flat.filter((a) => a.got !== a.want)).toEqual([]);
      expect(new Set(flat.map((a) => a.pid)).size).toBeLessThanOrEqual(10);
      expect(samples.length).toBeGreaterThan(3);
      expect(Math.max(...samples)).toBeGreaterThan(0);
      expect(Math.max(...samples)).toBeLessThanOrEqual(10);
    } finally {
      await watch.stop();
      await Promise.all([...pools.map((p) => p.end()), ...clients.map((c) => c.end())]);
    }
  });
});
