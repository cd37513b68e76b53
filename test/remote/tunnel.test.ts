// The WebSocket tunnel (GET /v1/tenants/:tenant/connect) against the real coordinator
// (wrangler dev, workerd) and the real Postgres: drivers in this Node process, and the
// refusals: tokens on the upgrade, and tokens as the startup password.
import pg from "pg";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { connect, pgOptions, postgresOptions, WireSocket } from "../../src/index.ts";
import { openTunnel } from "../../src/websocket.ts";
import { mintToken } from "../../worker/auth.ts";
import { ADMIN_TOKEN, startCoordinator } from "./coordinator.ts";

const databaseUrl = inject("databaseUrl");
let coordinator: Awaited<ReturnType<typeof startCoordinator>>;
const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });

beforeAll(async () => {
  await sql`create table if not exists tunnel_probe (id serial primary key, tag text not null)`;
  coordinator = await startCoordinator(databaseUrl);
});
afterAll(async () => {
  await coordinator?.stop();
  await sql.end();
});

const tenantName = (prefix: string) => `${prefix}-${crypto.randomUUID().slice(0, 8)}`;

/** The tenant's server connections as Postgres sees them. */
async function backends(tenant: string): Promise<number[]> {
  const rows = await sql<{ pid: number }[]>`select pid from pg_stat_activity where application_name = ${`edgepool:${tenant}`}`;
  return rows.map((r) => r.pid);
}

/** What a driver error looks like, in the fields both drivers share. */
const fields = (e: unknown) => {
  const error = e as { code?: string; severity?: string; message?: string };
  return { code: error.code, severity: error.severity, message: error.message };
};

describe("drivers over the WebSocket tunnel (Node, in-process)", () => {
  it("postgres.js in transaction mode: parameters, prepared statements, an error, a transaction; only the tenant's backends serve it", async () => {
    const tenant = tenantName("ws-pgjs");
    const token = await coordinator.tenant(tenant, { maxConnections: 2 });
    const db = postgres(postgresOptions(coordinator.url, { tenant, token, max: 4 }));
    try {
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => db<{ n: number; pid: number }[]>`select ${i}::int as n, pg_backend_pid() as pid`));
      expect(results.map((r) => r[0]!.n)).toEqual(Array.from({ length: 20 }, (_, i) => i));
      const pids = new Set(results.map((r) => r[0]!.pid));
      const server = await backends(tenant);
      expect(server.length).toBeLessThanOrEqual(2);
      for (const pid of pids) expect(server).toContain(pid);
      await expect(db`selec 1`).rejects.toMatchObject({ code: "42601" });
      const tag = `committed-${tenant}`;
      const xmins = await db.begin(async (tx) => {
        await tx`insert into tunnel_probe (tag) values (${tag})`;
        await tx`insert into tunnel_probe (tag) values (${tag})`;
        return tx<{ xmin: string }[]>`select xmin::text from tunnel_probe where tag = ${tag}`;
      });
      expect(new Set(xmins.map((r) => r.xmin)).size).toBe(1);
      expect(await sql`select 1 from tunnel_probe where tag = ${tag}`).toHaveLength(2);
    } finally {
      await db.end();
    }
  });

  it("pg.Pool in session mode keeps session state on one backend; connect() gives a socket pg.Client accepts", async () => {
    const tenant = tenantName("ws-pg");
    const token = await coordinator.tenant(tenant, { maxConnections: 2 });
    const pool = new pg.Pool(pgOptions(coordinator.url, { tenant, token, mode: "session" }));
    try {
      const client = await pool.connect();
      await client.query("set statement_timeout = 4321");
      const { rows } = await client.query<{ s: string; pid: number }>("select current_setting('statement_timeout') as s, pg_backend_pid() as pid");
      expect(rows[0]!.s).toBe("4321ms");
      expect(await backends(tenant)).toContain(rows[0]!.pid);
      const error = await client.query("select 1/0").catch((e: unknown) => e);
      expect(fields(error)).toMatchObject({ code: "22012", severity: "ERROR" });
      expect((await client.query<{ n: number }>("select $1::int as n", [5])).rows).toEqual([{ n: 5 }]);
      client.release();
      const raw = new pg.Client({ user: "edgepool", database: tenant, stream: () => connect(coordinator.url, { tenant, token }) as never });
      await raw.connect();
      expect((await raw.query("select 7 as n")).rows).toEqual([{ n: 7 }]);
      await raw.end();
    } finally {
      await pool.end();
    }
  });
});

