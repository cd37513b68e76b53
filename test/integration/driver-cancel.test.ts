// Cancel keys through drivers (design §4): a CancelRequest reaches only the
// session owning that exact key, and only while it has a backend attached;
// the coordinator sends the server's own key for that backend. Proved on the
// server: the query was active in pg_stat_activity when cancelled, and the
// other sessions' queries ran to their end.
import pg from "pg";
import postgres from "postgres";
import { afterAll, describe, expect, it } from "vitest";
import { connect, pgOptions, postgresOptions } from "../../src/index.ts";
import { applicationName } from "../../worker/server/driver.ts";
import { configure, observer, sleep, tenantName, testEnv, until } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

/** How long a cancelled pg_sleep may take to end after the driver's cancel call. */
const CANCEL_BOUND_MS = 1_000;

/** The tenant's backends running a statement like `pattern` right now. */
async function activeRunning(tenant: string, pattern: string): Promise<number[]> {
  const rows = await sql<{ pid: number }[]>`
    select pid from pg_stat_activity
    where application_name = ${applicationName(tenant)} and state = 'active' and query like ${pattern}
    order by pid`;
  return rows.map((r) => r.pid);
}

/** Sends a raw CancelRequest through a new tunnelled session, as a driver does, and waits until the coordinator closes it. */
async function sendCancel(tenant: string, pid: number, secret: number): Promise<void> {
  const socket = connect(testEnv.EDGEPOOL, { tenant });
  const request = new Uint8Array(16);
  const view = new DataView(request.buffer);
  view.setInt32(0, 16);
  view.setInt32(4, 80877102);
  view.setInt32(8, pid);
  view.setInt32(12, secret);
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  socket.on("error", () => {});
  // Reading starts with a data listener (as on a net.Socket); the coordinator answers nothing and closes.
  socket.on("data", () => {});
  socket.write(request);
  await Promise.race([closed, sleep(2_000)]);
  expect(socket.destroyed).toBe(true);
}

/** The BackendKeyData a pg client got (pg keeps it on the client; its types omit it). */
function keyOf(client: pg.Client): { pid: number; secret: number } {
  const { processID, secretKey } = client as unknown as { processID: number | null; secretKey: number | null };
  if (processID === null || secretKey === null) throw new Error("no BackendKeyData received");
  return { pid: processID, secret: secretKey };
}

async function pgClient(tenant: string): Promise<pg.Client> {
  const client = new pg.Client(pgOptions(testEnv.EDGEPOOL, { tenant }));
  client.on("error", () => {});
  await client.connect();
  return client;
}

describe("a driver's cancel ends its own query and nobody else's", () => {
  it(`postgres.js q.cancel() ends its pg_sleep(5) with 57014 within ${CANCEL_BOUND_MS}ms, while another session's pg_sleep(1) on the tenant's other backend finishes normally`, async () => {
    const tenant = tenantName("cancel");
    await configure(tenant, { maxConnections: 2, acquireTimeoutMs: 10_000 });
    const a = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, onnotice: () => {} }));
    const b = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, onnotice: () => {} }));
    try {
      const q = a`select pg_sleep(5) as slept, pg_backend_pid() as pid`;
      const aOutcome = q.then(() => undefined, (e: postgres.PostgresError) => e);
      const bStarted = Date.now();
      const bOutcome = b`select pg_sleep(1) as slept, pg_backend_pid() as pid`.then((rows) => ({ pid: rows[0]!.pid as number, ms: Date.now() - bStarted }));
      const [aPid] = await until(() => activeRunning(tenant, "%pg_sleep(5)%"), (p) => p.length === 1);
      const [bPid] = await until(() => activeRunning(tenant, "%pg_sleep(1)%"), (p) => p.length === 1);
      expect(aPid).toBeDefined();
      expect(bPid).toBeDefined();
      expect(aPid).not.toBe(bPid);

      const cancelled = Date.now();
      q.cancel();
      const error = await aOutcome;
      const tookMs = Date.now() - cancelled;
      expect(error).toBeInstanceOf(Error);
      expect(error).toMatchObject({ code: "57014" });
      expect(tookMs).toBeLessThan(CANCEL_BOUND_MS);
      // On the server: A's backend stopped running it.
      expect(await until(() => activeRunning(tenant, "%pg_sleep(5)%"), (p) => p.length === 0)).toEqual([]);

      const bResult = await bOutcome;
      expect(bResult.pid).toBe(bPid);
      expect(bResult.ms).toBeGreaterThanOrEqual(990);
      // A's session still works afterwards.
      const [after] = await a<{ n: number }[]>`select 1 as n`;
      expect(after!.n).toBe(1);
    } finally {
      await a.end();
      await b.end();
    }
  });

  it("a cancel with the key of a session that has no query running cancels nothing: the other session's pg_sleep(1) completes", async () => {
    const tenant = tenantName("cancel-idle");
    await configure(tenant, { maxConnections: 2, acquireTimeoutMs: 10_000 });
    const idle = await pgClient(tenant);
    const busy = await pgClient(tenant);
    try {
      // The idle session ran a query once (it had a backend, then gave it back).
      await idle.query("select 1");
      const idleKey = keyOf(idle);
      const busyKey = keyOf(busy);
      const started = Date.now();
      const running = busy.query<{ pid: number }>("select pg_sleep(1), pg_backend_pid() as pid");
      const [busyPid] = await until(() => activeRunning(tenant, "%pg_sleep(1)%"), (p) => p.length === 1);
      expect(busyPid).toBeDefined();

      await sendCancel(tenant, idleKey.pid, idleKey.secret);
      // Another session's pid with a wrong secret: no session owns that key.
      await sendCancel(tenant, busyKey.pid, (busyKey.secret ^ 1) | 0);

      const { rows } = await running;
      expect(rows[0]!.pid).toBe(busyPid);
      expect(Date.now() - started).toBeGreaterThanOrEqual(990);
      // The idle session is unharmed too.
      expect((await idle.query<{ n: number }>("select 2 as n")).rows[0]!.n).toBe(2);
    } finally {
      await idle.end();
      await busy.end();
    }
  });

  it(`the same raw CancelRequest with the running session's own key does cancel it (57014 within ${CANCEL_BOUND_MS}ms), so the previous test could fail`, async () => {
    const tenant = tenantName("cancel-raw");
    await configure(tenant, { maxConnections: 2, acquireTimeoutMs: 10_000 });
    const busy = await pgClient(tenant);
    try {
      const running = busy.query("select pg_sleep(5)").then(() => undefined, (e: Error & { code?: string }) => e);
      await until(() => activeRunning(tenant, "%pg_sleep(5)%"), (p) => p.length === 1);
      const started = Date.now();
      const key = keyOf(busy);
      await sendCancel(tenant, key.pid, key.secret);
      const error = await running;
      expect(error).toMatchObject({ code: "57014" });
      expect(Date.now() - started).toBeLessThan(CANCEL_BOUND_MS);
      expect((await busy.query<{ n: number }>("select 3 as n")).rows[0]!.n).toBe(3);
    } finally {
      await busy.end();
    }
  });
});
