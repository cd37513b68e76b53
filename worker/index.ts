import { WorkerEntrypoint } from "cloudflare:workers";
import { PoolError, toShape } from "../src/errors.ts";
import type { CallOptions, Reply, WireMode } from "../src/protocol.ts";
import { admin, checkAdmin, fail } from "./admin.ts";
import { bearerToken, verifyToken } from "./auth.ts";
import type { PoolCoordinator } from "./coordinator.ts";
import type { Env } from "./env.ts";
import { checkTenant } from "./tenant.ts";
import { refuse } from "./tunnel.ts";

export { PoolCoordinator } from "./coordinator.ts";
export type { Env } from "./env.ts";

const TENANT_ROUTE = /^\/v1\/tenants\/([^/]+)(?:\/(tokens|rpc))?\/?$/;

/** The coordinator of a tenant: one Durable Object per tenant name. */
export function coordinatorFor(env: Env, tenant: string): DurableObjectStub<PoolCoordinator> {
  return env.EDGEPOOL.get(env.EDGEPOOL.idFromName(checkTenant(tenant)));
}

/**
 * The coordinator Worker's RPC entrypoint, for a service binding
 * (`entrypoint = "PoolService"`): routes each call to the tenant's coordinator.
 */
export class PoolService extends WorkerEntrypoint<Env> {
  /** The HTTP API (admin routes, remote RPC), for Workers that forward to the coordinator. */
  fetch(request: Request) {
    return handler.fetch(request, this.env);
  }

  run(tenant: string, bytes: Uint8Array, options?: CallOptions) {
    return route(this.env, tenant, (c) => c.run(tenant, bytes, options));
  }

  /** A driver's session (see `PoolCoordinator.connect`); the streams pass through to the tenant's coordinator. */
  async wire(tenant: string, options: { mode?: WireMode } | undefined, inbound: ReadableStream<Uint8Array>): Promise<ReadableStream<Uint8Array>> {
    try {
      return await coordinatorFor(this.env, tenant).wire(tenant, options, inbound);
    } catch (error) {
      return refuse(inbound, error, String(tenant));
    }
  }

  acquire(tenant: string, options?: CallOptions) {
    return route(this.env, tenant, (c) => c.acquire(tenant, options));
  }

  stats(tenant: string) {
    return route(this.env, tenant, (c) => c.stats(tenant));
  }
}

/**
 * HTTP: the admin API (`/v1/tenants/:tenant`, `/v1/tenants/:tenant/tokens`)
 * behind `EDGEPOOL_ADMIN_TOKEN`, and the remote clients' Cap'n Web endpoint
 * (`/v1/tenants/:tenant/rpc`) behind a client token scoped to that tenant.
 */
const handler = {
  async fetch(request: Request, env: Env): Promise<Response> {
    const { pathname } = new URL(request.url);
    if (pathname === "/" || pathname === "/healthz") return Response.json({ service: "edgepool", ok: true });
    const match = TENANT_ROUTE.exec(pathname);
    if (!match) {
      return fail(new PoolError("BAD_REQUEST", "", `no route ${request.method} ${pathname}`), "", 404);
    }
    let tenant = match[1]!;
    try {
      tenant = checkTenant(decodeURIComponent(tenant));
      const coordinator = coordinatorFor(env, tenant);
      if (match[2] === "rpc") {
        await verifyToken(tokenSecret(env, tenant), bearerToken(request), tenant, Math.floor(Date.now() / 1000));
        const headers = new Headers(request.headers);
        headers.delete("Authorization");
        headers.set("Sec-WebSocket-Protocol", "edgepool");
        headers.set("X-Edgepool-Tenant", tenant);
        return coordinator.fetch(new Request(request, { headers }));
      }
      await checkAdmin(request, env.EDGEPOOL_ADMIN_TOKEN);
      return await admin(request, tenant, match[2], coordinator, tokenSecret(env, tenant));
    } catch (error) {
      return fail(error, tenant);
    }
  },
} satisfies ExportedHandler<Env>;

export default handler;

/** The key client tokens are signed with: `EDGEPOOL_TOKEN_SECRET`, else the admin token. */
function tokenSecret(env: Env, tenant: string): string {
  const secret = env.EDGEPOOL_TOKEN_SECRET ?? env.EDGEPOOL_ADMIN_TOKEN;
  if (typeof secret !== "string" || secret === "") {
    throw new PoolError("UNAUTHORIZED", tenant, "remote access is off: set the EDGEPOOL_ADMIN_TOKEN secret");
  }
  return secret;
}

/** Calls the tenant's coordinator; a bad tenant name comes back as a `BAD_REQUEST` reply. */
async function route(env: Env, tenant: string, call: (c: DurableObjectStub<PoolCoordinator>) => Promise<unknown>): Promise<unknown> {
  try {
    return await call(coordinatorFor(env, tenant));
  } catch (error) {
    return { ok: false, error: toShape(error, String(tenant)) } satisfies Reply<never>;
  }
}