describe("refused tokens reach drivers as FATAL 28000 UNAUTHORIZED, before any database work", () => {
  it("on the upgrade: missing, malformed, expired, and another tenant's token", async () => {
    const tenant = tenantName("ws-auth");
    const good = await coordinator.tenant(tenant, { maxConnections: 1 });
    const other = await coordinator.tenant(tenantName("ws-other"));
    const expired = await mintToken(ADMIN_TOKEN, tenant, Math.floor(Date.now() / 1000) - 5);
    const cases = { malformed: "ep1.not-a-token", garbage: "hello", expired, crossTenant: other, badSignature: `${good.slice(0, -2)}xx` };
    const seen: Record<string, unknown> = {};
    for (const [name, token] of Object.entries(cases)) {
      const db = postgres(postgresOptions(coordinator.url, { tenant, token }));
      seen[name] = fields(await db`select 1`.catch((e: unknown) => e));
      await db.end();
      const client = new pg.Client(pgOptions(coordinator.url, { tenant, token }));
      const error = fields(await client.connect().catch((e: unknown) => e));
      expect(error, name).toMatchObject({ code: "28000", severity: "FATAL" });
      expect(error.message).not.toContain(token);
    }
    for (const [name, token] of Object.entries(cases)) {
      expect(seen[name], name).toMatchObject({ code: "28000", message: expect.stringMatching(/^UNAUTHORIZED: /) });
      expect((seen[name] as { message: string }).message).not.toContain(token);
    }
    expect(seen.expired).toMatchObject({ message: expect.stringContaining("expired") });
    expect(seen.crossTenant).toMatchObject({ message: expect.stringContaining("another tenant") });
    // No token at all: the upgrade is refused with 401 (the body names the reason), nothing opens.
    const response = await fetch(`${coordinator.url}/v1/tenants/${tenant}/connect`);
    expect(response.status).toBe(401);
    expect(await response.json()).toMatchObject({ error: { code: "UNAUTHORIZED", message: expect.stringContaining("no token") } });
    const socket = new WebSocket(`${coordinator.url.replace("http", "ws")}/v1/tenants/${tenant}/connect`, ["edgepool"]);
    expect(await new Promise((resolve) => { socket.addEventListener("open", () => resolve("open")); socket.addEventListener("error", () => resolve("refused")); })).toBe("refused");
    expect(await backends(tenant)).toEqual([]);
    // The good token works on the same tenant.
    const db = postgres(postgresOptions(coordinator.url, { tenant, token: good }));
    expect(await db`select 1 as n`).toEqual([{ n: 1 }]);
    await db.end();
  });

  it("as the startup password (auth=password): missing, malformed, expired, cross-tenant refused; the right token opens the session", async () => {
    const tenant = tenantName("pw-auth");
    const good = await coordinator.tenant(tenant, { maxConnections: 1 });
    const other = await coordinator.tenant(tenantName("pw-other"));
    const expired = await mintToken(ADMIN_TOKEN, tenant, Math.floor(Date.now() / 1000) - 5);
    const viaPassword = (password: string | undefined) =>
      new pg.Client({ user: "edgepool", database: tenant, password, stream: () => new WireSocket(openTunnel(coordinator.url, { tenant, mode: "transaction" })) as never });
    for (const [name, password] of Object.entries({ missing: "", malformed: "ep1.x", expired, crossTenant: other })) {
      const error = fields(await viaPassword(password).connect().catch((e: unknown) => e));
      expect(error, name).toMatchObject({ code: "28000", severity: "FATAL", message: expect.stringMatching(/^UNAUTHORIZED: /) });
      if (password) expect(error.message).not.toContain(password);
    }
    expect(await backends(tenant)).toEqual([]);
    const client = viaPassword(good);
    await client.connect();
    expect((await client.query("select current_user = current_user as ok")).rows).toEqual([{ ok: true }]);
    await client.end();
  });
});
