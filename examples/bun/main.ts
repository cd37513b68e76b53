// A Bun HTTP server that reaches an edgepool coordinator over its URL: the built-in client,
// and postgres.js / pg through the WebSocket tunnel.
//   EDGEPOOL_URL=http://127.0.0.1:8787 EDGEPOOL_TOKEN=ep1... bun examples/bun/main.ts
// In your own project: import { createPool, getConnection, postgresOptions, pgOptions } from "edgepool";
import pg from "pg";
import postgres from "postgres";
import { createPool, getConnection, pgOptions, postgresOptions } from "../../src/index.ts";

/** Bun's server, typed here so the repository's tsc (Node types) checks this file too. */
declare const Bun: { serve(options: { port: number; hostname: string; fetch(request: Request): Promise<Response> }): unknown };

const url = process.env.EDGEPOOL_URL!;
const tenant = process.env.EDGEPOOL_TENANT ?? "default";
const token = process.env.EDGEPOOL_TOKEN!;
const db = createPool(url, { tenant, token });
// One driver instance for the process; each connection is one WebSocket session to the coordinator.
const sql = postgres(postgresOptions(url, { tenant, token, max: 4 }));
const pool = new pg.Pool(pgOptions(url, { tenant, token, max: 4 }));

Bun.serve({
  port: Number(process.env.PORT ?? 8000),
  hostname: "127.0.0.1",
  async fetch(request) {
    const { pathname } = new URL(request.url);
    if (pathname === "/lease") {
      await using conn = await getConnection(url, { tenant, token, acquireTimeoutMs: 2_000 });
      const [row] = await conn.begin((tx) => tx.sql`select pg_backend_pid() as pid, now() as at`);
      return Response.json(row);
    }
    if (pathname === "/postgres") return Response.json((await sql`select now() as time, pg_backend_pid() as pid`)[0]);
    if (pathname === "/pg") return Response.json((await pool.query("select now() as time, pg_backend_pid() as pid")).rows[0]);
    const [row] = await db.sql`select now() as time, current_database() as database`;
    return Response.json(row);
  },
});
