// A Worker that hosts the pool's Durable Object itself: README.md, "In your own Worker".
import { createPool } from "edgepool";
import type { PoolCoordinator } from "edgepool/worker";
export { PoolCoordinator } from "edgepool/worker";

interface Env {
  EDGEPOOL: DurableObjectNamespace<PoolCoordinator>;
}

export default {
  async fetch(request, env) {
    const db = createPool(env.EDGEPOOL, { tenant: "default" });
    const [row] = await db.sql<{ n: number; pid: number }>`select ${41}::int + 1 as n, pg_backend_pid() as pid`;
    const rows = await db.begin(async (tx) => (await tx.sql<{ one: number }>`select 1 as one`).length);
    return Response.json({ ...row, rows });
  },
} satisfies ExportedHandler<Env>;
