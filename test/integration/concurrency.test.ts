import { afterAll, describe, expect, it } from "vitest";
import { createPool } from "../../src/index.ts";
import { configure, observer, serverCount, tenantName, testEnv } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

describe("maxConnections caps the server's connections", () => {
  it("200 concurrent one-shot queries with maxConnections 3 all succeed and the server never shows more than 3", async () => {
    const tenant = tenantName("cap");
    await configure(tenant, { maxConnections: 3, acquireTimeoutMs: 20_000 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });

    let running = true;
    const samples: number[] = [];
    const sampler = (async () => {
      while (running) samples.push(await serverCount(sql, tenant));
    })();
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => db.sql<{ n: number; pid: number }>`select ${i}::int as n, pg_backend_pid() as pid, pg_sleep(0.002)`),
    );
    running = false;
    await sampler;

    expect(results.map((r) => r[0]!.n)).toEqual(Array.from({ length: 200 }, (_, i) => i));
    expect(new Set(results.map((r) => r[0]!.pid)).size).toBeLessThanOrEqual(3);
    expect(samples.length).toBeGreaterThan(3);
    expect(Math.max(...samples)).toBeLessThanOrEqual(3);
    expect(Math.max(...samples)).toBeGreaterThan(0);
  });
});
