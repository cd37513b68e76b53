import { WorkerEntrypoint } from "cloudflare:workers";
import { oneShotLost, PoolError, toShape } from "../src/errors.ts";
import type { CallOptions, Reply, WireMode } from "../src/protocol.ts";
import { admin, checkAdmin, fail, respond } from "./admin.ts";
import { bearerToken, checkClientToken, tokenSecret } from "./auth.ts";
import { budgetRoute } from "./budget/routes.ts";
import { SESSION_OPTION_HEADERS, type PoolCoordinator } from "./coordinator.ts";
import type { Env } from "./env.ts";
import { observe } from "./observe.ts";
import { callOption } from "./reply.ts";
import { checkTenant } from "./tenant.ts";
import { refuse, refuseTo } from "./tunnel.ts";
import { bridge } from "./connect.ts";
import { isLoopbackHost, refusal } from "../src/websocket.ts";
import { HINT_HEADER, hintedWire, notDelivered, routed, routerFor, shardName } from "../src/shards.ts";

export { Budget } from "./budget/object.ts";
export { PoolCoordinator } from "./coordinator.ts";
export { TenantDirectory } from "./directory.ts";
export type { Env } from "./env.ts";

const TENANT_ROUTE = /^\/v1\/tenants\/([^/]+)(?:\/(tokens|stats|connect))?\/?$/;

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
    // A one-shot may have run when its call broke: only an undelivered one goes to another shard; the others say so (LEASE_LOST).
    return sharded(this.env, tenant, (c) => c.run(tenant, bytes, options), notDelivered, oneShotLost);
  }

  /** A driver's session (see `PoolCoordinator.connect`); the streams pass through to the tenant's coordinator. */
  async wire(tenant: string, options: { mode?: WireMode } | undefined, inbound: ReadableStream<Uint8Array>): Promise<ReadableStream<Uint8Array>> {
    try {
      checkTenant(tenant);
      const mode = options?.mode ?? "transaction";
      // A stream passed in a call is the callee's: a call refused as overloaded and tried on another shard needs its own,
      // so each attempt gets a relay and the caller's bytes go into the one that answered (the caller writes nothing before).
      const answer = await onShard(this.env, tenant, async (c) => {
        const relay = new TransformStream<Uint8Array, Uint8Array>();
        const { stream, hint } = hintedWire(await c.wire(tenant, { mode, hint: true }, relay.readable));
        void inbound.pipeTo(relay.writable).catch(() => {});
        return { ok: true, value: stream, hint };
      }, notDelivered);
      return answer.value;
    } catch (error) {
      return refuse(inbound, error, String(tenant));
    }
  }

  acquire(tenant: string, options?: CallOptions) {
    return sharded(this.env, tenant, (c) => c.acquire(tenant, options), () => true);
  }

  stats(tenant: string) {
    return route(this.env, tenant, (c) => c.stats(tenant));
  }
}

/**
 * HTTP: the admin API (`/v1/tenants/:tenant`, `/v1/tenants/:tenant/tokens`)
 * behind `EDGEPOOL_ADMIN_TOKEN`; behind a client token scoped to the tenant,
 * the remote tunnel (`GET /v1/tenants/:tenant/connect`, a WebSocket per client
 * session, drivers' and the built-in client's) and the pool's counters
 * (`GET /v1/tenants/:tenant/stats`, the built-in client's `stats()`).
 */
