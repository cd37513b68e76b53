import { PoolError, type PoolErrorCode } from "../../src/errors.ts";
import { errorResponse } from "./messages.ts";

/** How a pool error reaches a wire client: its SQLSTATE and whether the session ends (FATAL). */
export interface WireError {
  sqlstate: string;
  fatal: boolean;
}

/**
 * Design §4's table. Where it is silent: `CONNECT_FAILED` and `QUERY_TIMEOUT`
 * are ERROR (the next batch may get a connection / run faster); `INTERNAL`
 * is FATAL (the session's state is unknown); `RESULT_TOO_LARGE` (53400,
 * configuration_limit_exceeded) is ERROR; `INVALID_OPTION` (22023) is FATAL
 * (startup options are fixed for the session); `LEASE_RELEASED` is 08006
 * FATAL like the other lost-connection codes.
 */
export const WIRE_ERRORS: Readonly<Record<PoolErrorCode, WireError>> = {
  ACQUIRE_TIMEOUT: { sqlstate: "53300", fatal: false },
  WAIT_QUEUE_FULL: { sqlstate: "53300", fatal: false },
  QUERY_TIMEOUT: { sqlstate: "57014", fatal: false },
  CONNECT_FAILED: { sqlstate: "08001", fatal: false },
  LEASE_EXPIRED: { sqlstate: "08006", fatal: true },
  LEASE_LOST: { sqlstate: "08006", fatal: true },
  LEASE_RELEASED: { sqlstate: "08006", fatal: true },
  POOL_DISABLED: { sqlstate: "08004", fatal: true },
  POOL_CLOSED: { sqlstate: "08004", fatal: true },
  UNKNOWN_TENANT: { sqlstate: "08004", fatal: true },
  UNAUTHORIZED: { sqlstate: "28000", fatal: true },
  BAD_REQUEST: { sqlstate: "08P01", fatal: true },
  INVALID_OPTION: { sqlstate: "22023", fatal: true },
  RESULT_TOO_LARGE: { sqlstate: "53400", fatal: false },
  INTERNAL: { sqlstate: "XX000", fatal: true },
};

/** Any error as a `PoolError` (unknown ones become `INTERNAL`, as `toShape` does). */
export function asPoolError(error: unknown, tenant: string): PoolError {
  if (error instanceof PoolError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new PoolError("INTERNAL", tenant, `tenant "${tenant}": ${message}`);
}

/** A pool error as the ErrorResponse a driver gets, and whether the session must close after it; `override` for the few cases the table does not fit (LISTEN refused: 0A000, ERROR). */
export function toErrorResponse(error: PoolError, override: Partial<WireError> = {}): { bytes: Uint8Array; fatal: boolean } {
  const wire = { ...WIRE_ERRORS[error.code], ...override };
  const bytes = errorResponse({ severity: wire.fatal ? "FATAL" : "ERROR", code: wire.sqlstate, message: error.message });
  return { bytes, fatal: wire.fatal };
}
