// A Deno HTTP handler that borrows connections from an edgepool coordinator.
//   EDGEPOOL_URL=http://127.0.0.1:8787 EDGEPOOL_TENANT=default EDGEPOOL_TOKEN=ep1... \
//     deno run --allow-net --allow-env examples/deno/main.ts
// In your own project: import { createPool, getConnection } from "npm:edgepool";
import { createPool, getConnection } from "../../src/index.ts";

const url = Deno.env.get("EDGEPOOL_URL")!;
const tenant = Deno.env.get("EDGEPOOL_TENANT") ?? "default";
const token = Deno.env.get("EDGEPOOL_TOKEN")!;
const db = createPool(url, { tenant, token });

Deno.serve({ port: Number(Deno.env.get("PORT") ?? 8000) }, async (request) => {
  const { pathname } = new URL(request.url);
  if (pathname === "/lease") {
    // A lease rides its own WebSocket; if this process dies, the coordinator gets it back.
    await using conn = await getConnection(url, { tenant, token, acquireTimeoutMs: 2_000 });
    const [row] = await conn.begin((tx) => tx.sql`select pg_backend_pid() as pid, now() as at`);
    return Response.json(row);
  }
  const [row] = await db.sql`select now() as time, current_database() as database`;
  return Response.json(row);
});
