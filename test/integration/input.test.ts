import { afterAll, describe, expect, it } from "vitest";
import { createPool, getConnection, PoolError } from "../../src/index.ts";
import { configure, observer, putTenant, serverCount, tenantName, testEnv } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

describe("bad input gets a clear error and loses nothing", () => {
  it("unknown or invalid options are refused with INVALID_OPTION naming the key and the value", async () => {
    const tenant = tenantName("options");
    const stub = testEnv.EDGEPOOL.get(testEnv.EDGEPOOL.idFromName(tenant));
    const unknown = await stub.configure(tenant, { connectionString: testEnv.DATABASE_URL, options: { maxConnection: 5 } });
    expect(unknown).toMatchObject({ ok: false, error: { code: "INVALID_OPTION" } });
    expect(!unknown.ok && unknown.error.message).toMatch(/^INVALID_OPTION: option "maxConnection" = 5 is not an option/);
    const negative = await stub.configure(tenant, { connectionString: testEnv.DATABASE_URL, options: { idleTimeoutMs: -1 } });
    expect(!negative.ok && negative.error.message).toBe('INVALID_OPTION: option "idleTimeoutMs" = -1 must be an integer >= 0');
    const text = await stub.configure(tenant, { connectionString: testEnv.DATABASE_URL, options: { maxConnections: "ten" } });
    expect(!text.ok && text.error.message).toBe('INVALID_OPTION: option "maxConnections" = "ten" must be an integer >= 0');
    expect(() => createPool(testEnv.EDGEPOOL, { tenant, acquireTimeout: 5 } as never)).toThrow(/INVALID_OPTION: option "acquireTimeout"/);
    await configure(tenant, { maxConnections: 1 });
    await expect(getConnection(testEnv.EDGEPOOL, { tenant, acquireTimeoutMs: -5 })).rejects.toMatchObject({ code: "INVALID_OPTION" });
  });

  it("PUT /v1/tenants/:tenant never echoes a value that may hold a secret, and still names the key", async () => {
    const tenant = tenantName("secret-echo");
    // Made up per run, so a failing assertion prints nothing anyone could reuse.
    const password = `pw-${crypto.randomUUID()}`;
    const replica = `postgres://app:${password}@replica.example.com:5432/app`;
    const named = await putTenant(tenant, { connectionString: testEnv.DATABASE_URL, replicaConnectionString: replica });
    expect(named.status).toBe(400);
    expect(named.json.error).toMatchObject({ code: "INVALID_OPTION" });
    expect(named.text).toContain('option \\"replicaConnectionString\\" = (value hidden: may hold a secret)');
    expect(named.text).not.toContain(password);
    const innocent = await putTenant(tenant, { connectionString: testEnv.DATABASE_URL, maxConnections: replica });
    expect(innocent.json.error.message).toMatch(/^INVALID_OPTION: option "maxConnections" = \(value hidden: may hold a secret\) must be an integer/);
    expect(innocent.text).not.toContain(password);
    const plain = await putTenant(tenant, { connectionString: testEnv.DATABASE_URL, maxConnection: 5 });
    expect(plain.json.error.message).toMatch(/^INVALID_OPTION: option "maxConnection" = 5 is not an option/);
  });

  it("a non-string query, non-array parameters and more parameters than the protocol allows are refused; the pool still works", async () => {
    const tenant = tenantName("input");
    const stub = await configure(tenant, { maxConnections: 1 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    await expect(db.query(42 as never)).rejects.toMatchObject({ code: "BAD_REQUEST", message: expect.stringContaining("must be a string, got number") });
    await expect(db.query("select $1", "x" as never)).rejects.toMatchObject({ code: "BAD_REQUEST" });
    const many = Array.from({ length: 65_536 }, (_, i) => i);
    await expect(db.query("select 1", many)).rejects.toMatchObject({ code: "BAD_REQUEST", message: expect.stringContaining("65536 parameters exceed") });
    await expect((db.sql as unknown as (s: string) => Promise<unknown>)("select 1")).rejects.toMatchObject({ code: "BAD_REQUEST" });
    // The coordinator checks what reaches it too: a batch must be protocol bytes, and well-formed ones.
    const raw = await stub.run(tenant, { text: "select 1" } as never);
    expect(raw).toMatchObject({ ok: false, error: { code: "BAD_REQUEST" } });
    const garbage = await stub.run(tenant, new Uint8Array([0x51, 0, 0, 0, 2]));
    expect(garbage).toMatchObject({ ok: false, error: { code: "BAD_REQUEST" } });
    await expect(db.query("select $1::int as n", ["not a number"])).rejects.toMatchObject({ code: "22P02" });
    await expect(db.sql`select ${() => 1} as f`).rejects.toMatchObject({ code: "BAD_REQUEST", message: expect.stringContaining("parameter $1 is a function") });
    await expect(db.query(`select 1 -- ${"x".repeat(16 * 1024 * 1024)}`)).rejects.toMatchObject({ code: "BAD_REQUEST", message: expect.stringContaining("exceeds 16777216") });
    // Values are bound parameters, never SQL text.
    const hostile = "1; drop table if exists lock_probe; --";
    expect((await db.sql`select ${hostile}::text as v`)[0]).toEqual({ v: hostile });
    expect((await db.sql`select count(*)::int as n from pg_stat_activity where pid = pg_backend_pid()`)[0]).toEqual({ n: 1 });
    expect(await serverCount(sql, tenant)).toBe(1);
  });

  it("tenant names are checked and an unconfigured tenant is UNKNOWN_TENANT", async () => {
    await expect(createPool(testEnv.EDGEPOOL, { tenant: "no such tenant!" }).sql`select 1`).rejects.toMatchObject({ code: "BAD_REQUEST" });
    await expect(createPool(testEnv.EDGEPOOL, { tenant: tenantName("never-configured") }).sql`select 1`).rejects.toMatchObject({ code: "UNKNOWN_TENANT" });
  });

  it("results keep postgres.js's shape: rows with count, command and columns", async () => {
    const tenant = tenantName("shape");
    await configure(tenant, { maxConnections: 1 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const rows = await db.sql<{ n: number; s: string }>`select g as n, 'x' || g as s from generate_series(1, 3) g`;
    expect([...rows]).toEqual([{ n: 1, s: "x1" }, { n: 2, s: "x2" }, { n: 3, s: "x3" }]);
    expect(rows.count).toBe(3);
    expect(rows.command).toBe("SELECT");
    expect(rows.columns.map((c) => [c.name, c.type])).toEqual([["n", 23], ["s", 25]]);
  });
});
