// A Node 22 HTTP server that borrows connections from an edgepool coordinator.
//   EDGEPOOL_URL=http://127.0.0.1:8787 EDGEPOOL_TOKEN=ep1... node examples/node/main.ts
// In your own project: import { createPool, getConnection } from "edgepool";
import { createServer } from "node:http";
import { createPool, getConnection, PoolError } from "../../src/index.ts";

const url = process.env.EDGEPOOL_URL!;
const tenant = process.env.EDGEPOOL_TENANT ?? "default";
const token = process.env.EDGEPOOL_TOKEN!;
const db = createPool(url, { tenant, token });

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
    } else {
      body = (await db.sql`select now() as time, current_database() as database`)[0];
    }
    response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
  } catch (error) {
    const status = error instanceof PoolError && error.code === "ACQUIRE_TIMEOUT" ? 503 : 500;
    response.writeHead(status).end((error as Error).message);
  }
}).listen(Number(process.env.PORT ?? 8000), "127.0.0.1");
