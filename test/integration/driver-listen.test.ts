import postgres from "postgres";
import { afterAll, describe, expect, it } from "vitest";
import { postgresOptions } from "../../src/index.ts";
import { configure, observer, serverPids, tenantName, testEnv, until } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

/** Channels some backend of this tenant's pool listens on, as the server reports them. */
async function listeningBackends(tenant: string): Promise<number[]> {
  const pids = await serverPids(sql, tenant);
  const rows = await sql<{ pid: number }[]>`
    select pid from pg_stat_activity where pid = any(${pids}::int[]) and query ilike 'listen%'`;
  return rows.map((r) => r.pid);
}

describe("LISTEN/NOTIFY through postgres.js", () => {
  it("in session mode, sql.listen receives the payload of a NOTIFY sent by another connection", async () => {
    const tenant = tenantName("listen");
    await configure(tenant, { maxConnections: 2 });
    const db = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant, mode: "session" }));
    const channel = `ch_${tenant.replace(/-/g, "_")}`;
    const payloads: string[] = [];
    await db.listen(channel, (payload) => payloads.push(payload));
    // The server has a backend of this pool whose session listens (its last statement was the LISTEN).
    expect(await listeningBackends(tenant)).toHaveLength(1);
    await sql`select pg_notify(${channel}, 'first')`;
    await sql.notify(channel, "second");
    await until(async () => payloads, (p) => p.length === 2);
    expect(payloads).toEqual(["first", "second"]);
    // The session that listens still answers queries of its own.
    expect(await db`select 1 as one`).toEqual([{ one: 1 }]);
    await db.end();
  });

  it("in transaction mode, LISTEN (sql.listen and sql.unsafe) fails with BAD_REQUEST naming session mode, SQLSTATE 0A000, and the session still works after", async () => {
    const tenant = tenantName("listen-tx");
    await configure(tenant, { maxConnections: 1 });
    const db = postgres(postgresOptions(testEnv.EDGEPOOL, { tenant }));
    const channel = `ch_${tenant.replace(/-/g, "_")}`;

    // Simple Query protocol (sql.unsafe without parameters).
    const simple = await db.unsafe(`listen ${channel}`).catch((e: postgres.PostgresError) => e);
    expect(simple).toBeInstanceOf(Error);
    expect((simple as postgres.PostgresError).message).toMatch(/^BAD_REQUEST: .*session/);
    expect((simple as postgres.PostgresError).code).toBe("0A000");
    expect(await db`select 2 as two`).toEqual([{ two: 2 }]);

    // Extended protocol (sql.listen's tagged template: Parse/Bind/Execute/Sync) on a listener instance of its own.
    const extended = await db.listen(channel, () => {}).catch((e: postgres.PostgresError) => e);
    expect(extended).toBeInstanceOf(Error);
    expect((extended as postgres.PostgresError).message).toMatch(/^BAD_REQUEST: .*session/);
    expect((extended as postgres.PostgresError).code).toBe("0A000");
    expect(await db`select 3 as three`).toEqual([{ three: 3 }]);

    // No backend of the pool listens on the channel: a NOTIFY reaches nobody, and the server shows no listener.
    expect(await listeningBackends(tenant)).toEqual([]);
    await db.end();
  });
});
