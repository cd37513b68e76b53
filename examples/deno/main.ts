// A Deno HTTP handler that reaches an edgepool coordinator over its URL: the built-in client,
// and postgres.js / pg through the WebSocket tunnel.
//   EDGEPOOL_URL=http://127.0.0.1:8787 EDGEPOOL_TENANT=default EDGEPOOL_TOKEN=ep1... \
//     deno run --allow-net --allow-env --allow-read examples/deno/main.ts
// In your own project: import { createPool, getConnection, postgresOptions, pgOptions } from "npm:edgepool";
import pg from "pg";
import postgres from "postgres";
import { createPool, getConnection, pgOptions, postgresOptions } from "../../src/index.ts";

const url = Deno.env.get("EDGEPOOL_URL")!;
const tenant = Deno.env.get("EDGEPOOL_TENANT") ?? "default";
const token = Deno.env.get("EDGEPOOL_TOKEN")!;
const db = createPool(url, { tenant, token });
// One driver instance for the process; each connection is one WebSocket session to the coordinator.
const sql = postgres(postgresOptions(url, { tenant, token, max: 4 }));
const pool = new pg.Pool(pgOptions(url, { tenant, token, max: 4 }));

Deno.serve({ port: Number(Deno.env.get("PORT") ?? 8000), hostname: "127.0.0.1" }, async (request) => {
  const { pathname } = new URL(request.url);
  if (pathname === "/lease") {
    // A lease rides its own WebSocket; if this process dies, the coordinator gets it back.
    await using conn = await getConnection(url, { tenant, token, acquireTimeoutMs: 2_000 });
    const [row] = await conn.begin((tx) => tx.sql`select pg_backend_pid() as pid, now() as at`);
    return Response.json(row);
  }
  if (pathname === "/postgres") return Response.json((await sql`select now() as time, pg_backend_pid() as pid`)[0]);
  if (pathname === "/pg") return Response.json((await pool.query("select now() as time, pg_backend_pid() as pid")).rows[0]);
  const [row] = await db.sql`select now() as time, current_database() as database`;
  return Response.json(row);
});
