/**
 * Error catalogue shared by the coordinator and every client. Errors cross RPC
 * as plain values (`ErrorShape`) because RPC drops custom properties; the client
 * rebuilds the classes with `fromShape`.
 */

/** Stable codes of errors raised by the pool itself (design §4). */
export type PoolErrorCode =
  | "INVALID_OPTION"
  | "POOL_DISABLED"
  | "ACQUIRE_TIMEOUT"
  | "WAIT_QUEUE_FULL"
  | "CONNECT_FAILED"
  | "LEASE_EXPIRED"
  | "LEASE_RELEASED"
  | "LEASE_LOST"
  | "POOL_CLOSED"
  | "UNAUTHORIZED"
  | "UNKNOWN_TENANT"
  | "RESULT_TOO_LARGE"
  | "QUERY_TIMEOUT"
  | "BAD_REQUEST"
  | "INTERNAL";

/** Every code once, so a code read from the wire can be checked (a missing one fails to compile). */
const CODES: Record<PoolErrorCode, true> = {
  INVALID_OPTION: true, POOL_DISABLED: true, ACQUIRE_TIMEOUT: true, WAIT_QUEUE_FULL: true, CONNECT_FAILED: true,
  LEASE_EXPIRED: true, LEASE_RELEASED: true, LEASE_LOST: true, POOL_CLOSED: true, UNAUTHORIZED: true,
  UNKNOWN_TENANT: true, RESULT_TOO_LARGE: true, QUERY_TIMEOUT: true, BAD_REQUEST: true, INTERNAL: true,
};

/** Whether `code` is one of the pool's error codes. */
export function isPoolErrorCode(code: unknown): code is PoolErrorCode {
  return typeof code === "string" && Object.hasOwn(CODES, code);
}

/** Codes a caller may retry as they are (the pool or coordinator recovers by itself). */
const RETRYABLE: ReadonlySet<PoolErrorCode> = new Set(["ACQUIRE_TIMEOUT", "WAIT_QUEUE_FULL", "CONNECT_FAILED", "LEASE_LOST"]);

/** An error raised by the pool; `message` starts with `code`. */
export class PoolError extends Error {
  override readonly name = "PoolError";
  readonly code: PoolErrorCode;
  readonly tenant: string;
  readonly retryable: boolean;

  /** `retryable` false where the code would say true: a statement that may have run (its call broke after it was sent). */
  constructor(code: PoolErrorCode, tenant: string, detail: string, retryable = RETRYABLE.has(code)) {
    super(`${code}: ${detail}`);
    this.code = code;
    this.tenant = tenant;
    this.retryable = retryable;
  }
}

/** Fields Postgres sends with an ErrorResponse, kept as postgres.js names them. */
export interface PostgresErrorFields {
  code: string;
  severity?: string;
  detail?: string;
  hint?: string;
  position?: string;
  schema_name?: string;
  table_name?: string;
  column_name?: string;
  constraint_name?: string;
  where?: string;
  routine?: string;
}

const POSTGRES_FIELDS = [
  "severity", "detail", "hint", "position", "schema_name", "table_name",
  "column_name", "constraint_name", "where", "routine",
] as const;

/** An error the database returned; `code` is the SQLSTATE. */
export class DatabaseError extends Error implements PostgresErrorFields {
  override readonly name = "DatabaseError";
  readonly code: string;
  severity?: string;
  detail?: string;
  hint?: string;
  position?: string;
  schema_name?: string;
  table_name?: string;
  column_name?: string;
  constraint_name?: string;
  where?: string;
  routine?: string;

  constructor(message: string, fields: PostgresErrorFields) {
    super(message);
    this.code = fields.code;
    for (const key of POSTGRES_FIELDS) if (fields[key] !== undefined) this[key] = fields[key];
  }
}

/** An error as it travels over RPC. */
export type ErrorShape =
  | { kind: "pool"; code: PoolErrorCode; tenant: string; message: string; retryable?: boolean }
  | { kind: "database"; message: string; fields: PostgresErrorFields };

/** Turns an error into a value that survives RPC. Unknown errors become `INTERNAL`. */
export function toShape(error: unknown, tenant: string): ErrorShape {
  if (error instanceof PoolError) {
    const shape: ErrorShape = { kind: "pool", code: error.code, tenant: error.tenant, message: error.message };
    // Only where it is not the code's own (a one-shot that may have run).
    if (error.retryable !== RETRYABLE.has(error.code)) shape.retryable = error.retryable;
    return shape;
  }
  if (error instanceof DatabaseError) return { kind: "database", message: error.message, fields: pick(error) };
  const e = error as { name?: string; code?: unknown; message?: string };
  if (e?.name === "PostgresError" && typeof e.code === "string") return { kind: "database", message: e.message ?? "", fields: pick(e as PostgresErrorFields) };
  const message = e?.message ?? String(error);
  return { kind: "pool", code: "INTERNAL", tenant, message: `INTERNAL: tenant "${tenant}": ${message}` };
}

/** Rebuilds the error class from its RPC shape. */
export function fromShape(shape: ErrorShape): PoolError | DatabaseError {
  if (shape.kind === "database") return new DatabaseError(shape.message, shape.fields);
  const error = new PoolError(shape.code, shape.tenant, "", shape.retryable);
  error.message = shape.message;
  return error;
}

/** A one-shot's call to its coordinator broke after it was sent (the object was reset or evicted): the query may or may not have run. */
export function oneShotLost(tenant: string, cause: string): PoolError {
  return new PoolError("LEASE_LOST", tenant, `tenant "${tenant}": the coordinator call broke (${cause}); the query may have run — retry it only if it is safe to repeat`, false);
}

function pick(source: PostgresErrorFields): PostgresErrorFields {
  const fields: PostgresErrorFields = { code: source.code };
  for (const key of POSTGRES_FIELDS) if (typeof source[key] === "string") fields[key] = source[key];
  return fields;
}
