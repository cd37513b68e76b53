import { SELF } from "cloudflare:test";
import pg from "pg";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pgOptions, postgresOptions } from "../../src/index.ts";
import { configure, observer, serverPids, tenantName, testEnv } from "./helpers.ts";

/** How long after the request's response the server may still show the abandoned transaction. */
const ROLLBACK_BOUND_MS = 2_000;

const sql = observer();
beforeAll(async () => {
  await sql`create table if not exists leak_probe (id serial primary key, tag text not null)`;
  await sql`create table if not exists lock_probe (id int primary key, n int not null)`;
  await sql`insert into lock_probe values (11, 0), (12, 0) on conflict do nothing`;
});
afterAll(() => sql.end());

/** Milliseconds until the observer can take row `lock` with `for update nowait` and `pid` holds no transaction id; polls every 5 ms. */
async function msUntilLockFree(lock: number, pid: number, started: number): Promise<number> {
  for (;;) {
    const free = await sql
      .begin(async (tx) => {
        await tx`select * from lock_probe where id = ${lock} for update nowait`;
        return true;
      })
      .catch((error: { code?: string }) => {
        if (error.code !== "55P03") throw error;
        return false;
      });
    const [held] = await sql<{ n: number }[]>`select count(*)::int as n from pg_locks where pid = ${pid} and locktype = 'transactionid'`;
    if (free && held!.n === 0) return Date.now() - started;
    if (Date.now() - started > ROLLBACK_BOUND_MS * 5) throw new Error(`row ${lock} still locked by pid ${pid} after ${Date.now() - started}ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const DRIVERS = [
  ["postgres.js", "postgres", 11],
  ["pg", "pg", 12],
] as const;

describe("a driver session ends with the Worker request that opened it", () => {
  it.each(DRIVERS)(
    "%s: a request that BEGINs, inserts, locks a row and returns without COMMIT or end() has its transaction rolled back, its row lock freed and its server connection returned",
    async (_name, driver, lock) => {
      const tenant = tenantName(`req-end-${driver}`);
      await configure(tenant, { maxConnections: 1, leaseTimeoutMs: 60_000 });
      const tag = `req-end-${tenant}`;
      const response = await SELF.fetch(`http://edge/driver/abandon?tenant=${tenant}&driver=${driver}&tag=${tag}&lock=${lock}`);
      expect(response.status).toBe(200);
      const { pid, whileOpen } = await response.json<{ pid: number; whileOpen: string }>();
      const started = Date.now();
      // Inside the request, a connection of its own could not take the row: the lock was real.
      expect(whileOpen).toBe("55P03");
      expect(await serverPids(sql, tenant)).toEqual([pid]);

      // leaseTimeoutMs is 60 s: only the request's end can free the row this soon.
      const ms = await msUntilLockFree(lock, pid, started);
      console.log(`[driver-request-end] ${driver}: row lock free and transaction gone ${ms}ms after the response`);
      expect(ms).toBeLessThan(ROLLBACK_BOUND_MS);
      expect(await sql`select * from leak_probe where tag = ${tag}`).toHaveLength(0);
      const [activity] = await sql<{ state: string }[]>`select state from pg_stat_activity where pid = ${pid}`;
      expect(activity?.state).toBe("idle");

      // maxConnections is 1: a follow-up session gets that same backend, outside any transaction.
      const next = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant }));
      const [row] = await next<{ pid: number }[]>`select pg_backend_pid() as pid`;
      expect(row!.pid).toBe(pid);
      await next.end();
      const client = new pg.Client(pgOptions(testEnv.EDGEPOOL, { tenant }));
      await client.connect();
      expect((await client.query("select count(*)::int as n from leak_probe where tag = $1", [tag])).rows).toEqual([{ n: 0 }]);
      await client.end();
      expect(await serverPids(sql, tenant)).toEqual([pid]);
    },
  );
});
