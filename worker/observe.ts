import { PoolError } from "../src/errors.ts";
import { checkAdmin, fail, respond } from "./admin.ts";
import { sameSecret } from "./auth.ts";
import { dashboardAsset, dashboardPage } from "./dashboard.ts";
import { listTenants, type TenantDirectory } from "./directory.ts";
import type { Env } from "./env.ts";
import { exposition, METRICS_CONTENT_TYPE } from "./metrics.ts";
import { checkTenant } from "./tenant.ts";

const DEFAULT_PAGE = 100;
const MAX_PAGE = 1_000;
const ACTIVITY_ROUTE = /^\/v1\/activity\/([^/]+)\/?$/;

/**
 * The operator's routes, answered from the tenant directory (never by calling
 * every coordinator): `GET /v1/tenants` (admin token), `GET /metrics` (admin
 * or `EDGEPOOL_METRICS_TOKEN`), `GET /dashboard` (the page; its data calls
 * carry the admin token), and `GET /v1/activity/:tenant` (admin: one
 * tenant's coordinator, live). Anything else: undefined.
 */
export async function observe(request: Request, env: Env): Promise<Response | undefined> {
  const url = new URL(request.url);
  const { pathname } = url;
  if (pathname === "/dashboard" || pathname === "/dashboard/") return get(request) ?? dashboardPage();
  if (pathname.startsWith("/dashboard/")) return get(request) ?? dashboardAsset(pathname.slice("/dashboard/".length));
  const tenants = pathname === "/v1/tenants";
  const activity = ACTIVITY_ROUTE.exec(pathname);
  if (!tenants && !activity && pathname !== "/metrics") return undefined;
  try {
    if (pathname === "/metrics") {
      await checkScraper(request, env);
      return get(request) ?? new Response(exposition(await allTenants(directory(env))), { headers: { "Content-Type": METRICS_CONTENT_TYPE } });
    }
    await checkAdmin(request, env.EDGEPOOL_ADMIN_TOKEN);
    const refused = get(request);
    if (refused) return refused;
    if (activity) {
      const tenant = checkTenant(decodeURIComponent(activity[1]!));
      return respond(await env.EDGEPOOL.get(env.EDGEPOOL.idFromName(tenant)).activity(tenant));
    }
    const { limit, cursor } = page(url.searchParams);
    return Response.json(await listTenants(directory(env), cursor, limit));
  } catch (error) {
    return fail(error, "");
  }
}

/** Every tenant in the directory, a page at a time. */
export async function allTenants(namespace: DurableObjectNamespace<TenantDirectory>) {
  const all = [];
  let cursor = "";
  for (;;) {
    const page = await listTenants(namespace, cursor, MAX_PAGE);
    all.push(...page.tenants);
    if (page.cursor === null) return all;
    cursor = page.cursor;
  }
}

/** `?limit=` (1..1000, default 100) and `?cursor=` (the `cursor` of the previous page), checked where they enter. */
function page(params: URLSearchParams): { limit: number; cursor: string } {
  const rawLimit = params.get("limit");
  const limit = rawLimit === null ? DEFAULT_PAGE : /^\d{1,4}$/.test(rawLimit) ? Number(rawLimit) : Number.NaN;
  if (!(limit >= 1 && limit <= MAX_PAGE)) {
    throw new PoolError("INVALID_OPTION", "", `option "limit" = ${JSON.stringify(rawLimit?.slice(0, 20))} must be an integer from 1 to ${MAX_PAGE}`);
  }
  const cursor = params.get("cursor") ?? "";
  if (cursor !== "") checkTenant(cursor);
  return { limit, cursor };
}

function directory(env: Env): DurableObjectNamespace<TenantDirectory> {
  if (!env.EDGEPOOL_DIRECTORY) {
    throw new PoolError("BAD_REQUEST", "", "the tenant directory is not bound: add the EDGEPOOL_DIRECTORY Durable Object binding (class TenantDirectory) to wrangler.toml");
  }
  return env.EDGEPOOL_DIRECTORY;
}

/** `/metrics` takes the admin token or, for a scraper, `EDGEPOOL_METRICS_TOKEN`. */
async function checkScraper(request: Request, env: Env): Promise<void> {
  const presented = /^Bearer\s+(\S+)$/i.exec(request.headers.get("Authorization") ?? "")?.[1];
  const metricsToken = env.EDGEPOOL_METRICS_TOKEN;
  if (presented && typeof metricsToken === "string" && metricsToken !== "" && (await sameSecret(presented, metricsToken))) return;
  try {
    await checkAdmin(request, env.EDGEPOOL_ADMIN_TOKEN);
  } catch {
    throw new PoolError("UNAUTHORIZED", "", "/metrics needs Authorization: Bearer <EDGEPOOL_METRICS_TOKEN or EDGEPOOL_ADMIN_TOKEN>");
  }
}

/** These routes only read: anything but GET (and HEAD) is refused. */
function get(request: Request): Response | undefined {
  if (request.method === "GET" || request.method === "HEAD") return undefined;
  return fail(new PoolError("BAD_REQUEST", "", `${new URL(request.url).pathname} takes GET`), "", 405);
}
