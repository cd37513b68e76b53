import type { PoolCoordinator } from "./coordinator.ts";

/** Bindings and vars of the coordinator Worker. */
export interface Env {
  EDGEPOOL: DurableObjectNamespace<PoolCoordinator>;
  /** The default tenant's database (a secret in production). */
  DATABASE_URL?: string;
  /** `EDGEPOOL_MAX_CONNECTIONS` and the other pool options of the default tenant. */
  [variable: string]: unknown;
}
