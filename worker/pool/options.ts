import { PoolError } from "../../src/errors.ts";
import { showValue } from "../../src/show.ts";
import { isBudgetName } from "../budget/config.ts";

/** Every pool option of design §3; times are milliseconds. */
export interface PoolOptions {
  maxConnections: number;
  minConnections: number;
  initialConnections: number;
  minIdle: number;
  maxIdle: number;
  acquireTimeoutMs: number;
  maxWaiters: number;
  idleTimeoutMs: number;
  maxLifetimeMs: number;
  maxUses: number;
  reuseCooldownMs: number;
  leaseTimeoutMs: number;
  connectTimeoutMs: number;
  maxConcurrentConnects: number;
  resetQuery: string;
  validateAfterIdleMs: number;
  queryTimeoutMs: number;
  maxResultBytes: number;
  pipelineDepth: number;
  /** Named statements kept per server connection for transaction mode; LRU-evicted. `0`: not tracked. */
  maxPreparedStatements: number;
  /** The connection budget (`/v1/budgets/:name`) this tenant's server connections count against; none by default. */
  budget?: string;
  /** Coordinators (Durable Objects) the tenant is spread over (absent: 1); `maxConnections` and the other counts are split across them. */
  shards?: number;
  /** Cloudflare's region hint for every shard's Durable Object (honoured on an object's first `get()`); none by default. */
  locationHint?: LocationHint;
}

/** Cloudflare's Durable Object location hints. */
export const LOCATION_HINTS = ["wnam", "enam", "sam", "weur", "eeur", "apac", "oc", "afr", "me"] as const;

/** One of Cloudflare's Durable Object location hints. */
export type LocationHint = (typeof LOCATION_HINTS)[number];

/** Most shards a tenant may have. */
export const MAX_SHARDS = 64;

/** Defaults of design §3. `maxIdle` defaults to `maxConnections` and is filled in by `resolveOptions`. */
export const DEFAULTS: Readonly<Omit<PoolOptions, "maxIdle">> = {
  maxConnections: 10,
  minConnections: 0,
  initialConnections: 0,
  minIdle: 0,
  acquireTimeoutMs: 5_000,
  maxWaiters: 1_000,
  idleTimeoutMs: 60_000,
  maxLifetimeMs: 600_000,
  maxUses: 0,
  reuseCooldownMs: 0,
  leaseTimeoutMs: 30_000,
  connectTimeoutMs: 10_000,
  maxConcurrentConnects: 4,
  resetQuery: "DISCARD ALL",
  validateAfterIdleMs: 30_000,
  queryTimeoutMs: 0,
  maxResultBytes: 16 * 1024 * 1024,
  pipelineDepth: 4,
  maxPreparedStatements: 200,
};

/** An outbound socket keeps a Durable Object alive for at most 15 minutes (design §6). */
export const MAX_LIFETIME_CAP_MS = 15 * 60_000;

/** RPC payloads are capped at 32 MiB (design §6); results must stay well below. */
export const MAX_RESULT_BYTES_CAP = 30 * 1024 * 1024;

/** Smallest value each numeric option accepts; `0` has the meaning design §3 gives it. */
const MINIMUM: Record<Exclude<keyof PoolOptions, "resetQuery" | "budget" | "locationHint" | "shards">, number> = {
  maxConnections: 0,
  minConnections: 0,
  initialConnections: 0,
  minIdle: 0,
  maxIdle: 0,
  acquireTimeoutMs: 0,
  maxWaiters: 0,
  idleTimeoutMs: 0,
  maxLifetimeMs: 0,
  maxUses: 0,
  reuseCooldownMs: 0,
  leaseTimeoutMs: 1,
  connectTimeoutMs: 1,
  maxConcurrentConnects: 1,
  validateAfterIdleMs: 0,
  queryTimeoutMs: 0,
  maxResultBytes: 1,
  pipelineDepth: 1,
  maxPreparedStatements: 0,
};

/** Options whose value is a string (from `EDGEPOOL_*` variables as is). */
const STRING_KEYS = ["resetQuery", "budget", "locationHint"];

const KEYS = new Set<string>([...Object.keys(MINIMUM), "shards", ...STRING_KEYS]);

/**
 * Checks user options up front and returns the complete set: unknown keys,
 * non-integers, negatives and contradictions are rejected with `INVALID_OPTION`
 * naming the key and the value (unless the value may hold a secret: `showValue`).
 */
