import { PoolError } from "../../src/errors.ts";
import { showValue } from "../../src/show.ts";

/** A budget's settings (`PUT /v1/budgets/:name`). */
export interface BudgetConfig {
  /** Server connections all tenants in the budget may hold together. */
  maxConnections: number;
  /** A grant not renewed for this long returns to the budget: the bound for a coordinator that vanished. */
  leaseTtlMs: number;
}

/** Default lease TTL: a vanished coordinator's capacity is back within 30 s. */
export const DEFAULT_LEASE_TTL_MS = 30_000;
const LEASE_TTL_RANGE = [1_000, 300_000] as const;
const NAME = /^[a-z0-9](?:[a-z0-9_-]{0,62})$/i;
const KEYS = ["maxConnections", "leaseTtlMs"];

/** Checks a budget name where it enters: 1–63 letters, digits, `_` or `-`, starting with a letter or digit. */
export function isBudgetName(name: unknown): name is string {
  return typeof name === "string" && NAME.test(name);
}

/** Checks a budget name or throws `BAD_REQUEST`. */
export function checkBudgetName(name: unknown): string {
  if (!isBudgetName(name)) {
    throw new PoolError("BAD_REQUEST", "", `budget name ${showValue("budget", typeof name === "string" ? name.slice(0, 80) : name)} must be 1-63 letters, digits, "_" or "-", starting with a letter or digit`);
  }
  return name;
}

/** Validates a budget's settings: unknown keys and bad values are `INVALID_OPTION` naming the key. */
export function resolveBudget(input: unknown): BudgetConfig {
  if (typeof input !== "object" || input === null || Array.isArray(input)) throw invalid("options", input, "must be an object");
  const record = input as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (!KEYS.includes(key)) throw invalid(key, record[key], `is not a budget option (known: ${KEYS.join(", ")})`);
  }
  const { maxConnections, leaseTtlMs = DEFAULT_LEASE_TTL_MS } = record;
  if (typeof maxConnections !== "number" || !Number.isSafeInteger(maxConnections) || maxConnections < 0) {
    throw invalid("maxConnections", maxConnections, "must be an integer >= 0");
  }
  if (typeof leaseTtlMs !== "number" || !Number.isSafeInteger(leaseTtlMs) || leaseTtlMs < LEASE_TTL_RANGE[0] || leaseTtlMs > LEASE_TTL_RANGE[1]) {
    throw invalid("leaseTtlMs", leaseTtlMs, `must be an integer from ${LEASE_TTL_RANGE[0]} to ${LEASE_TTL_RANGE[1]}`);
  }
  return { maxConnections, leaseTtlMs };
}

function invalid(key: string, value: unknown, rule: string): PoolError {
  return new PoolError("INVALID_OPTION", "", `option "${key}" = ${showValue(key, value)} ${rule}`);
}
