import type { PoolCoordinator } from "./coordinator.ts";

/** Bindings and vars of the coordinator Worker. */
export interface Env {
  EDGEPOOL: DurableObjectNamespace<PoolCoordinator>;
  /** Guards the admin API, and signs client tokens unless `EDGEPOOL_TOKEN_SECRET` is set (a secret). */
  EDGEPOOL_ADMIN_TOKEN?: string;
  /** Optional separate key for client tokens; rotating it revokes every client token. */
  EDGEPOOL_TOKEN_SECRET?: string;
  /** The default tenant's database (a secret in production). */
  DATABASE_URL?: string;
  /** `EDGEPOOL_MAX_CONNECTIONS` and the other pool options of the default tenant. */
  [variable: string]: unknown;
}
