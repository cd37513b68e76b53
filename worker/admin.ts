import { PoolError, toShape, type PoolErrorCode } from "../src/errors.ts";
import type { Reply } from "../src/protocol.ts";
import { showValue } from "../src/show.ts";
import { MAX_TOKEN_TTL_SECONDS, mintToken, sameSecret } from "./auth.ts";
import type { PoolCoordinator } from "./coordinator.ts";
import { LOCATION_HINTS } from "./pool/options.ts";

const STATUS: Partial<Record<PoolErrorCode, number>> = {
  BAD_REQUEST: 400, INVALID_OPTION: 400, UNAUTHORIZED: 401, UNKNOWN_TENANT: 404, POOL_CLOSED: 409,
  RESULT_TOO_LARGE: 413, WAIT_QUEUE_FULL: 503, ACQUIRE_TIMEOUT: 503, CONNECT_FAILED: 503, POOL_DISABLED: 503,
};
const DEFAULT_TOKEN_TTL_SECONDS = 3600;
const MAX_BODY_BYTES = 64 * 1024;

/** The admin routes' answer as JSON, with an HTTP status from the error code. */
export function respond(reply: Reply<unknown>, okStatus = 200): Response {
  if (reply.ok) return Response.json(reply.value, { status: okStatus });
  const status = reply.error.kind === "pool" ? (STATUS[reply.error.code] ?? 500) : 500;
  return Response.json({ error: reply.error }, { status });
}

/** An error as an HTTP response; `status` overrides the one its code maps to. */
export function fail(error: unknown, tenant: string, status?: number): Response {
  const shape = toShape(error, tenant);
  return status === undefined ? respond({ ok: false, error: shape }) : Response.json({ error: shape }, { status });
}

/** Checks `Authorization: Bearer <EDGEPOOL_ADMIN_TOKEN>`; client tokens are refused here. */
export async function checkAdmin(request: Request, adminToken: unknown): Promise<void> {
  if (typeof adminToken !== "string" || adminToken === "") {
    throw new PoolError("UNAUTHORIZED", "", "the admin API is off: set the EDGEPOOL_ADMIN_TOKEN secret");
  }
  const presented = /^Bearer\s+(\S+)$/i.exec(request.headers.get("Authorization") ?? "")?.[1];
  if (!presented || !(await sameSecret(presented, adminToken))) {
    throw new PoolError("UNAUTHORIZED", "", "admin routes need Authorization: Bearer <EDGEPOOL_ADMIN_TOKEN>");
  }
}

/**
 * `PUT|GET|DELETE /v1/tenants/:tenant` and `POST /v1/tenants/:tenant/tokens`,
 * after `checkAdmin`. The tenant name was checked by the router.
 */
export async function admin(request: Request, tenant: string, action: string | undefined, coordinator: DurableObjectStub<PoolCoordinator>, secret: string, placed?: (locationHint: DurableObjectLocationHint) => DurableObjectStub<PoolCoordinator>): Promise<Response> {
  const route = `${request.method} ${action ?? ""}`;
  if (route === "GET ") return respond(await coordinator.describe(tenant));
  if (route === "DELETE ") return respond(await coordinator.remove(tenant));
  if (route === "PUT ") {
    const { connectionString, ...options } = await body(request, tenant);
    // A hint counts on an object's first get() only: the PUT that creates the tenant places shard 0 (the coordinator checks the value).
    const hint = (LOCATION_HINTS as readonly unknown[]).includes(options.locationHint) ? (options.locationHint as DurableObjectLocationHint) : undefined;
    const stub = hint && placed ? placed(hint) : coordinator;
    return respond(await stub.configure(tenant, { connectionString, options }));
  }
  if (route === "POST tokens") {
    const { ttlSeconds = DEFAULT_TOKEN_TTL_SECONDS, ...rest } = await body(request, tenant, true);
    if (Object.keys(rest).length > 0) throw new PoolError("BAD_REQUEST", tenant, `unknown field "${Object.keys(rest)[0]}" (known: ttlSeconds)`);
    if (typeof ttlSeconds !== "number" || !Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > MAX_TOKEN_TTL_SECONDS) {
      throw new PoolError("INVALID_OPTION", tenant, `option "ttlSeconds" = ${showValue("ttlSeconds", ttlSeconds)} must be an integer from 1 to ${MAX_TOKEN_TTL_SECONDS}`);
    }
    // The tenant must exist before a token for it is issued.
    const described = await coordinator.describe(tenant);
    if (!described.ok) return respond(described);
    const expiresAt = Math.floor(Date.now() / 1000) + ttlSeconds;
    return respond({ ok: true, value: { tenant, token: await mintToken(secret, tenant, expiresAt), expiresAt: new Date(expiresAt * 1000).toISOString() } }, 201);
  }
  throw new PoolError("BAD_REQUEST", tenant, `no route ${request.method} /v1/tenants/${tenant}${action ? `/${action}` : ""}`);
}

async function body(request: Request, tenant: string, optional = false): Promise<Record<string, unknown>> {
  const text = await request.text();
  if (text.length > MAX_BODY_BYTES) throw new PoolError("BAD_REQUEST", tenant, `body of ${text.length} bytes exceeds ${MAX_BODY_BYTES}`);
  if (optional && text.trim() === "") return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new PoolError("BAD_REQUEST", tenant, "body must be JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new PoolError("BAD_REQUEST", tenant, "body must be a JSON object");
  return value as Record<string, unknown>;
}
