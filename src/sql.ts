import { PoolError } from "./errors.ts";

/** A statement and its bound parameters. */
export interface Statement {
  text: string;
  params: unknown[];
}

/**
 * Builds a statement from a tagged template: every `${value}` becomes a bound
 * parameter (`$1`, `$2`, ...), never text, so values cannot inject SQL.
 */
export function statement(tenant: string, strings: TemplateStringsArray, values: unknown[]): Statement {
  if (!Array.isArray(strings) || !Array.isArray((strings as { raw?: unknown }).raw)) {
    throw new PoolError("BAD_REQUEST", tenant, "sql must be used as a tagged template (sql`select ...`); for text and parameters use query(text, params)");
  }
  let text = strings[0]!;
  for (let i = 0; i < values.length; i++) text += `$${i + 1}${strings[i + 1]}`;
  return { text, params: values };
}

/** Values that cannot travel as parameters are refused before the call, naming the parameter. */
export function checkParams(tenant: string, params: unknown): void {
  if (!Array.isArray(params)) return;
  params.forEach((value, i) => {
    if (typeof value === "function" || typeof value === "symbol") {
      throw new PoolError("BAD_REQUEST", tenant, `parameter $${i + 1} is a ${typeof value}, which cannot be sent to the database`);
    }
  });
}

/** The protocol counts bind parameters in an Int16. */
export const MAX_PARAMETERS = 65_535;

/** Query text beyond this is refused: RPC carries 32 MiB at most, and no sane statement is this long. */
export const MAX_QUERY_TEXT = 16 * 1024 * 1024;

/** What a one-shot or a lease cannot carry: streams to or from the client, and notifications (a driver in session mode can). */
const UNSUPPORTED = /^\s*(copy\b[\s\S]*\b(stdin|stdout)\b|listen\b|unlisten\b)/i;

/** Checks a query where it enters the client: text a non-empty string within bounds, parameters an array within the protocol's limit. */
export function checkQuery(tenant: string, text: unknown, params: unknown): asserts text is string {
  if (typeof text !== "string") {
    throw new PoolError("BAD_REQUEST", tenant, `query text must be a string, got ${text === null ? "null" : typeof text}`);
  }
  if (text.trim() === "") throw new PoolError("BAD_REQUEST", tenant, "query text is empty");
  if (text.length > MAX_QUERY_TEXT) {
    throw new PoolError("BAD_REQUEST", tenant, `query text of ${text.length} characters exceeds ${MAX_QUERY_TEXT}; pass large values as parameters`);
  }
  if (UNSUPPORTED.test(text)) {
    throw new PoolError("BAD_REQUEST", tenant, `${text.trim().split(/\s+/)[0]!.toUpperCase()} is not supported by the built-in client: COPY FROM STDIN / TO STDOUT and LISTEN need a driver session (postgres.js or pg with postgresOptions()/pgOptions(), mode "session" for LISTEN)`);
  }
  if (params !== undefined && !Array.isArray(params)) {
    throw new PoolError("BAD_REQUEST", tenant, `query parameters must be an array, got ${typeof params}`);
  }
  if (Array.isArray(params) && params.length > MAX_PARAMETERS) {
    throw new PoolError("BAD_REQUEST", tenant, `${params.length} parameters exceed the protocol's limit of ${MAX_PARAMETERS}`);
  }
  checkParams(tenant, params);
}
