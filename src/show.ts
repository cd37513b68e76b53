/**
 * How a value the caller gave appears in an error message: as JSON, unless it
 * may hold a secret (a connection string, a token), which is never echoed.
 */

/** What an error message says in place of a value that may hold a secret. */
export const HIDDEN = "(value hidden: may hold a secret)";

/** Option names whose values may hold a secret. */
const SECRET_KEY = /password|secret|token|connectionstring|url|dsn/i;

/** `scheme://user:password@host` or `scheme://token@host`: credentials before the host. */
const URL_WITH_CREDENTIALS = /:\/\/[^/?#\s]*@/;

/** A run of 24+ base64/base64url/JWT characters with both letters and digits, as tokens and keys are. */
const TOKEN_LIKE = /[A-Za-z0-9+/=_.-]{24,}/g;

/** libpq's `password=` (a query parameter or a key=value connection string). */
const PASSWORD_PARAMETER = /password\s*=/i;

/** Whether text looks like it holds a secret: a URL with credentials, a `password=` parameter, or a long token-like run. */
export function looksSecret(text: string): boolean {
  if (URL_WITH_CREDENTIALS.test(text) || PASSWORD_PARAMETER.test(text)) return true;
  return (text.match(TOKEN_LIKE) ?? []).some((run) => /[A-Za-z]/.test(run) && /[0-9]/.test(run));
}

/** The value of option `key` as an error message shows it: JSON, or `HIDDEN`. */
export function showValue(key: string, value: unknown): string {
  if (SECRET_KEY.test(key)) return HIDDEN;
  const shown = render(value);
  return looksSecret(shown) ? HIDDEN : shown;
}

function render(value: unknown): string {
  try {
    if (typeof value === "number") return String(value);
    return typeof value === "string" ? JSON.stringify(value) : String(JSON.stringify(value) ?? value);
  } catch {
    return String(value);
  }
}
