import { PoolError } from "../src/errors.ts";
import type { QueryResult } from "../src/result.ts";
import { noteStatement, type PgHandle } from "./driver.ts";

/** The protocol counts bind parameters in an Int16. */
export const MAX_PARAMETERS = 65_535;

/** Query text beyond this is refused: RPC carries 32 MiB at most, and no sane statement is this long. */
export const MAX_QUERY_TEXT = 16 * 1024 * 1024;

/** Statements that may leave session state behind, so a one-shot connection is reset after them. */
const SESSION_CHANGING = /^\s*(begin|start|set|reset|prepare|deallocate|declare|listen|lock|savepoint|discard|load|create\s+(temp|temporary|local|global)\b)|;\s*\S/i;

/** Statements the pool cannot carry: streams to or from the client, and notifications. */
const UNSUPPORTED = /^\s*(copy\b[\s\S]*\b(stdin|stdout)\b|listen\b|unlisten\b)/i;

/** Checks a query where it enters the coordinator: text must be a string, params an array within the protocol's limit. */
export function checkQuery(tenant: string, text: unknown, params: unknown): asserts text is string {
  if (typeof text !== "string") {
    throw new PoolError("BAD_REQUEST", tenant, `query text must be a string, got ${text === null ? "null" : typeof text}`);
  }
  if (text.trim() === "") throw new PoolError("BAD_REQUEST", tenant, "query text is empty");
  if (text.length > MAX_QUERY_TEXT) {
    throw new PoolError("BAD_REQUEST", tenant, `query text of ${text.length} characters exceeds ${MAX_QUERY_TEXT}; pass large values as parameters`);
  }
  if (UNSUPPORTED.test(text)) {
    throw new PoolError("BAD_REQUEST", tenant, `${text.trim().split(/\s+/)[0]!.toUpperCase()} is not supported through the pool: COPY FROM STDIN / TO STDOUT and LISTEN need a connection of your own (use INSERT ... SELECT, or a query that returns the rows)`);
  }
  if (params !== undefined && !Array.isArray(params)) {
    throw new PoolError("BAD_REQUEST", tenant, `query parameters must be an array, got ${typeof params}`);
  }
  if (Array.isArray(params) && params.length > MAX_PARAMETERS) {
    throw new PoolError("BAD_REQUEST", tenant, `${params.length} parameters exceed the protocol's limit of ${MAX_PARAMETERS}`);
  }
}

/** Whether a one-shot query may have changed session state, so its connection must be reset before reuse. */
export function changesSession(text: string): boolean {
  return SESSION_CHANGING.test(text);
}

/** What bounds one query: the server-side timeout and the result size. */
export interface QueryLimits {
  tenant: string;
  /** Cancelled on the server after this; `0`: no limit. */
  queryTimeoutMs: number;
  maxResultBytes: number;
}

/**
 * Runs one statement (or a parameterless multi-statement script) and returns a
 * plain value that survives RPC. A query past `queryTimeoutMs` is cancelled on
 * the server (`QUERY_TIMEOUT`); a result above `maxResultBytes` is refused
 * (`RESULT_TOO_LARGE`). Either way the connection stays usable.
 *
 * A statement with parameters is prepared once per connection and only bound
 * afterwards: one round trip instead of two (postgres.js asks the server for
 * the parameter types of an unnamed statement first), no parse on the server,
 * and it can be pipelined. The pool's reset keeps these statements (see
 * driver.ts); a connection on which something may have dropped them
 * (`DEALLOCATE`, `DISCARD ALL`) prepares no more, since postgres.js's cache
 * would name statements the server no longer has.
 */
export async function execute(handle: PgHandle, text: string, params: unknown[] = [], limits: QueryLimits): Promise<QueryResult> {
  noteStatement(handle, text);
  const query = handle.sql.unsafe(text, params as never[], { prepare: handle.canPrepare && params.length > 0 });
  const started = Date.now();
  let timedOut = false;
  const timer = limits.queryTimeoutMs > 0 ? setTimeout(() => {
    timedOut = true;
    void query.cancel();
  }, limits.queryTimeoutMs) : undefined;
  let result: PgResult | PgResult[];
  try {
    result = (await query) as unknown as PgResult | PgResult[];
  } catch (error) {
    // 57014 after our deadline is our cancel, even if its answer overtook the timer's bookkeeping.
    const ours = timedOut || (limits.queryTimeoutMs > 0 && Date.now() - started >= limits.queryTimeoutMs);
    if (ours && (error as { code?: string }).code === "57014") {
      throw new PoolError("QUERY_TIMEOUT", limits.tenant, `tenant "${limits.tenant}" query was cancelled on the server after ${limits.queryTimeoutMs}ms (queryTimeoutMs)`);
    }
    throw error;
  } finally {
    clearTimeout(timer);
  }
  const last = isResultList(result) ? result[result.length - 1]! : result;
  const bytes = approximateBytes(last, limits.maxResultBytes);
  if (bytes > limits.maxResultBytes) {
    throw new PoolError("RESULT_TOO_LARGE", limits.tenant, `tenant "${limits.tenant}" result of ${last.length} rows exceeds maxResultBytes (${limits.maxResultBytes} bytes, counted ${bytes} before stopping); select fewer rows or columns, or page with LIMIT`);
  }
  return {
    rows: Array.from(last, plainRow),
    count: last.count ?? last.length,
    command: last.command ?? "",
    columns: (last.columns ?? []).map((c) => ({ name: c.name, type: c.type })),
  };
}

/** About how many bytes the rows take on the wire; stops counting once past `limit`. */
function approximateBytes(rows: PgResult, limit: number): number {
  let bytes = 0;
  for (const row of rows) {
    for (const key in row) {
      const value = row[key];
      bytes += key.length + 4;
      if (typeof value === "string") bytes += value.length;
      else if (value instanceof Uint8Array) bytes += value.byteLength;
      else if (value !== null && typeof value === "object") bytes += JSON.stringify(value)?.length ?? 0;
      else bytes += 8;
    }
    if (bytes > limit) return bytes;
  }
  return bytes;
}

interface PgResult extends Array<Record<string, unknown>> {
  count: number | null;
  command: string | null;
  columns: { name: string; type: number }[] | null;
}

function isResultList(result: PgResult | PgResult[]): result is PgResult[] {
  return result.length > 0 && Array.isArray(result[0]) && "command" in (result[0] as object);
}

/** postgres.js returns node Buffers for bytea; RPC carries plain Uint8Arrays. */
function plainRow(row: Record<string, unknown>): Record<string, unknown> {
  for (const key in row) {
    const value = row[key];
    if (value instanceof Uint8Array && value.constructor !== Uint8Array) row[key] = new Uint8Array(value);
  }
  return row;
}
