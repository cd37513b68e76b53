import { env } from "cloudflare:workers";
import postgres from "postgres";
import type { PoolClient } from "../../src/index.ts";
import { applicationName } from "../../worker/server/driver.ts";
import type { Env } from "../../worker/index.ts";

/** The bindings of the test Worker. */
export const testEnv = env as unknown as Env & { DATABASE_URL: string; EDGEPOOL_SERVICE: Fetcher };

/** A fresh tenant name per test, so each test gets its own coordinator. */
export function tenantName(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
}

/** Configures a tenant's coordinator on the test database with these pool options. */
export async function configure(tenant: string, options: Record<string, unknown> = {}) {
  const stub = testEnv.EDGEPOOL.get(testEnv.EDGEPOOL.idFromName(tenant));
  const reply = await stub.configure(tenant, { connectionString: testEnv.DATABASE_URL, options });
  if (!reply.ok) throw new Error(reply.error.message);
  return stub;
}

/** A connection of the test's own, outside the pool, to watch the server. */
export function observer() {
  return postgres(testEnv.DATABASE_URL, { max: 1, idle_timeout: 0, max_lifetime: 0, onnotice: () => {}, connection: { application_name: "edgepool-test-observer" } });
}

/** Backend pids the server shows for a tenant's pool connections. */
export async function serverPids(sql: postgres.Sql, tenant: string): Promise<number[]> {
  const rows = await sql<{ pid: number }[]>`select pid from pg_stat_activity where application_name = ${applicationName(tenant)} order by pid`;
  return rows.map((r) => r.pid);
}

/** How many connections the server shows for a tenant's pool. */
export async function serverCount(sql: postgres.Sql, tenant: string): Promise<number> {
  return (await serverPids(sql, tenant)).length;
}

/** Runs `work` while sampling the tenant's backend count on the server (through `sql`); answers both. */
export async function sampled<T>(sql: postgres.Sql, tenant: string, work: () => Promise<T>): Promise<{ value: T; samples: number[] }> {
  let running = true;
  const samples: number[] = [];
  const done = (async () => {
    while (running) samples.push(await serverCount(sql, tenant));
  })();
  try {
    return { value: await work(), samples };
  } finally {
    running = false;
    await done;
  }
}

/** The backend pid a one-shot query of this pool runs on. */
export async function pidOf(db: PoolClient): Promise<number> {
  const [row] = await db.sql<{ pid: number }>`select pg_backend_pid() as pid`;
  return row!.pid;
}

/** Polls until `check` returns true or the time is up; returns the last value checked. */
export async function until<T>(read: () => Promise<T>, check: (value: T) => boolean, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let value = await read();
  while (!check(value) && Date.now() < deadline) {
    await sleep(25);
    value = await read();
  }
  return value;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Same value as in vitest.config.ts. */
export const ADMIN_TOKEN = "test-admin-token-0123456789";

/** A call to the coordinator Worker's HTTP API through the test Worker. */
export async function http(method: string, path: string, options: { token?: string; body?: unknown } = {}) {
  const { SELF } = await import("cloudflare:test");
  const headers: Record<string, string> = {};
  if (options.token !== undefined) headers.Authorization = `Bearer ${options.token}`;
  const response = await SELF.fetch(`http://edge${path}`, {
    method,
    headers,
    body: options.body === undefined ? undefined : typeof options.body === "string" ? options.body : JSON.stringify(options.body),
  });
  const text = await response.text();
  return { status: response.status, text, json: text ? (JSON.parse(text) as Record<string, any>) : {} };
}

/** Configures a tenant through the admin API. */
export async function putTenant(tenant: string, body: Record<string, unknown>) {
  return http("PUT", `/v1/tenants/${tenant}`, { token: ADMIN_TOKEN, body });
}
