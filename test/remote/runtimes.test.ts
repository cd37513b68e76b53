// Node 22, Deno and Bun as separate processes: postgres.js and pg through the WebSocket tunnel, the
// built-in client, and a process killed with SIGKILL in the middle of a transaction.
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { cleanEnv } from "./cli.ts";
import { startCoordinator } from "./coordinator.ts";
import { killAndTimeIdle, stepClient } from "./steps.ts";

const databaseUrl = inject("databaseUrl");
let coordinator: Awaited<ReturnType<typeof startCoordinator>>;
const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
/** How soon after SIGKILL the transaction must be rolled back and the connection idle again. */
const KILL_BOUND_MS = 1_000;

beforeAll(async () => {
  await sql`create table if not exists runtime_probe (id serial primary key, tag text not null)`;
  coordinator = await startCoordinator(databaseUrl);
});
afterAll(async () => {
  await coordinator?.stop();
  await sql.end();
});

const RUNTIMES = {
  node: ["node_modules/.bin/node", ["test/remote/runtime-client.ts"]],
  deno: ["node_modules/.bin/deno", ["run", "--allow-net", "--allow-read", "--allow-env", "--allow-sys", "test/remote/runtime-client.ts"]],
  bun: ["node_modules/.bin/bun", ["test/remote/runtime-client.ts"]],
} as const;

/** Starts the client script under a runtime; resolves each JSON step as it is printed. */
function client(runtime: keyof typeof RUNTIMES, args: string[]) {
  const [bin, base] = RUNTIMES[runtime];
  return stepClient(bin, [...base, ...args], cleanEnv());
}

const tenantName = (prefix: string) => `${prefix}-${crypto.randomUUID().slice(0, 8)}`;

async function backends(tenant: string): Promise<number[]> {
  return (await sql<{ pid: number }[]>`select pid from pg_stat_activity where application_name = ${`edgepool:${tenant}`}`).map((r) => r.pid);
}

describe("Node 22, Deno and Bun over the WebSocket tunnel", () => {
  for (const runtime of Object.keys(RUNTIMES) as (keyof typeof RUNTIMES)[]) {
    it(`${runtime}: postgres.js and pg (answers, errors, a transaction, session mode), the built-in client, a refused token`, async () => {
      const tenant = tenantName(`rt-${runtime}`);
      const token = await coordinator.tenant(tenant, { maxConnections: 2 });
      const run = client(runtime, [coordinator.url, tenant, token, "suite"]);
      await run.step("builtin-end");
      const endedAt = Date.now();
      const code = await run.exited;
      // Without end() the client's idle sessions would keep the process alive 10 s.
      const exitMs = Date.now() - endedAt;
      expect(exitMs, `${runtime} exited ${exitMs} ms after db.end()`).toBeLessThan(3_000);
      expect(code, run.stderr()).toBe(0);
      const server = await backends(tenant);
      expect(run.steps.get("postgres.js")).toMatchObject({ n: 42 });
      expect(server).toContain((run.steps.get("postgres.js") as { pid: number }).pid);
      expect(run.steps.get("postgres.js-error")).toMatchObject({ code: "22012", severity: "ERROR" });
      expect(run.steps.get("postgres.js-transaction")).toBe(1);
      expect(await sql`select 1 from runtime_probe where tag = ${`committed-${tenant}`}`).toHaveLength(1);
      expect(run.steps.get("pg")).toMatchObject({ n: 7 });
      expect(server).toContain((run.steps.get("pg") as { pid: number }).pid);
      expect(run.steps.get("pg-error")).toMatchObject({ code: "42601", severity: "ERROR" });
      expect(run.steps.get("postgres.js-bad-token")).toMatchObject({ code: "28000", message: expect.stringMatching(/^UNAUTHORIZED: /) });
      expect(run.steps.get("builtin")).toEqual([{ n: 3 }]);
      expect(run.steps.get("builtin-error")).toMatchObject({ code: "22012" });
      expect(run.steps.get("builtin-bad-token")).toMatchObject({ code: "UNAUTHORIZED", isPoolError: true });
      expect(run.steps.get("builtin-end")).toMatchObject({ inflight: "answered", after: { code: "POOL_CLOSED", isPoolError: true } });
      expect(server.length).toBeLessThanOrEqual(2);
    });

    it(`${runtime}: killed with SIGKILL inside a transaction on the tunnel: rolled back and the connection idle within ${KILL_BOUND_MS} ms`, async () => {
      const tenant = tenantName(`rt-kill-${runtime}`);
      const token = await coordinator.tenant(tenant, { maxConnections: 1, leaseTimeoutMs: 60_000 });
      const run = client(runtime, [coordinator.url, tenant, token, "hold"]);
      const pid = (await Promise.race([run.step("held"), run.exited.then(() => { throw new Error(run.stderr()); })])) as number;
      expect((await sql<{ state: string }[]>`select state from pg_stat_activity where pid = ${pid}`)[0]).toEqual({ state: "idle in transaction" });
      const returnedMs = await killAndTimeIdle(run, async (p) => (await sql<{ state: string }[]>`select state from pg_stat_activity where pid = ${p}`)[0]?.state, pid);
      console.log(`[runtimes] ${runtime}: transaction rolled back, connection idle ${returnedMs} ms after SIGKILL`);
      expect(returnedMs).toBeGreaterThanOrEqual(0);
      expect(returnedMs).toBeLessThan(KILL_BOUND_MS);
      expect(await sql`select 1 from runtime_probe where tag = ${`held-${tenant}`}`).toHaveLength(0);
      // The one connection is free again: a new session gets that same backend.
      const next = postgres((await import("../../src/index.ts")).postgresOptions(coordinator.url, { tenant, token }));
      expect((await next<{ pid: number }[]>`select pg_backend_pid() as pid`)[0]!.pid).toBe(pid);
      await next.end();
    });
  }
});
