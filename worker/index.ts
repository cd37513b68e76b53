import { WorkerEntrypoint } from "cloudflare:workers";
import { toShape } from "../src/errors.ts";
import type { CallOptions, Reply } from "../src/protocol.ts";
import type { PoolCoordinator } from "./coordinator.ts";
import type { Env } from "./env.ts";
import { checkTenant } from "./tenant.ts";

export { PoolCoordinator } from "./coordinator.ts";
export type { Env } from "./env.ts";

/** The coordinator of a tenant: one Durable Object per tenant name. */
export function coordinatorFor(env: Env, tenant: string): DurableObjectStub<PoolCoordinator> {
  return env.EDGEPOOL.get(env.EDGEPOOL.idFromName(checkTenant(tenant)));
}

/**
 * The coordinator Worker's RPC entrypoint, for a service binding
 * (`entrypoint = "PoolService"`): routes each call to the tenant's coordinator.
 */
export class PoolService extends WorkerEntrypoint<Env> {
  query(tenant: string, text: string, params?: unknown[], options?: CallOptions) {
    return route(this.env, tenant, (c) => c.query(tenant, text, params, options));
  }

  acquire(tenant: string, options?: CallOptions) {
    return route(this.env, tenant, (c) => c.acquire(tenant, options));
  }

  stats(tenant: string) {
    return route(this.env, tenant, (c) => c.stats(tenant));
  }
}

export default {
  async fetch(request: Request): Promise<Response> {
    const { pathname } = new URL(request.url);
    if (pathname === "/" || pathname === "/healthz") {
      return Response.json({ service: "edgepool", ok: true });
    }
    return Response.json({ error: { code: "BAD_REQUEST", message: `BAD_REQUEST: no route ${request.method} ${pathname}` } }, { status: 404 });
  },
} satisfies ExportedHandler<Env>;

/** Calls the tenant's coordinator; a bad tenant name comes back as a `BAD_REQUEST` reply. */
async function route(env: Env, tenant: string, call: (c: DurableObjectStub<PoolCoordinator>) => Promise<unknown>): Promise<unknown> {
  try {
    return await call(coordinatorFor(env, tenant));
  } catch (error) {
    return { ok: false, error: toShape(error, String(tenant)) } satisfies Reply<never>;
  }
}
