import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createPool, getConnection, PoolError } from "../../src/index.ts";
import { freePort } from "../setup/embedded.ts";
import { startCoordinator } from "./coordinator.ts";
import { killAndTimeIdle, stepClient } from "./steps.ts";

const databaseUrl = inject("databaseUrl");
let coordinator: Awaited<ReturnType<typeof startCoordinator>>;
const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });

beforeAll(async () => {
  await sql`create table if not exists remote_probe (id serial primary key, tag text not null)`;
  coordinator = await startCoordinator(databaseUrl);
});
afterAll(async () => {
  await coordinator?.stop();
  await sql.end();
});

const RUNTIMES = {
  deno: ["node_modules/.bin/deno", ["run", "--allow-net", "--allow-read", "--allow-env", "test/remote/client.ts"]],
  node: ["node_modules/.bin/node", ["test/remote/client.ts"]],
} as const;

/** Starts the client script under a runtime; resolves each JSON step as it is printed. */
function client(runtime: keyof typeof RUNTIMES, args: string[]) {
  const [bin, base] = RUNTIMES[runtime];
  return stepClient(bin, [...base, ...args], { ...process.env, NO_COLOR: "1" });
}

const tenantName = (prefix: string) => `${prefix}-${crypto.randomUUID().slice(0, 8)}`;

