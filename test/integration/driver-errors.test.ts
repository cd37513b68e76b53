// Errors as drivers see them (design §4): pool errors arrive as an
// ErrorResponse whose message starts with the edgepool code and whose SQLSTATE
// follows the table (53300 is an ERROR: the session stays usable); database
// errors pass through with Postgres' own fields.
import pg from "pg";
import postgres from "postgres";
import { afterAll, describe, expect, it } from "vitest";
import { pgOptions, postgresOptions } from "../../src/index.ts";
import { configure, observer, serverPids, tenantName, testEnv } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

type DriverError = Error & { code?: string; severity?: string; routine?: string; file?: string };

const caught = (e: unknown) => e as DriverError;

async function pgClient(tenant: string): Promise<pg.Client> {
  const client = new pg.Client(pgOptions(testEnv.EDGEPOOL, { tenant }));
  client.on("error", () => {});
  await client.connect();
  return client;
}

/** A pg client of the tenant holding the only server connection in an open transaction; its backend pid. */
async function holdOnly(tenant: string): Promise<{ holder: pg.Client; pid: number }> {
  const holder = await pgClient(tenant);
  await holder.query("BEGIN");
  const pid = (await holder.query<{ pid: number }>("select pg_backend_pid() as pid")).rows[0]!.pid;
  return { holder, pid };
}

describe("pool errors reach drivers with design §4's SQLSTATE", () => {
  it("postgres.js: ACQUIRE_TIMEOUT arrives as 53300 with a message starting ACQUIRE_TIMEOUT:, and the same instance works once the holder commits", async () => {
    const tenant = tenantName("err-acquire");
    await configure(tenant, { maxConnections: 1, acquireTimeoutMs: 200 });
    const { holder, pid } = await holdOnly(tenant);
    const db = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, onnotice: () => {} }));
    try {
      expect(await serverPids(sql, tenant)).toEqual([pid]);
      const started = Date.now();
      const error = await db`select ${1}::int as n`.then(() => undefined, caught);
      const waitedMs = Date.now() - started;
      expect(error).toBeInstanceOf(Error);
      expect(error!.code).toBe("53300");
      expect(error!.severity).toBe("ERROR");
      expect(error!.message).toMatch(/^ACQUIRE_TIMEOUT: /);
      expect(error!.message).toContain("200ms");
      expect(waitedMs).toBeGreaterThanOrEqual(190);
      expect(waitedMs).toBeLessThan(2_000);
      // A simple-protocol query too (no parameters: sql.unsafe uses Query).
      const simple = await db.unsafe("select 1").then(() => undefined, caught);
      expect(simple).toMatchObject({ code: "53300" });

      await holder.query("COMMIT");
      const [row] = await db<{ n: number; pid: number }[]>`select ${2}::int as n, pg_backend_pid() as pid`;
      expect(row).toEqual({ n: 2, pid });
      expect(await serverPids(sql, tenant)).toEqual([pid]);
    } finally {
      await db.end();
      await holder.end();
    }
  });

  it("pg: ACQUIRE_TIMEOUT arrives as 53300 (simple and extended protocol), and the same client works once the holder commits", async () => {
    const tenant = tenantName("err-acquire-pg");
    await configure(tenant, { maxConnections: 1, acquireTimeoutMs: 200 });
    const { holder, pid } = await holdOnly(tenant);
    const client = await pgClient(tenant);
    try {
      const simple = await client.query("select 1").then(() => undefined, caught);
      expect(simple).toMatchObject({ code: "53300", severity: "ERROR" });
      expect(simple!.message).toMatch(/^ACQUIRE_TIMEOUT: /);
      const extended = await client.query("select $1::int as n", [1]).then(() => undefined, caught);
      expect(extended).toMatchObject({ code: "53300", severity: "ERROR" });
      expect(extended!.message).toMatch(/^ACQUIRE_TIMEOUT: /);

      await holder.query("COMMIT");
      const { rows } = await client.query<{ n: number; pid: number }>("select $1::int as n, pg_backend_pid() as pid", [3]);
      expect(rows[0]).toEqual({ n: 3, pid });
      expect(await serverPids(sql, tenant)).toEqual([pid]);
    } finally {
      await client.end();
      await holder.end();
    }
  });

  it("UNKNOWN_TENANT for a tenant never configured reaches postgres.js and pg as 08004 with a message starting UNKNOWN_TENANT:", async () => {
    const tenant = tenantName("err-unknown");
    const db = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, onnotice: () => {} }));
    try {
      const error = await db`select 1`.then(() => undefined, caught);
      expect(error).toMatchObject({ code: "08004" });
      expect(error!.message).toMatch(/^UNKNOWN_TENANT: /);
    } finally {
      await db.end();
    }
    const client = new pg.Client(pgOptions(testEnv.EDGEPOOL, { tenant }));
    client.on("error", () => {});
    const error = await client.connect().then(() => undefined, caught);
    expect(error).toMatchObject({ code: "08004", severity: "FATAL" });
    expect(error!.message).toMatch(/^UNKNOWN_TENANT: /);
    await client.end().catch(() => {});
    // No server connection was ever opened for it.
    expect(await serverPids(sql, tenant)).toEqual([]);
  });
});

describe("database errors pass through with Postgres' fields", () => {
  it("select 1/0 fails with 22012 and the server's own fields in postgres.js and pg, and each session works afterwards on the same backend", async () => {
    const tenant = tenantName("err-db");
    await configure(tenant, { maxConnections: 1, acquireTimeoutMs: 5_000 });
    const db = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, onnotice: () => {} }));
    const client = await pgClient(tenant);
    try {
      const [before] = await db<{ pid: number }[]>`select pg_backend_pid() as pid`;
      const pid = before!.pid;

      const fromPgjs = await db`select 1/0 as boom`.then(() => undefined, caught);
      expect(fromPgjs).toMatchObject({ code: "22012", severity: "ERROR", message: "division by zero", routine: "int4div" });
      expect(fromPgjs!.file).toMatch(/\.c$/);
      const [afterPgjs] = await db<{ n: number; pid: number }[]>`select ${5}::int as n, pg_backend_pid() as pid`;
      expect(afterPgjs).toEqual({ n: 5, pid });

      const fromPg = await client.query("select 1/$1::int as boom", [0]).then(() => undefined, caught);
      expect(fromPg).toMatchObject({ code: "22012", severity: "ERROR", message: "division by zero", routine: "int4div" });
      const simple = await client.query("select 1/0").then(() => undefined, caught);
      expect(simple).toMatchObject({ code: "22012", routine: "int4div" });
      const { rows } = await client.query<{ n: number; pid: number }>("select $1::int as n, pg_backend_pid() as pid", [6]);
      expect(rows[0]).toEqual({ n: 6, pid });

      // An error inside a transaction: 25P02 until ROLLBACK, then the session goes on.
      await client.query("BEGIN");
      await expect(client.query("select 1/0")).rejects.toMatchObject({ code: "22012" });
      await expect(client.query("select 1")).rejects.toMatchObject({ code: "25P02" });
      await client.query("ROLLBACK");
      expect((await client.query<{ n: number }>("select 7 as n")).rows[0]!.n).toBe(7);
      // The server kept the same one backend throughout.
      expect(await serverPids(sql, tenant)).toEqual([pid]);
    } finally {
      await db.end();
      await client.end();
    }
  });
});
