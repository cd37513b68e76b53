import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { getConnection, postgresOptions } from "../../src/index.ts";
import { startCoordinator } from "./coordinator.ts";

const databaseUrl = inject("databaseUrl");
let coordinator: Awaited<ReturnType<typeof startCoordinator>>;
const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });

beforeAll(async () => {
  coordinator = await startCoordinator(databaseUrl);
});
afterAll(async () => {
  await coordinator?.stop();
  await sql.end();
});

const tenantName = (prefix: string) => `${prefix}-${crypto.randomUUID().slice(0, 8)}`;

/** The server's backends of these pids per shard, by their application_name (`edgepool:<tenant>` is shard 0, `edgepool:<tenant>#<i>` shard i). */
async function shardsOf(tenant: string, pids: number[]): Promise<number[]> {
  const rows = await sql<{ app: string }[]>`select application_name as app from pg_stat_activity where pid in ${sql(pids)}`;
  expect(rows).toHaveLength(pids.length);
  const spread = [0, 0, 0, 0];
  for (const { app } of rows) {
    const shard = app === `edgepool:${tenant}` ? 0 : Number(app.slice(`edgepool:${tenant}#`.length));
    expect(spread[shard], app).toBeTypeOf("number");
    spread[shard]!++;
  }
  return spread;
}

describe("remote sessions on a sharded tenant", () => {
  it("the connect route picks each session's shard by power of two choices on the hints of earlier upgrades: 16 leases reach all 4 shards", async () => {
    const tenant = tenantName("remote-shards");
    const token = await coordinator.tenant(tenant, { shards: 4, maxConnections: 32 });
    // One at a time: each lease holds its server connection, so the next upgrade's choice sees it in the shard's hint.
    const leases = [];
    for (let i = 0; i < 16; i++) leases.push(await getConnection(coordinator.url, { tenant, token }));
    try {
      const spread = await shardsOf(tenant, leases.map((l) => l.pid));
      console.log(`remote leases per shard: ${JSON.stringify(spread)}`);
      // Unknown shards score 0 and a known one at least its own session, so each is reached as soon as it is drawn.
      for (const n of spread) expect(n).toBeGreaterThan(0);
    } finally {
      await Promise.all(leases.map((l) => l.release()));
    }
  });

  it("postgres.js through postgresOptions(url): its sessions reach more than one shard", async () => {
    const tenant = tenantName("remote-shards-driver");
    const token = await coordinator.tenant(tenant, { shards: 4, maxConnections: 32 });
    const clients: postgres.Sql[] = [];
    try {
      const pids: number[] = [];
      for (let i = 0; i < 8; i++) {
        // Session mode: the session keeps its server connection, whose backend the server tags with the shard.
        const client = postgres(postgresOptions(coordinator.url, { tenant, token, mode: "session", onnotice: () => {} }));
        clients.push(client);
        const [row] = await client<{ pid: number }[]>`select pg_backend_pid() as pid`;
        pids.push(row!.pid);
      }
      const spread = await shardsOf(tenant, pids);
      console.log(`remote postgres.js sessions per shard: ${JSON.stringify(spread)}`);
      expect(spread.filter((n) => n > 0).length).toBeGreaterThan(1);
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  });
});