const handler = {
  async fetch(request: Request, env: Env): Promise<Response> {
    const { pathname } = new URL(request.url);
    if (pathname === "/" || pathname === "/healthz") return Response.json({ service: "edgepool", ok: true });
    const observed = await observe(request, env);
    if (observed) return observed;
    const budgeted = await budgetRoute(request, env);
    if (budgeted) return budgeted;
    const match = TENANT_ROUTE.exec(pathname);
    if (!match) {
      return fail(new PoolError("BAD_REQUEST", "", `no route ${request.method} ${pathname}`), "", 404);
    }
    let tenant = match[1]!;
    try {
      tenant = checkTenant(decodeURIComponent(tenant));
      if (match[2] === "connect") return await connectRoute(request, env, tenant);
      const coordinator = coordinatorFor(env, tenant);
      if (match[2] === "stats") {
        await checkClientToken(env, tenant, bearerToken(request));
        if (request.method !== "GET") throw new PoolError("BAD_REQUEST", tenant, `${pathname} takes GET`);
        return respond(await coordinator.stats(tenant));
      }
      await checkAdmin(request, env.EDGEPOOL_ADMIN_TOKEN);
      const placed = (locationHint: DurableObjectLocationHint) => env.EDGEPOOL.get(env.EDGEPOOL.idFromName(tenant), { locationHint });
      return await admin(request, tenant, match[2], coordinator, tokenSecret(env, tenant), placed);
    } catch (error) {
      return fail(error, tenant);
    }
  },
} satisfies ExportedHandler<Env>;

export default handler;

/**
 * `GET /v1/tenants/:tenant/connect[?mode=session|transaction][&auth=password][&acquireTimeoutMs=…][&queryTimeoutMs=…]`:
 * checks the mode, the session's options and the token before the upgrade,
 * then hands the upgrade to one of the tenant's shards, picked by power of
 * two choices on the hints their upgrades answer with (`HINT_HEADER`). With `auth=password` (for tools that can only send
 * a password: `edgepool proxy` without a token) the session asks for the
 * token as its startup password instead, over TLS only unless on loopback.
 */
async function connectRoute(request: Request, env: Env, tenant: string): Promise<Response> {
  const url = new URL(request.url);
  const mode = url.searchParams.get("mode") ?? "transaction";
  if (mode !== "transaction" && mode !== "session") {
    throw new PoolError("INVALID_OPTION", tenant, `option "mode" = ${JSON.stringify(mode.slice(0, 40))} must be "transaction" or "session"`);
  }
  const options = new Map<string, number>();
  for (const [key, header] of SESSION_OPTION_HEADERS) {
    const value = url.searchParams.get(key);
    // Numbers as the option check wants them ("-1" is refused as -1); "12abc" and "" stay strings, refused as such.
    const parsed = value !== null && /^-?\d+(?:\.\d+)?$/.test(value) ? Number(value) : value ?? undefined;
    const checked = callOption(tenant, { [key]: parsed }, key);
    if (checked !== undefined) options.set(header, checked);
  }
  const password = url.searchParams.get("auth") === "password";
  if (!password) {
    await checkClientToken(env, tenant, bearerToken(request));
  } else if (url.protocol !== "https:" && !isLoopbackHost(url.hostname)) {
    throw new PoolError("UNAUTHORIZED", tenant, `tenant "${tenant}": a token as the startup password travels over https only`);
  }
  if (request.method !== "GET" || request.headers.get("Upgrade")?.toLowerCase() !== "websocket") {
    return fail(new PoolError("BAD_REQUEST", tenant, `${url.pathname} takes a WebSocket upgrade (GET with Upgrade: websocket)`), tenant, 426);
  }
  const headers = new Headers(request.headers);
  headers.delete("Authorization");
  // No permessage-deflate on the shard's hop: deflating each small protocol message costs the coordinator CPU.
  headers.delete("Sec-WebSocket-Extensions");
  // The token may be one of the offered subprotocols; only "edgepool" goes on (and is what the answer names).
  const offered = request.headers.get("Sec-WebSocket-Protocol")?.split(",").map((p) => p.trim()) ?? [];
  if (offered.includes("edgepool")) headers.set("Sec-WebSocket-Protocol", "edgepool");
  else headers.delete("Sec-WebSocket-Protocol");
  headers.set("X-Edgepool-Tenant", tenant);
  headers.set("X-Edgepool-Mode", mode);
  headers.set("X-Edgepool-Auth", password ? "password" : "token");
  for (const [header, value] of options) headers.set(header, String(value));
  // Nothing of the client's was sent before the upgrade: a shard that refuses it (or a call that breaks) leaves it to another shard.
  const answer = await onShard(env, tenant, async (c): Promise<Upgrade> => {
    const response = await c.fetch(new Request(request, { headers }));
    const hint = readHint(response.headers.get(HINT_HEADER));
    if (response.status === 101) return { ok: true, response, hint };
    return { ok: false, error: await refusal(response, tenant, "the shard's upgrade"), hint };
  }, () => true);
  if (answer.ok) return uncompressed(answer.response);
  // No shard took it: the client learns why in its session, as a driver would from a server (after its password, if it sends one).
  const [client, server] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
  server.accept();
  bridge(server, {
    tenant,
    mode,
    open: (inbound, out) => refuseTo(inbound, out, answer.error, tenant),
    checkPassword: password ? (presented) => checkClientToken(env, tenant, presented) : undefined,
  });
  return new Response(null, { status: 101, webSocket: client, headers: { ...NO_COMPRESSION, ...(offered.includes("edgepool") ? { "Sec-WebSocket-Protocol": "edgepool" } : {}) } });
}

