import { PoolError } from "../src/errors.ts";
import { HIDDEN, looksSecret } from "../src/show.ts";
import { optionsFromEnv, resolveOptions, type PoolOptions } from "./pool/options.ts";

/** The tenant a single-tenant deployment serves from `DATABASE_URL` and `EDGEPOOL_*` vars. */
export const DEFAULT_TENANT = "default";

const TENANT_NAME = /^[a-z0-9](?:[a-z0-9_-]{0,62})$/i;

/** A tenant's database and pool options. */
export interface TenantConfig {
  connectionString: string;
  options: PoolOptions;
}

/** Checks a tenant name where it enters: 1–63 letters, digits, `_` or `-`, starting with a letter or digit. */
export function checkTenant(tenant: unknown): string {
  if (typeof tenant !== "string" || !TENANT_NAME.test(tenant)) {
    // A connection string or token passed as the tenant by mistake is not echoed, not even in `tenant`.
    const secret = typeof tenant === "string" && looksSecret(tenant);
    const shown = secret ? HIDDEN : typeof tenant === "string" ? JSON.stringify(tenant.slice(0, 80)) : typeof tenant;
    throw new PoolError("BAD_REQUEST", secret ? "" : String(tenant).slice(0, 80), `tenant name ${shown} must be 1-63 letters, digits, "_" or "-", starting with a letter or digit`);
  }
  return tenant;
}

/** Validates a tenant's configuration: a postgres:// URL and pool options. */
export function resolveConfig(tenant: string, input: { connectionString?: unknown; options?: unknown }): TenantConfig {
  const { connectionString } = input;
  if (typeof connectionString !== "string" || !/^postgres(ql)?:\/\//.test(connectionString) || !URL.canParse(connectionString)) {
    throw new PoolError("INVALID_OPTION", tenant, `option "connectionString" must be a postgres:// URL`);
  }
  return { connectionString, options: resolveOptions(tenant, (input.options ?? {}) as Record<string, unknown>) };
}

/** The default tenant's configuration from the Worker's environment, or undefined without `DATABASE_URL`. */
export function configFromEnv(env: Record<string, unknown>): TenantConfig | undefined {
  if (typeof env.DATABASE_URL !== "string" || env.DATABASE_URL === "") return undefined;
  return resolveConfig(DEFAULT_TENANT, { connectionString: env.DATABASE_URL, options: optionsFromEnv(env) });
}

/** A connection string with its password (in the authority or libpq's `password` query parameter) replaced, for anything shown to people. */
export function maskPassword(connectionString: string): string {
  const url = new URL(connectionString);
  if (url.password) url.password = "***";
  if (url.searchParams.has("password")) url.searchParams.set("password", "***");
  return url.toString();
}
