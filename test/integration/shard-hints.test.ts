import postgres from "postgres";
import { afterAll, describe, expect, it } from "vitest";
import { postgresOptions } from "../../src/index.ts";
import { observer, putTenant, tenantName, testEnv } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

describe("load hints on driver sessions", () => {
  it("driver sessions alone learn the shard count and each shard's load from their own answers, and spread", async () => {
    const tenant = tenantName("shard-wire-hint");
    expect((await putTenant(tenant, { connectionString: testEnv.DATABASE_URL, shards: 4, maxConnections: 32 })).status).toBe(200);
    const clients: postgres.Sql[] = [];
    try {
      const pids: number[] = [];
      // No one-shot or lease of this tenant runs in this isolate: only the driver sessions' answers can say there are 4 shards.
      for (let i = 0; i < 8; i++) {
        // Session mode: each session keeps its server connection, so the next one's choice sees it in that shard's hint.
        const client = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, mode: "session", onnotice: () => {} }));
        clients.push(client);
        const [row] = await client<{ pid: number }[]>`select pg_backend_pid() as pid`;
        pids.push(row!.pid);
      }
      const rows = await sql<{ app: string }[]>`select application_name as app from pg_stat_activity where pid in ${sql(pids)}`;
      expect(rows).toHaveLength(pids.length);
      const spread = [0, 1, 2, 3].map((i) => rows.filter((r) => r.app === `edgepool:${tenant}${i > 0 ? `#${i}` : ""}`).length);
      console.log(`driver sessions per shard: ${JSON.stringify(spread)}`);
      expect(spread.reduce((a, b) => a + b, 0)).toBe(8);
      // The first answer says there are 4 shards, and counts its own session: an unknown shard (0) wins over it, so the second session goes elsewhere.
      expect(spread.filter((n) => n > 0).length).toBeGreaterThan(1);
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  });
});
