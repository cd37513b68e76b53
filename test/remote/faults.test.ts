// Faults against the real coordinator (wrangler dev, workerd) and a real Postgres
// that the test stops, starts and hides behind a switchable proxy.
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPool, getConnection, PoolError, DatabaseError } from "../../src/index.ts";
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from "../setup/embedded.ts";
import { startCoordinator } from "./coordinator.ts";
import { startProxy } from "./proxy.ts";

let pg: EmbeddedPostgresHandle;
let coordinator: Awaited<ReturnType<typeof startCoordinator>>;
let proxy: Awaited<ReturnType<typeof startProxy>>;

beforeAll(async () => {
  pg = await startEmbeddedPostgres();
  const url = new URL(pg.url);
  proxy = await startProxy({ host: url.hostname, port: Number(url.port) });
  coordinator = await startCoordinator(pg.url);
});
afterAll(async () => {
  await coordinator?.stop();
  await proxy?.close();
  await pg?.stop();
});

const tenantName = (prefix: string) => `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
const viaProxy = () => {
  const url = new URL(pg.url);
  url.port = String(proxy.port);
  return url.toString();
};
const codeOf = (e: unknown) => (e instanceof PoolError || e instanceof DatabaseError ? e.code : `unexpected: ${String(e)}`);

/** The tenant's backends as the server lists them. */
async function serverPids(tenant: string): Promise<number[]> {
  const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
  try {
    return (await sql<{ pid: number }[]>`select pid from pg_stat_activity where application_name = ${`edgepool:${tenant}`}`).map((r) => r.pid);
  } finally {
    await sql.end();
  }
}

const serverCount = async (tenant: string) => (await serverPids(tenant)).length;

/** Whether a query succeeds again within `ms` (asking back to back). */
async function recoversWithin(db: { sql: (strings: TemplateStringsArray) => PromiseLike<unknown> }, ms: number): Promise<boolean> {
  const started = Date.now();
  while (Date.now() - started < ms) if (await db.sql`select 1`.then(() => true, () => false)) return true;
  return false;
}

describe("faults", () => {
  it("database restart under load: in-flight queries fail clearly, nothing hangs past its timeouts, no slot leaks, recovery within the connect backoff's cap plus a connect", async () => {
    const tenant = tenantName("restart");
    const options = { maxConnections: 5, acquireTimeoutMs: 2_000, connectTimeoutMs: 1_000 };
    const token = await coordinator.tenant(tenant, options, pg.url);
    const db = createPool(coordinator.url, { tenant, token });
    const errors = new Map<string, number>();
    let ok = 0;
    let slowestMs = 0;
    let running = true;
    const okTimes: number[] = [];
    const clients = Array.from({ length: 8 }, async () => {
      while (running) {
        const started = Date.now();
        try {
          await db.sql`select pg_sleep(0.005)`;
          ok++;
          okTimes.push(Date.now());
        } catch (error) {
          errors.set(codeOf(error), (errors.get(codeOf(error)) ?? 0) + 1);
          await new Promise((r) => setTimeout(r, 20));
        }
        slowestMs = Math.max(slowestMs, Date.now() - started);
      }
    });
    await new Promise((r) => setTimeout(r, 1_000));
    const okBefore = ok;
    await pg.restart(1_500);
    const backAt = Date.now();
    // After failed connects the pool waits up to its backoff cap (5 s, worker/pool/pool.ts) before the next one; then one connect.
    const recoveryBoundMs = 5_000 + options.connectTimeoutMs + 1_000;
    const deadline = backAt + recoveryBoundMs;
    while (!okTimes.some((t) => t > backAt) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const recoveredMs = (okTimes.find((t) => t > backAt) ?? Number.POSITIVE_INFINITY) - backAt;
    await new Promise((r) => setTimeout(r, 500));
    running = false;
    await Promise.all(clients);

    console.log(`restart: ${okBefore} ok before, ${ok} ok in all, errors ${JSON.stringify(Object.fromEntries(errors))}, slowest call ${slowestMs} ms, recovered ${recoveredMs} ms after the server was back`);
    expect(okBefore).toBeGreaterThan(0);
    expect(errors.size).toBeGreaterThan(0); // the outage was seen ...
    for (const code of errors.keys()) expect(["LEASE_LOST", "CONNECT_FAILED", "ACQUIRE_TIMEOUT", "57P01", "57P03"]).toContain(code); // ... as clear errors
    expect(slowestMs).toBeLessThan(options.acquireTimeoutMs + options.connectTimeoutMs + 1_500);
    expect(recoveredMs).toBeLessThan(recoveryBoundMs);
    // No slot leaked: all maxConnections leases can be held at once, on at most that many server connections.
    const leases = await Promise.all(Array.from({ length: 5 }, () => getConnection(coordinator.url, { tenant, token, acquireTimeoutMs: 3_000 })));
    expect(new Set(leases.map((l) => l.pid)).size).toBe(5);
    expect(await serverCount(tenant)).toBe(5);
    await Promise.all(leases.map((l) => l.release()));
  });

  it("database unreachable: refused and black-holed connects give CONNECT_FAILED within connectTimeoutMs, at most maxConcurrentConnects in flight, backoff between rounds, recovery", async () => {
    const tenant = tenantName("unreachable");
    const options = { maxConnections: 10, connectTimeoutMs: 400, maxConcurrentConnects: 2, acquireTimeoutMs: 10_000 };
    const token = await coordinator.tenant(tenant, options, viaProxy());
    const db = createPool(coordinator.url, { tenant, token });

    await proxy.set("refuse");
    let started = Date.now();
    const refused = await db.sql`select 1`.catch((e: PoolError) => e);
    expect(refused).toMatchObject({ code: "CONNECT_FAILED", message: expect.stringContaining(`127.0.0.1:${proxy.port}`) });
    expect(Date.now() - started).toBeLessThan(options.connectTimeoutMs + 1_000);
    expect((refused as PoolError).message).not.toContain(new URL(pg.url).password);

    await proxy.set("blackhole");
    await new Promise((r) => setTimeout(r, 5_100)); // let the backoff from the refusals run out
    proxy.reset();
    started = Date.now();
    const wave = await Promise.all(Array.from({ length: 10 }, () => db.sql`select 1`.catch((e: PoolError) => e)));
    const waveMs = Date.now() - started;
    const odd = wave.filter((e) => !(e instanceof PoolError && e.code === "CONNECT_FAILED" && e.message.includes("timed out after 400ms")));
    expect(odd.map((e) => String(e))).toEqual([]);
    expect(waveMs).toBeLessThan(options.connectTimeoutMs + 1_000);
    // Keep asking for 3 s: attempts come in rounds spaced by a growing, jittered backoff.
    const until = Date.now() + 3_000;
    while (Date.now() < until) await db.sql`select 1`.catch(() => {});
    const times = proxy.stats.attemptTimes;
    const rounds = times.filter((t, i) => i === 0 || t - times[i - 1]! > 50);
    console.log(`black hole: ${times.length} attempts in ${rounds.length} rounds over ${Date.now() - started} ms, at most ${proxy.stats.maxOpen} open at once; round gaps ${rounds.slice(1).map((t, i) => t - rounds[i]!).join(", ")} ms`);
    // Never more than maxConcurrentConnects sockets at once: abandoned attempts are closed, not left to linger.
    expect(proxy.stats.maxOpen).toBeLessThanOrEqual(options.maxConcurrentConnects);
    expect(rounds.length).toBeGreaterThanOrEqual(3);
    for (const round of rounds) {
      expect(times.filter((t) => t >= round && t - round <= 50).length).toBeLessThanOrEqual(options.maxConcurrentConnects);
    }
    // Without backoff, 2 connects every 400 ms would make ~16 attempts in 3.4 s.
    expect(times.length).toBeLessThan(14);
    const gaps = rounds.slice(1).map((t, i) => t - rounds[i]!);
    expect(gaps.at(-1)!).toBeGreaterThan(gaps[0]!);

    await proxy.set("forward");
    started = Date.now();
    expect(await recoversWithin(db, 8_000)).toBe(true);
    console.log(`recovered ${Date.now() - started} ms after the database became reachable`);
    expect(Date.now() - started).toBeLessThan(7_000); // backoff cap 5 s + connect
  });

  it("a database that goes silent without closing its connections: a running query, then a validation, are given up within their bounds and the pool serves again once it answers", async () => {
    const tenant = tenantName("silent");
    const options = { maxConnections: 1, connectTimeoutMs: 500, queryTimeoutMs: 300, validateAfterIdleMs: 1_000, acquireTimeoutMs: 8_000 };
    const token = await coordinator.tenant(tenant, options, viaProxy());
    const db = createPool(coordinator.url, { tenant, token });
    const pids = () => serverPids(tenant);
    await proxy.set("forward");
    await db.sql`select 1`;
    const [first] = await pids();
    expect(first).toBeDefined();

    // A running query: cancelled at queryTimeoutMs (the cancel reaches nobody), given up one queryTimeoutMs later.
    await proxy.set("freeze");
    let started = Date.now();
    const lost = await db.sql`select 1`.catch((e: unknown) => e);
    const lostMs = Date.now() - started;
    expect(codeOf(lost)).toBe("LEASE_LOST");
    expect(lostMs).toBeLessThan(2 * options.queryTimeoutMs + 1_000);
    // The pool closed its socket: the proxy then closed the backend's, and the server ended it.
    expect(await waitFor(pids, (p) => !p.includes(first!))).not.toContain(first);

    // A validation after idle: given up at connectTimeoutMs; its replacement cannot connect either, so the borrower gets CONNECT_FAILED.
    await proxy.set("forward");
    await db.sql`select 1`;
    const [second] = await pids();
    await new Promise((r) => setTimeout(r, options.validateAfterIdleMs + 200));
    await proxy.set("freeze");
    started = Date.now();
    const failed = await db.sql`select 2`.catch((e: unknown) => e);
    const failedMs = Date.now() - started;
    expect(codeOf(failed)).toBe("CONNECT_FAILED");
    expect(failedMs).toBeLessThan(2 * options.connectTimeoutMs + 1_000);
    expect(await waitFor(pids, (p) => !p.includes(second!))).not.toContain(second);
    await proxy.set("forward");
    started = Date.now();
    expect(await recoversWithin(db, 8_000)).toBe(true);
    console.log(`silent database: query given up after ${lostMs} ms (queryTimeoutMs ${options.queryTimeoutMs}); silent validation given up, borrower told CONNECT_FAILED after ${failedMs} ms (connectTimeoutMs ${options.connectTimeoutMs}); served again ${Date.now() - started} ms after the database answered`);
  });
});

async function waitFor<T>(read: () => Promise<T>, check: (value: T) => boolean, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let value = await read();
  while (!check(value) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    value = await read();
  }
  return value;
}