describe("remote built-in clients over the WebSocket tunnel", () => {
  it("Node in-process: one-shot queries, a lease with a transaction, the same error classes", async () => {
    const tenant = tenantName("node-inproc");
    const token = await coordinator.tenant(tenant, { maxConnections: 1 });
    const db = createPool(coordinator.url, { tenant, token });
    expect([...(await db.sql<{ n: number }>`select ${7}::int as n`)]).toEqual([{ n: 7 }]);
    await expect(db.sql`selec`).rejects.toMatchObject({ code: "42601" });
    const conn = await getConnection(coordinator.url, { tenant, token });
    await conn.sql`set statement_timeout = 4321`;
    expect((await conn.sql`show statement_timeout`)[0]).toEqual({ statement_timeout: "4321ms" });
    const error = await getConnection(coordinator.url, { tenant, token, acquireTimeoutMs: 200 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PoolError);
    expect(error).toMatchObject({ code: "ACQUIRE_TIMEOUT", tenant });
    await conn.release();
    await expect(conn.sql`select 1`).rejects.toMatchObject({ code: "LEASE_RELEASED" });
    const next = await getConnection(coordinator.url, { tenant, token });
    expect(next.pid).toBe(conn.pid);
    expect((await next.sql`show statement_timeout`)[0]).toEqual({ statement_timeout: "0" });
    await next.release();
    await expect(createPool(coordinator.url, { tenant, token: "ep1.bad.token" }).sql`select 1`).rejects.toMatchObject({ code: "UNAUTHORIZED" });
    await expect(getConnection(coordinator.url, { tenant, token: "ep1.bad.token" })).rejects.toMatchObject({ code: "UNAUTHORIZED" });
    const other = tenantName("node-other");
    await coordinator.tenant(other);
    await expect(createPool(coordinator.url, { tenant: other, token }).sql`select 1`).rejects.toMatchObject({ code: "UNAUTHORIZED" });
  });

  it("a transport failure that carries a known code keeps it (HTTP 400 BAD_REQUEST, 401); INTERNAL is only for the unknown", async () => {
    const token = await coordinator.tenant(tenantName("node-codes"));
    const badName = /^BAD_REQUEST: tenant name "bad name!" must be 1-63 letters/;
    const batch = await createPool(coordinator.url, { tenant: "bad name!", token }).sql`select 1`.catch((e: unknown) => e);
    expect(batch).toBeInstanceOf(PoolError);
    expect(batch).toMatchObject({ code: "BAD_REQUEST", tenant: "bad name!", retryable: false, message: expect.stringMatching(badName) });
    const socket = await getConnection(coordinator.url, { tenant: "bad name!", token }).catch((e: unknown) => e);
    expect(socket).toMatchObject({ code: "BAD_REQUEST", tenant: "bad name!", message: expect.stringMatching(badName) });
    await expect(createPool(coordinator.url, { tenant: "node-codes-x", token }).sql`select 1`).rejects.toMatchObject({ code: "UNAUTHORIZED" });
    const nobody = `http://127.0.0.1:${await freePort()}`;
    await expect(createPool(nobody, { tenant: "acme", token }).sql`select 1`).rejects.toMatchObject({ code: "INTERNAL" });
    await expect(getConnection(nobody, { tenant: "acme", token })).rejects.toMatchObject({ code: "INTERNAL" });
  });

  it("one-shots reuse the client's tunnel session (a few when concurrent); a one-shot's open transaction never reaches the next one", async () => {
    const tenant = tenantName("node-reuse");
    const token = await coordinator.tenant(tenant, { maxConnections: 10 });
    const db = createPool(coordinator.url, { tenant, token });
    await db.sql`select 1`;
    const times: number[] = [];
    for (let i = 0; i < 300; i++) {
      const started = performance.now();
      await db.sql`select 1`;
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    const at = (q: number) => times[Math.floor(q * (times.length - 1))]!.toFixed(2);
    console.log(`sequential select 1 from Node over the tunnel: median ${at(0.5)} ms, p90 ${at(0.9)} ms, p99 ${at(0.99)} ms (300 queries)`);
    // One session for all of them: the coordinator counts one client session (transaction mode: no server connection held).
    expect(await db.stats()).toMatchObject({ clients: 1, clientsActive: 0 });
    await Promise.all(Array.from({ length: 12 }, (_, i) => db.sql`select pg_sleep(0.05), ${i}::int as i`));
    const { clients } = (await db.stats()) as { clients: number };
    expect(clients).toBeGreaterThan(1);
    expect(clients).toBeLessThanOrEqual(4);
    // A one-shot `begin` leaves its transaction open: its session closes, the coordinator rolls it back.
    await db.sql`begin`;
    expect((await db.sql<{ fresh: boolean }>`select now() = statement_timestamp() as fresh`)[0]).toEqual({ fresh: true });
    let open = -1;
    for (const started = Date.now(); Date.now() - started < 2_000 && open !== 0; await new Promise((r) => setTimeout(r, 20))) {
      [{ open }] = await sql<{ open: number }[]>`select count(*)::int as open from pg_stat_activity where application_name = ${`edgepool:${tenant}`} and state like 'idle in transaction%'`;
    }
    expect(open).toBe(0);
  });

  it("queryTimeoutMs over the tunnel: QUERY_TIMEOUT as in a Worker, cancelled on the server; per client and per lease", async () => {
    const tenant = tenantName("node-timeout");
    const token = await coordinator.tenant(tenant, { maxConnections: 1, queryTimeoutMs: 200 });
    const db = createPool(coordinator.url, { tenant, token });
    const started = Date.now();
    const error = await db.sql`select pg_sleep(5)`.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PoolError);
    expect(error).toMatchObject({ code: "QUERY_TIMEOUT", message: expect.stringContaining("after 200ms") });
    expect(Date.now() - started).toBeLessThan(2_000);
    // Cancelled on the server: the backend stops running the sleep within a second of the error (not 5 s).
    let n = -1;
    for (const polled = Date.now(); Date.now() - polled < 1_000 && n !== 0; await new Promise((r) => setTimeout(r, 20))) {
      [{ n }] = await sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where application_name = ${`edgepool:${tenant}`} and state = 'active'`;
    }
    expect(n).toBe(0);
    expect((await db.sql`select 1 as one`)[0]).toEqual({ one: 1 });
    const patient = createPool(coordinator.url, { tenant, token, queryTimeoutMs: 3_000 });
    expect((await patient.sql`select pg_sleep(0.3), 1 as done`)[0]).toMatchObject({ done: 1 });
    const conn = await getConnection(coordinator.url, { tenant, token, queryTimeoutMs: 100 });
    await expect(conn.sql`select pg_sleep(2)`).rejects.toMatchObject({ code: "QUERY_TIMEOUT" });
    expect((await conn.sql`select 1 as one`)[0]).toEqual({ one: 1 });
    await conn.release();
    const invalid = await createPool(coordinator.url, { tenant, token, acquireTimeoutMs: -1 }).sql`select 1`.catch((e: unknown) => e);
    expect(invalid).toMatchObject({ code: "INVALID_OPTION", message: expect.stringContaining('"acquireTimeoutMs"') });
  });

  it("stats() is GET /v1/tenants/:tenant/stats behind the client token", async () => {
    const tenant = tenantName("node-stats");
    const token = await coordinator.tenant(tenant, { maxConnections: 2 });
    expect(await createPool(coordinator.url, { tenant, token }).stats()).toMatchObject({ tenant, maxConnections: 2 });
    await expect(createPool(coordinator.url, { tenant, token: "ep1.bad.token" }).stats()).rejects.toMatchObject({ code: "UNAUTHORIZED" });
    const response = await fetch(`${coordinator.url}/v1/tenants/${tenant}/stats`);
    expect(response.status).toBe(401);
    expect(await fetch(`${coordinator.url}/v1/tenants/${tenant}/rpc`, { method: "POST", headers: { Authorization: `Bearer ${token}` } }).then((r) => r.status)).toBe(404);
  });

  for (const runtime of ["deno", "node"] as const) {
    it(`${runtime}: one-shot queries, a lease with a transaction, ACQUIRE_TIMEOUT, a refused token`, async () => {
      const tenant = tenantName(`${runtime}-suite`);
      const token = await coordinator.tenant(tenant, { maxConnections: 1 });
      const run = client(runtime, [coordinator.url, tenant, token, "suite"]);
      const code = await run.exited;
      expect(code, run.stderr()).toBe(0);
      expect(run.steps.get("one-shot")).toEqual({ n: 42, db: new URL(databaseUrl).pathname.slice(1) });
      expect(run.steps.get("transaction")).toBe(1);
      expect(await sql`select tag from remote_probe where tag = ${`committed-${tenant}`}`).toHaveLength(1);
      expect(run.steps.get("acquire-timeout")).toMatchObject({ isPoolError: true, code: "ACQUIRE_TIMEOUT", message: expect.stringContaining("after 300ms") });
      expect(run.steps.get("bad-token")).toBe("UNAUTHORIZED");
      expect(run.steps.get("stats")).toMatchObject({ tenant, maxConnections: 1, timeouts: 1 });
    });

    it(`${runtime}: a lease is given back when the client process is killed mid-transaction`, async () => {
      const tenant = tenantName(`${runtime}-kill`);
      const token = await coordinator.tenant(tenant, { maxConnections: 1, leaseTimeoutMs: 60_000 });
      const run = client(runtime, [coordinator.url, tenant, token, "hold"]);
      const pid = (await run.step("held")) as number;
      const tag = `held-${tenant}`;
      const [state] = await sql<{ state: string }[]>`select state from pg_stat_activity where pid = ${pid}`;
      expect(state!.state).toBe("idle in transaction");
      // Bound: the lease is back (transaction rolled back, session reset) within 5 s, far below leaseTimeoutMs (60 s).
      const returnedMs = await killAndTimeIdle(run, async (p) => (await sql<{ state: string }[]>`select state from pg_stat_activity where pid = ${p}`)[0]?.state, pid);
      expect(returnedMs).toBeGreaterThanOrEqual(0);
      expect(returnedMs).toBeLessThan(5_000);
      expect(await sql`select 1 from remote_probe where tag = ${tag}`).toHaveLength(0);
      const next = await getConnection(coordinator.url, { tenant, token, acquireTimeoutMs: 1_000 });
      expect(next.pid).toBe(pid);
      await next.release();
      console.log(`${runtime}: lease returned ${returnedMs} ms after SIGKILL`);
    });
  }
});
