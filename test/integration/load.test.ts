import { SELF } from "cloudflare:test";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LoadReport } from "../fixtures/load.ts";
import { configure, observer, tenantName, testEnv } from "./helpers.ts";

const sql = observer();
beforeAll(() => sql`create table if not exists load_probe (id text primary key, at timestamptz not null default now())`);
afterAll(() => sql.end());

const SECONDS = Number((testEnv as unknown as { LOAD_SECONDS?: string }).LOAD_SECONDS ?? 30);
const MAX = 10;
const ACQUIRE_TIMEOUT_MS = 15_000;

describe("load", () => {
  it(`2,000 one-shot clients and 200 lease clients for ${SECONDS}s against maxConnections ${MAX}: nothing lost or duplicated, never above ${MAX} on the server`, async () => {
    const tenant = tenantName("load");
    await configure(tenant, { maxConnections: MAX, maxWaiters: 5_000, acquireTimeoutMs: ACQUIRE_TIMEOUT_MS });
    const run = tenant;

    let sampling = true;
    const samples: number[] = [];
    const gaps: number[] = [];
    const sampler = (async () => {
      let last = Date.now();
      while (sampling) {
        const [row] = await sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where application_name = ${`edgepool:${tenant}`}`;
        samples.push(row!.n);
        await new Promise((r) => setTimeout(r, 50));
        gaps.push(Date.now() - last);
        last = Date.now();
      }
    })();
    const response = await SELF.fetch("http://edge/load", {
      method: "POST",
      body: JSON.stringify({ tenant, run, seconds: SECONDS, oneShots: 2_000, leases: 200, acquireTimeoutMs: ACQUIRE_TIMEOUT_MS }),
    });
    const report = await response.json<LoadReport>();
    sampling = false;
    await sampler;

    const [{ n: rows }] = (await sql<{ n: number }[]>`select count(*)::int as n from load_probe where id like ${`${run}-%`}`) as unknown as [{ n: number }];
    const failedIds = report.failed.map((f) => f.id);
    const [{ n: failedPresent }] = (await sql<{ n: number }[]>`select count(*)::int as n from load_probe where id = any(${failedIds})`) as unknown as [{ n: number }];
    const stats = report.stats as { acquireWaitMs: { p50: number; p99: number }; peakDemand: number; acquired: number; timeouts: number };
    console.log(
      `load: ${report.ok} ok, ${report.failed.length} failed (${[...new Set(report.failed.map((f) => f.code))].join(", ") || "none"}), ` +
        `${rows} rows, ${Math.round(report.ok / SECONDS)} ops/s, client latency p50 ${report.latencyMs.p50} ms p99 ${report.latencyMs.p99} ms max ${report.latencyMs.max} ms, ` +
        `acquire wait p50 ${stats.acquireWaitMs.p50} ms p99 ${stats.acquireWaitMs.p99} ms (last 1024), server max ${Math.max(...samples)} in ${samples.length} samples ` +
        `(median gap ${gaps.sort((a, b) => a - b)[Math.floor(gaps.length / 2)]} ms)`,
    );

    expect(report.ok).toBeGreaterThan(SECONDS * 100);
    expect(rows).toBe(report.ok); // every success is in the table, once (primary key)
    expect(failedPresent).toBe(0); // no failure left a row behind
    expect(report.failed.every((f) => f.code === "ACQUIRE_TIMEOUT")).toBe(true);
    expect(Math.max(...samples)).toBeLessThanOrEqual(MAX);
    expect(samples.length).toBeGreaterThan(SECONDS * 5);
    // No waiter waited past its timeout (plus the query itself and RPC).
    expect(report.latencyMs.max).toBeLessThan(ACQUIRE_TIMEOUT_MS + 2_000);
  }, SECONDS * 1_000 + 60_000);
});
