import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createPool, getConnection, PoolError } from "../../src/index.ts";
import { freePort } from "../setup/embedded.ts";
import { startCoordinator } from "./coordinator.ts";

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
  const child: ChildProcess = spawn(bin, [...base, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } });
  const steps = new Map<string, unknown>();
  const waiting = new Map<string, (value: unknown) => void>();
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d));
  createInterface({ input: child.stdout! }).on("line", (line) => {
    try {
      const { step, value } = JSON.parse(line);
      steps.set(step, value);
      waiting.get(step)?.(value);
    } catch {
      stderr += `${line}\n`;
    }
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
  return {
    child,
    exited,
    steps,
    stderr: () => stderr,
    step: (name: string) => (steps.has(name) ? Promise.resolve(steps.get(name)) : new Promise((resolve) => waiting.set(name, resolve))),
  };
}

const tenantName = (prefix: string) => `${prefix}-${crypto.randomUUID().slice(0, 8)}`;

describe("remote clients over Cap'n Web", () => {
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
      const killedAt = Date.now();
      run.child.kill("SIGKILL");
      await run.exited;
      // Bound: the lease is back (transaction rolled back, session reset) within 5 s, far below leaseTimeoutMs (60 s).
      let returnedMs = -1;
      while (Date.now() - killedAt < 5_000) {
        const [row] = await sql<{ state: string }[]>`select state from pg_stat_activity where pid = ${pid}`;
        if (row?.state === "idle") {
          returnedMs = Date.now() - killedAt;
          break;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
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
