import { SELF } from "cloudflare:test";
import parsePrometheusTextFormat, { type MetricFamily } from "parse-prometheus-text-format";
import { afterAll, describe, expect, it } from "vitest";
import handler from "../../worker/index.ts";
import { createPool, getConnection, type Connection } from "../../src/index.ts";
import { ADMIN_TOKEN, http, observer, putTenant, serverPids, tenantName, testEnv, until } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

/** The default report interval: the longest a change takes to reach /metrics. */
const REPORT_INTERVAL_MS = 5_000;

/** GET /metrics, parsed by a real Prometheus text parser. */
async function scrape(token = ADMIN_TOKEN): Promise<MetricFamily[]> {
  const response = await SELF.fetch("http://edge/metrics", { headers: { Authorization: `Bearer ${token}` } });
  expect(response.status).toBe(200);
  expect(response.headers.get("Content-Type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  return parsePrometheusTextFormat(await response.text());
}

/** The value of `name` for this tenant (and these labels). */
function value(families: MetricFamily[], name: string, tenant: string, labels: Record<string, string> = {}): number | undefined {
  const family = families.find((f) => f.name === name);
  const sample = family?.metrics.find((m) => m.labels?.tenant === tenant && Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  return sample?.value === undefined ? undefined : Number(sample.value);
}

function connections(families: MetricFamily[], tenant: string) {
  const of = (state: string) => value(families, "edgepool_connections", tenant, { state }) ?? -1;
  return { idle: of("idle"), active: of("active"), opening: of("opening"), closing: of("closing") };
}

/** Backends the server shows for the tenant, by pg_stat_activity state. */
async function serverStates(tenant: string): Promise<string[]> {
  const rows = await sql<{ state: string }[]>`select state from pg_stat_activity where application_name = ${`edgepool:${tenant}`} order by pid`;
  return rows.map((r) => r.state);
}

describe("GET /metrics (Prometheus text format, from the tenant directory)", () => {
  it("after a burst on maxConnections 3: connection gauges match pg_stat_activity and the timeout counter counts the test's timeouts", { timeout: 60_000 }, async () => {
    const tenant = tenantName("metrics");
    expect((await putTenant(tenant, { connectionString: testEnv.DATABASE_URL, maxConnections: 3, acquireTimeoutMs: 3_000 })).status).toBe(200);
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const burst = await Promise.all(Array.from({ length: 30 }, () => db.sql<{ pid: number }>`select pg_backend_pid() as pid, pg_sleep(0.02)`));
    expect(new Set(burst.map((r) => r[0]!.pid)).size).toBeLessThanOrEqual(3);

    // Three leases hold every connection; four more borrowers time out.
    const leases: Connection[] = await Promise.all([1, 2, 3].map(() => getConnection(testEnv.EDGEPOOL, { tenant })));
    const timeouts = await Promise.allSettled([1, 2, 3, 4].map(() => getConnection(testEnv.EDGEPOOL, { tenant, acquireTimeoutMs: 150 })));
    expect(timeouts.map((t) => (t.status === "rejected" ? (t.reason as { code: string }).code : "granted"))).toEqual(Array(4).fill("ACQUIRE_TIMEOUT"));

    const held = await until(scrape, (f) => value(f, "edgepool_acquire_timeouts_total", tenant) === 4 && connections(f, tenant).active === 3, REPORT_INTERVAL_MS + 3_000);
    expect(value(held, "edgepool_acquire_timeouts_total", tenant)).toBe(4);
    expect(connections(held, tenant)).toEqual({ idle: 0, active: 3, opening: 0, closing: 0 });
    expect((await serverPids(sql, tenant)).sort()).toEqual(leases.map((l) => l.pid).sort());
    expect(value(held, "edgepool_connections_max", tenant)).toBe(3);
    expect(value(held, "edgepool_acquires_total", tenant)).toBeGreaterThanOrEqual(33);
    expect(value(held, "edgepool_connections_created_total", tenant)).toBe(3);

    await Promise.all(leases.map((l) => l.release()));
    const after = await until(scrape, (f) => connections(f, tenant).active === 0, REPORT_INTERVAL_MS + 3_000);
    const states = await serverStates(tenant);
    expect(states).toEqual(["idle", "idle", "idle"]);
    expect(connections(after, tenant)).toEqual({ idle: states.length, active: 0, opening: 0, closing: 0 });
    expect(value(after, "edgepool_acquire_timeouts_total", tenant)).toBe(4);
    expect(value(after, "edgepool_sizing_verdict", tenant, { verdict: "undersized" })).toBe(1);
    expect(value(after, "edgepool_client_sessions", tenant)).toBe(0);
    // The coordinator's thread: 37 calls at most in one second, a share of its thread, no more shards needed.
    expect(value(after, "edgepool_coordinator_calls_per_second", tenant)).toBeGreaterThanOrEqual(1);
    expect(value(after, "edgepool_coordinator_calls_per_second", tenant)).toBeLessThanOrEqual(37);
    expect(value(after, "edgepool_coordinator_busy_ratio", tenant)).toBeGreaterThanOrEqual(0);
    expect(value(after, "edgepool_coordinator_busy_ratio", tenant)).toBeLessThanOrEqual(1);
    expect(value(after, "edgepool_sizing_suggested_shards", tenant)).toBe(1);
    expect(value(after, "edgepool_sizing_verdict", tenant, { verdict: "coordinator-bound" })).toBe(0);

    // The acquire-wait histogram: cumulative buckets, +Inf = count = acquires. The parser folds a histogram's
    // series into one (it keeps no label but le), so it reads this tenant's lines alone, tenant label removed.
    expect(after.find((f) => f.name === "edgepool_acquire_wait_seconds")?.type).toBe("HISTOGRAM");
    const text = await (await SELF.fetch("http://edge/metrics", { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
    const ours = text.split("\n").filter((line) => line.startsWith("# TYPE edgepool_acquire_wait_seconds ") || (line.startsWith("edgepool_acquire_wait_seconds_") && line.includes(`tenant="${tenant}"`)));
    const [histogram] = parsePrometheusTextFormat(`${ours.join("\n").replaceAll(`tenant="${tenant}",`, "").replaceAll(`{tenant="${tenant}"}`, "")}\n`);
    const series = histogram!.metrics[0]!;
    const buckets = Object.entries(series.buckets!).map(([le, n]) => [le === "+Inf" ? Infinity : Number(le), Number(n)] as const).sort((a, b) => a[0] - b[0]);
    expect(buckets.map(([le]) => le)).toEqual([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, Infinity]);
    for (let i = 1; i < buckets.length; i++) expect(buckets[i]![1]).toBeGreaterThanOrEqual(buckets[i - 1]![1]);
    expect(Number(series.count)).toBe(value(after, "edgepool_acquires_total", tenant));
    expect(buckets[buckets.length - 1]![1]).toBe(Number(series.count));
    expect(Number(series.sum)).toBeGreaterThan(0);
    // Every name follows the conventions: edgepool_ prefix, counters end in _total.
    for (const family of after) {
      expect(family.name).toMatch(/^edgepool_[a-z_]+$/);
      if (family.type === "COUNTER") expect(family.name).toMatch(/_total$/);
    }
  });

  it("takes the admin token or EDGEPOOL_METRICS_TOKEN, nothing else", async () => {
    expect((await http("GET", "/metrics")).status).toBe(401);
    expect((await http("GET", "/metrics", { token: "not-the-token" })).status).toBe(401);
    const clientToken = (await http("POST", "/v1/tenants/default/tokens", { token: ADMIN_TOKEN })).json.token as string;
    expect((await http("GET", "/metrics", { token: clientToken })).status).toBe(401);
    expect((await http("POST", "/metrics", { token: ADMIN_TOKEN })).status).toBe(405);
    // A scraper's own token, when the Worker has one.
    const env = { ...testEnv, EDGEPOOL_METRICS_TOKEN: "scraper-token-0123456789" };
    const get = (token: string) => handler.fetch(new Request("http://edge/metrics", { headers: { Authorization: `Bearer ${token}` } }), env);
    expect((await get("scraper-token-0123456789")).status).toBe(200);
    expect((await get("scraper-token-0123456780")).status).toBe(401);
  });
});