export function resolveOptions(tenant: string, input: Record<string, unknown> = {}): PoolOptions {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw invalid(tenant, "options", input, "must be an object");
  }
  for (const key of Object.keys(input)) {
    if (!KEYS.has(key)) throw invalid(tenant, key, input[key], `is not an option (known: ${[...KEYS].join(", ")})`);
  }
  const merged = { ...DEFAULTS, maxIdle: undefined, ...stripUndefined(input) } as Record<string, unknown>;
  for (const [key, minimum] of Object.entries(MINIMUM)) {
    const value = merged[key];
    if (key === "maxIdle" && value === undefined) continue;
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < minimum) {
      throw invalid(tenant, key, value, `must be an integer >= ${minimum}`);
    }
  }
  if (typeof merged.resetQuery !== "string") throw invalid(tenant, "resetQuery", merged.resetQuery, "must be a string");
  if (merged.budget !== undefined && !isBudgetName(merged.budget)) {
    throw invalid(tenant, "budget", merged.budget, `must name a budget: 1-63 letters, digits, "_" or "-", starting with a letter or digit`);
  }
  if (merged.locationHint !== undefined && !(LOCATION_HINTS as readonly unknown[]).includes(merged.locationHint)) {
    throw invalid(tenant, "locationHint", merged.locationHint, `must be one of ${LOCATION_HINTS.join(", ")}`);
  }
  const options = { ...merged, maxIdle: merged.maxIdle ?? merged.maxConnections } as PoolOptions;
  if (options.minConnections > options.maxConnections) {
    throw invalid(tenant, "minConnections", options.minConnections, `must not exceed maxConnections (${options.maxConnections})`);
  }
  if (options.minIdle > options.maxIdle) {
    throw invalid(tenant, "minIdle", options.minIdle, `must not exceed maxIdle (${options.maxIdle})`);
  }
  if (options.maxLifetimeMs > MAX_LIFETIME_CAP_MS) {
    throw invalid(tenant, "maxLifetimeMs", options.maxLifetimeMs, `must be at most ${MAX_LIFETIME_CAP_MS} (an open socket keeps a Durable Object for 15 minutes at most)`);
  }
  if (options.maxResultBytes > MAX_RESULT_BYTES_CAP) {
    throw invalid(tenant, "maxResultBytes", options.maxResultBytes, `must be at most ${MAX_RESULT_BYTES_CAP} (RPC carries 32 MiB at most)`);
  }
  const { shards } = options;
  if (shards !== undefined) {
    if (typeof shards !== "number" || !Number.isSafeInteger(shards) || shards < 1 || shards > MAX_SHARDS) {
      throw invalid(tenant, "shards", shards, `must be an integer from 1 to ${MAX_SHARDS}`);
    }
    if (shards > 1 && options.maxConnections < shards) {
      throw invalid(tenant, "shards", shards, `must not exceed maxConnections (${options.maxConnections}): each shard needs at least one connection`);
    }
  }
  return options;
}

/** Counts split across a tenant's shards, each by `share()`. */
const SPLIT = ["maxConnections", "minConnections", "initialConnections", "minIdle", "maxIdle"] as const;

/** Shard `shard`'s part of `total` over `shards`: an equal part, the remainder to the first shards (40 over 4: 10 each; 10 over 4: 3, 3, 2, 2). */
export function share(total: number, shards: number, shard: number): number {
  return Math.floor(total / shards) + (shard < total % shards ? 1 : 0);
}

/** The options one shard's pool runs with: the tenant's, with its counts split (monotone, so min ≤ max still holds). */
export function shardOptions(options: PoolOptions, shard: number): PoolOptions {
  const shards = options.shards ?? 1;
  if (shards <= 1) return options;
  const part = { ...options };
  for (const key of SPLIT) part[key] = share(options[key], shards, shard);
  return part;
}

/**
 * Reads options from `EDGEPOOL_*` variables (`EDGEPOOL_MAX_CONNECTIONS` for
 * `maxConnections`, ...). Numeric values arrive as strings from wrangler vars.
 */
export function optionsFromEnv(env: Record<string, unknown>): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  for (const key of KEYS) {
    const name = `EDGEPOOL_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
    const raw = env[name];
    // Bindings (objects) are not option values, even when their names look like one.
    if (raw === undefined || (typeof raw === "object" && raw !== null)) continue;
    const number = typeof raw === "string" && raw.trim() !== "" ? Number(raw) : Number.NaN;
    options[key] = STRING_KEYS.includes(key) || Number.isNaN(number) ? raw : number;
  }
  return options;
}

function stripUndefined(input: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined));
}

function invalid(tenant: string, key: string, value: unknown, rule: string): PoolError {
  return new PoolError("INVALID_OPTION", tenant, `option "${key}" = ${showValue(key, value)} ${rule}`);
}