/**
 * An empty Sec-WebSocket-Extensions refuses the client's permessage-deflate
 * offer (workerd's web_socket_compression rule): every tunnel message is a
 * few protocol messages, so deflate only costs CPU on both ends, and in
 * Node's WebSocket thread-pool round trips for each message received.
 */
const NO_COMPRESSION = { "Sec-WebSocket-Extensions": "" };

/** A shard's 101 answered without compression. */
function uncompressed(response: Response): Response {
  const headers = new Headers(response.headers);
  headers.set("Sec-WebSocket-Extensions", "");
  return new Response(null, { status: response.status, webSocket: response.webSocket, headers });
}

/** A shard's answer to a tunnel's upgrade: the 101 to pass on, or why it refused. */
type Upgrade = { ok: true; response: Response; hint: unknown } | { ok: false; error: PoolError; hint: unknown };

/** A shard's hint header as the router takes it (anything unreadable is no hint). */
function readHint(header: string | null): unknown {
  try {
    return header === null ? undefined : JSON.parse(header);
  } catch {
    return undefined;
  }
}

/** Shard `shard` of a tenant's coordinators (`tenant`, `tenant#1`, ...). */
function shardFor(env: Env, tenant: string, shard: number): DurableObjectStub<PoolCoordinator> {
  return env.EDGEPOOL.get(env.EDGEPOOL.idFromName(shardName(tenant, shard)));
}

/**
 * One call on one of the tenant's shards, picked by power of two choices with
 * this isolate's router (`routed`: another shard once if the first refused
 * before running anything); the call's count on its shard ends with its answer.
 */
async function onShard<R extends { ok: boolean; error?: unknown; hint?: unknown }>(env: Env, tenant: string, call: (c: DurableObjectStub<PoolCoordinator>) => Promise<R>, retryOnThrow: (error: unknown) => boolean): Promise<R> {
  const { answer, leave } = await routed(routerFor(env.EDGEPOOL, tenant), (shard) => shardFor(env, tenant, shard), call, retryOnThrow);
  leave();
  return answer;
}

/**
 * A session on one of the tenant's shards (`onShard`); a bad tenant name
 * comes back as a `BAD_REQUEST` reply, a call that broke as `broke` says
 * (default `INTERNAL`).
 */
async function sharded<T>(env: Env, tenant: string, call: (c: DurableObjectStub<PoolCoordinator>) => Promise<Reply<T>>, retryOnThrow: (error: unknown) => boolean, broke?: (tenant: string, cause: string) => PoolError): Promise<Reply<T>> {
  try {
    checkTenant(tenant);
    return await onShard(env, tenant, call, retryOnThrow);
  } catch (error) {
    const cause = !broke || error instanceof PoolError ? error : broke(String(tenant), error instanceof Error ? error.message : String(error));
    return { ok: false, error: toShape(cause, String(tenant)) } satisfies Reply<never>;
  }
}

/** Calls the tenant's coordinator; a bad tenant name comes back as a `BAD_REQUEST` reply. */
async function route(env: Env, tenant: string, call: (c: DurableObjectStub<PoolCoordinator>) => Promise<unknown>): Promise<unknown> {
  try {
    return await call(coordinatorFor(env, tenant));
  } catch (error) {
    return { ok: false, error: toShape(error, String(tenant)) } satisfies Reply<never>;
  }
}
