// A Node 22 HTTP server that reaches an edgepool coordinator over its URL: the built-in client,
// and the unmodified drivers (postgres.js, pg) through the WebSocket tunnel.
//   EDGEPOOL_URL=http://127.0.0.1:8787 EDGEPOOL_TOKEN=ep1... node examples/node/main.ts
// In your own project: import { createPool, getConnection, postgresOptions, pgOptions } from "edgepool";
import { createServer } from "node:http";
import pg from "pg";
import postgres from "postgres";
import { createPool, getConnection, pgOptions, PoolError, postgresOptions } from "../../src/index.ts";

const url = process.env.EDGEPOOL_URL!;
const tenant = process.env.EDGEPOOL_TENANT ?? "default";
const token = process.env.EDGEPOOL_TOKEN!;
const db = createPool(url, { tenant, token });
// Outside a Worker a driver instance lives as long as the process; each of its connections is one
// client session (one WebSocket) multiplexed by the coordinator onto the tenant's server connections.
const sql = postgres(postgresOptions(url, { tenant, token, max: 4 }));
const pool = new pg.Pool(pgOptions(url, { tenant, token, max: 4 }));

createServer(async (request, response) => {
  try {
    let body: unknown;
    if (request.url === "/lease") {
      const conn = await getConnection(url, { tenant, token, acquireTimeoutMs: 2_000 });
      try {
        body = (await conn.begin((tx) => tx.sql`select pg_backend_pid() as pid, now() as at`))[0];
      } finally {
        await conn.release();
      }
    } else if (request.url === "/postgres") {
      body = (await sql`select now() as time, pg_backend_pid() as pid`)[0];
    } else if (request.url === "/pg") {
      body = (await pool.query("select now() as time, pg_backend_pid() as pid")).rows[0];
    } else {
      body = (await db.sql`select now() as time, current_database() as database`)[0];
    }
    response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
  } catch (error) {
    // Pool errors keep their code: a PoolError from the built-in client, the code in the message from a driver (53300 for ACQUIRE_TIMEOUT).
    const busy = (error instanceof PoolError && error.code === "ACQUIRE_TIMEOUT") || (error as { code?: string }).code === "53300";
    response.writeHead(busy ? 503 : 500).end((error as Error).message);
  }
}).listen(Number(process.env.PORT ?? 8000), "127.0.0.1");
