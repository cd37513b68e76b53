// A Worker bound to the separate coordinator Worker's PoolService: README.md, "As a separate coordinator Worker".
import { createPool, DatabaseError } from "edgepool";
import type { PoolService } from "edgepool/worker";

interface Env {
  EDGEPOOL: Service<PoolService>;
}

export default {
  async fetch(request, env) {
    const db = createPool(env.EDGEPOOL, { tenant: "default" });
    const [row] = await db.sql<{ n: number; pid: number }>`select ${41}::int + 1 as n, pg_backend_pid() as pid`;
    const error = await db.sql`select 1 / 0`.catch((e: unknown) => (e instanceof DatabaseError ? e.code : String(e)));
    return Response.json({ ...row, error });
  },
} satisfies ExportedHandler<Env>;
