import { PoolError } from "../src/errors.ts";
import type { QueryResult } from "../src/result.ts";
import type { PgHandle } from "./driver.ts";

/** The protocol counts bind parameters in an Int16. */
export const MAX_PARAMETERS = 65_535;

/** Statements that may leave session state behind, so a one-shot connection is reset after them. */
const SESSION_CHANGING = /^\s*(begin|start|set|reset|prepare|declare|listen|lock|savepoint|discard|load|create\s+(temp|temporary|local|global)\b)|;\s*\S/i;

/** Checks a query where it enters the coordinator: text must be a string, params an array within the protocol's limit. */
export function checkQuery(tenant: string, text: unknown, params: unknown): asserts text is string {
  if (typeof text !== "string") {
    throw new PoolError("BAD_REQUEST", tenant, `query text must be a string, got ${text === null ? "null" : typeof text}`);
  }
  if (text.trim() === "") throw new PoolError("BAD_REQUEST", tenant, "query text is empty");
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

/** Runs one statement (or a parameterless multi-statement script) and returns a plain value that survives RPC. */
export async function execute(handle: PgHandle, text: string, params: unknown[] = []): Promise<QueryResult> {
  const result = (await handle.sql.unsafe(text, params as never[])) as unknown as PgResult | PgResult[];
  const last = isResultList(result) ? result[result.length - 1]! : result;
  return {
    rows: Array.from(last, plainRow),
    count: last.count ?? last.length,
    command: last.command ?? "",
    columns: (last.columns ?? []).map((c) => ({ name: c.name, type: c.type })),
  };
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
