import type { Budget } from "./budget/object.ts";
import type { PoolCoordinator } from "./coordinator.ts";
import type { TenantDirectory } from "./directory.ts";

/** Bindings and vars of the coordinator Worker. */
export interface Env {
  EDGEPOOL: DurableObjectNamespace<PoolCoordinator>;
  /** Connection budgets per database server (`/v1/budgets/:name`, tenant option `budget`). */
  EDGEPOOL_BUDGETS?: DurableObjectNamespace<Budget>;
  /** The tenant directory (`GET /v1/tenants`, `/metrics`, `/dashboard`); without it coordinators report nowhere. */
  EDGEPOOL_DIRECTORY?: DurableObjectNamespace<TenantDirectory>;
  /** Bearer token a Prometheus scraper may use for `/metrics` instead of the admin token (a secret). */
  EDGEPOOL_METRICS_TOKEN?: string;
  /** How often at most a coordinator reports its counters to the directory, in ms (default 5000). */
  EDGEPOOL_REPORT_INTERVAL_MS?: string;
  /** Guards the admin API, and signs client tokens unless `EDGEPOOL_TOKEN_SECRET` is set (a secret). */
  EDGEPOOL_ADMIN_TOKEN?: string;
  /** Optional separate key for client tokens; rotating it revokes every client token. */
  EDGEPOOL_TOKEN_SECRET?: string;
  /** The default tenant's database (a secret in production). */
  DATABASE_URL?: string;
  /** `EDGEPOOL_MAX_CONNECTIONS` and the other pool options of the default tenant. */
  [variable: string]: unknown;
}
