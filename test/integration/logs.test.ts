import { runDurableObjectAlarm } from "cloudflare:test";
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createPool } from "../../src/index.ts";
import { configure, observer, pidOf, serverPids, sleep, tenantName, testEnv, until } from "./helpers.ts";

const sql = observer();
const password = decodeURIComponent(new URL(testEnv.DATABASE_URL).password);
afterAll(() => sql.end());

/** What the coordinators printed with console.log during the test, parsed where it is JSON. */
let printed: string[] = [];
beforeEach(() => {
  printed = [];
  const original = console.log.bind(console);
  vi.spyOn(console, "log").mockImplementation((...args: unknown[]) => {
    printed.push(args.map(String).join(" "));
    original(...args);
  });
});
afterEach(() => vi.restoreAllMocks());

/** The JSON lines for one tenant and event. */
function lines(tenant: string, event: string): Record<string, unknown>[] {
  return printed
    .filter((text) => text.startsWith("{"))
    .map((text) => JSON.parse(text) as Record<string, unknown>)
    .filter((line) => line.tenant === tenant && line.event === event);
}

describe("structured logs: one JSON line per pool event, with stable fields and no secret", () => {
  it("a refused connection prints one connect-failed line naming host:port and the cause, without the password", async () => {
    const tenant = tenantName("log-refused");
    const secret = "Very-Secret-pw-4711";
    // Port 1 on loopback: nothing listens there, the connection is refused.
    const url = `postgres://someone:${secret}@127.0.0.1:1/nowhere`;
    const stub = testEnv.EDGEPOOL.get(testEnv.EDGEPOOL.idFromName(tenant));
    const configured = await stub.configure(tenant, { connectionString: url, options: { maxConnections: 2, acquireTimeoutMs: 2_000 } });
    expect(configured.ok).toBe(true);
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    await expect(db.sql`select 1`).rejects.toMatchObject({ code: "CONNECT_FAILED" });

    const failed = lines(tenant, "connect-failed");
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ event: "connect-failed", level: "warn", tenant, target: "127.0.0.1:1", attempt: 1 });
    expect(typeof failed[0]!.cause).toBe("string");
    expect((failed[0]!.cause as string).length).toBeGreaterThan(0);
    expect(failed[0]!.retryInMs).toBeGreaterThan(0);
    expect(Date.parse(failed[0]!.time as string)).not.toBeNaN();
    expect(lines(tenant, "coordinator-start")).toEqual([
      expect.objectContaining({ event: "coordinator-start", level: "info", tenant, maxConnections: 2 }),
    ]);
    const all = printed.join("\n");
    expect(all).not.toContain(secret);
    expect(all).not.toContain(url);
  });

  it("a lifetime retirement prints one connection-closed line with reason max-lifetime, the connection's age and uses", async () => {
    const tenant = tenantName("log-lifetime");
    const stub = await configure(tenant, { maxConnections: 1, maxLifetimeMs: 400, validateAfterIdleMs: 60_000 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    const first = await pidOf(db);
    await pidOf(db);
    await sleep(450);
    await runDurableObjectAlarm(stub);
    expect(await until(() => serverPids(sql, tenant), (pids) => !pids.includes(first))).not.toContain(first);

    const closed = lines(tenant, "connection-closed");
    expect(closed).toHaveLength(1);
    expect(closed[0]).toMatchObject({ event: "connection-closed", level: "info", tenant, reason: "max-lifetime", connection: 1, uses: 2 });
    expect(closed[0]!.ageMs).toBeGreaterThanOrEqual(380);
    expect(lines(tenant, "connection-opened")).toHaveLength(1);
    expect(printed.join("\n")).not.toContain(password);
  });
});
