// A Worker serving many tenants: the tenant is the first label of the host name
// (acme.example.com → "acme"); each has its own coordinator, database and limits,
// created at run time with PUT /v1/tenants/:tenant.
import { createPool, PoolError, type PoolTarget } from "../../src/index.ts";

interface Env {
  EDGEPOOL: PoolTarget;
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const tenant = new URL(request.url).hostname.split(".")[0]!;
    const db = createPool(env.EDGEPOOL, { tenant });
    try {
      const [row] = await db.sql`select current_database() as database, current_user as role, now() as time`;
      return Response.json({ tenant, ...row });
    } catch (error) {
      if (error instanceof PoolError && error.code === "UNKNOWN_TENANT") return new Response(`no such tenant: ${tenant}\n`, { status: 404 });
      throw error;
    }
  },
};
