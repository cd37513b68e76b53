import { afterAll, describe, expect, it } from "vitest";
import postgres from "postgres";
import { createPool, postgresOptions } from "../../src/index.ts";
import { observer, serverPids, testEnv } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

describe("the single-tenant deployment", () => {
  it("the default tenant comes from DATABASE_URL and EDGEPOOL_* vars beside the Worker's other bindings, and answers the built-in client and a driver", async () => {
    // The test Worker also binds EDGEPOOL_BUDGETS and EDGEPOOL_DIRECTORY: bindings must never be read as option values.
    const db = createPool(testEnv.EDGEPOOL, { tenant: "default" });
    const [row] = await db.sql<{ n: number; pid: number }>`select ${2}::int + 1 as n, pg_backend_pid() as pid`;
    expect(row).toMatchObject({ n: 3 });
    const driver = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant: "default" }));
    try {
      const [fromDriver] = await driver<{ pid: number }[]>`select pg_backend_pid() as pid`;
      expect(await serverPids(sql, "default")).toContain(fromDriver!.pid);
    } finally {
      await driver.end();
    }
    expect(await serverPids(sql, "default")).toContain(row!.pid);
  });
});
