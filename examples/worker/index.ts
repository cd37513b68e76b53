// An edge Worker that uses edgepool both ways: the built-in client (one-shot queries and a lease)
// and unmodified drivers (postgres.js, pg) whose sockets are sessions tunnelled to the coordinator.
import pg from "pg";
import postgres from "postgres";
import { createPool, getConnection, pgOptions, PoolError, postgresOptions, type PoolTarget } from "../../src/index.ts";

interface Env {
  /** The coordinator's Durable Object namespace (bound from the "edgepool" Worker). */
  EDGEPOOL: PoolTarget;
  /** The same coordinator through a service binding to its PoolService entrypoint. */
  EDGEPOOL_SERVICE: Fetcher;
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    // The coordinator's HTTP API (admin routes, remote clients, metrics, dashboard), forwarded through the service binding.
    if (url.pathname.startsWith("/v1/") || url.pathname === "/metrics" || url.pathname.startsWith("/dashboard")) return env.EDGEPOOL_SERVICE.fetch(request);
    const db = createPool(env.EDGEPOOL, { tenant: "default" });
    try {
      if (url.pathname === "/") {
        // One-shot: any free connection, given back at once.
        const [row] = await db.sql`select now() as time, pg_backend_pid() as pid, current_database() as database`;
        return Response.json({ oneShot: row, try: ["/visit", "/postgres", "/pg", "/stats", "/service"] });
      }
      if (url.pathname === "/visit") {
        // A lease: a transaction on one pinned connection, released when the block ends.
        await using conn = await getConnection(env.EDGEPOOL, { tenant: "default", acquireTimeoutMs: 2_000 });
        const visits = await conn.begin(async (tx) => {
          await tx.sql`create table if not exists visits (id serial primary key, path text not null, at timestamptz not null default now())`;
          await tx.sql`insert into visits (path) values (${url.pathname})`;
          return tx.sql`select count(*)::int as visits from visits`;
        });
        return Response.json({ lease: { pid: conn.pid }, ...visits[0] });
      }
      if (url.pathname === "/postgres") {
        // postgres.js as it is, in transaction mode: a server connection per transaction, prepared statements kept.
        const sql = postgres(postgresOptions(env.EDGEPOOL, { tenant: "default" }));
        try {
          const [row] = await sql`select ${"postgres.js"}::text as driver, pg_backend_pid() as pid`;
          const [tx] = await sql.begin(async (tx) => tx`select txid_current()::text as txid, pg_backend_pid() as pid`);
          return Response.json({ ...row, transaction: tx });
        } finally {
          await sql.end();
        }
      }
      if (url.pathname === "/pg") {
        // node-postgres as it is: the Pool's connections are sessions to the coordinator.
        const pool = new pg.Pool(pgOptions(env.EDGEPOOL, { tenant: "default" }));
        try {
          const { rows } = await pool.query("select $1::text as driver, pg_backend_pid() as pid", ["pg"]);
          return Response.json(rows[0]);
        } finally {
          await pool.end();
        }
      }
      if (url.pathname === "/service") {
        const viaService = createPool(env.EDGEPOOL_SERVICE, { tenant: "default" });
        return Response.json((await viaService.sql`select 'through the service binding' as via`)[0]);
      }
      if (url.pathname === "/stats") return Response.json(await db.stats());
      return new Response("not found\n", { status: 404 });
    } catch (error) {
      const code = error instanceof PoolError ? error.code : (error as { code?: string }).code;
      return Response.json({ code, message: (error as Error).message }, { status: error instanceof PoolError && error.code === "ACQUIRE_TIMEOUT" ? 503 : 500 });
    }
  },
};
