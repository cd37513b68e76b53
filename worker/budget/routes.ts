import { PoolError } from "../../src/errors.ts";
import { checkAdmin, fail, respond } from "../admin.ts";
import type { Env } from "../env.ts";
import { checkBudgetName } from "./config.ts";

const BUDGET_ROUTE = /^\/v1\/budgets\/([^/]+)\/?$/;
const MAX_BODY_BYTES = 64 * 1024;

/**
 * `PUT|GET|DELETE /v1/budgets/:name` behind the admin token: a connection
 * budget for one database server (`{ maxConnections, leaseTtlMs? }`).
 * Answers undefined for any other path.
 */
export async function budgetRoute(request: Request, env: Env): Promise<Response | undefined> {
  const match = BUDGET_ROUTE.exec(new URL(request.url).pathname);
  if (!match) return undefined;
  try {
    await checkAdmin(request, env.EDGEPOOL_ADMIN_TOKEN);
    const name = checkBudgetName(decodeURIComponent(match[1]!));
    const namespace = env.EDGEPOOL_BUDGETS;
    if (!namespace) throw new PoolError("BAD_REQUEST", "", "budgets need the EDGEPOOL_BUDGETS Durable Object binding (class Budget)");
    const budget = namespace.get(namespace.idFromName(name));
    if (request.method === "GET") return respond(await budget.describe(name));
    if (request.method === "DELETE") return respond(await budget.remove(name));
    if (request.method === "PUT") return respond(await budget.configure(name, await body(request)));
    throw new PoolError("BAD_REQUEST", "", `no route ${request.method} /v1/budgets/${name}`);
  } catch (error) {
    return fail(error, "");
  }
}

async function body(request: Request): Promise<unknown> {
  const text = await request.text();
  if (text.length > MAX_BODY_BYTES) throw new PoolError("BAD_REQUEST", "", `body of ${text.length} bytes exceeds ${MAX_BODY_BYTES}`);
  try {
    return JSON.parse(text);
  } catch {
    throw new PoolError("BAD_REQUEST", "", "body must be JSON");
  }
}
