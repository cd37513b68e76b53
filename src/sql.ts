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
