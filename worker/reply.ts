import { PoolError, toShape } from "../src/errors.ts";
import { showValue } from "../src/show.ts";
import type { CallOptions, Reply } from "../src/protocol.ts";

/** A per-call time option, checked where it enters. */
export function callOption(tenant: string, options: CallOptions | undefined, key: keyof CallOptions): number | undefined {
  const value = options?.[key];
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new PoolError("INVALID_OPTION", tenant, `option "${key}" = ${showValue(key, value)} must be an integer >= 0`);
  }
  return value;
}

/** Runs `fn` and answers with its value or its error as a value (RPC drops custom error properties); logs only `INTERNAL`. */
export async function reply<T>(tenant: string, fn: () => Promise<T>): Promise<Reply<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (error) {
    const shape = toShape(error, tenant);
    if (shape.kind === "pool" && shape.code === "INTERNAL") console.error(shape.message);
    return { ok: false, error: shape };
  }
}
