/**
 * libpq's `sslmode` values that edgepool honours (libpq's `allow` is not one
 * of them). In workerd `startTls` always verifies the certificate chain and
 * the host name, so `require` and `verify-ca` are as strict as `verify-full`
 * there; `prefer` still falls back to plaintext when the server has no TLS.
 */
export type SslMode = "disable" | "prefer" | "require" | "verify-ca" | "verify-full";

/** Where and as whom a server connection logs in, read from a `postgres://` URL. */
export interface ServerConfig {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  sslmode: SslMode;
}

const SSL_MODES: readonly SslMode[] = ["disable", "prefer", "require", "verify-ca", "verify-full"];

/** `ssl=` values as postgres.js and pg read them: true means TLS is required. */
const SSL_FLAG: Record<string, SslMode> = { true: "require", "1": "require", false: "disable", "0": "disable" };

/** A connection string that cannot be used; the message never contains the password. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  readonly code = "INVALID_OPTION";

  constructor(detail: string) {
    super(`INVALID_OPTION: connection string: ${detail}`);
  }
}

/**
 * Parses `postgres://user:password@host:port/database?sslmode=...` (or
 * `postgresql://`). User, password and database are percent-decoded; the
 * port defaults to 5432, the database to the user, `sslmode` to libpq's
 * `prefer`. `ssl=true` means `sslmode=require`; an explicit `sslmode` wins.
 * As in libpq, a `password` query parameter is the password too (it wins
 * over one in the authority).
 */
export function parseServerUrl(connectionString: string): ServerConfig {
  if (!/^postgres(ql)?:\/\//i.test(connectionString)) throw new ConfigError("must start with postgres:// or postgresql://");
  let url: URL;
  try {
    url = new URL(connectionString);
  } catch {
    // The URL parser's own message echoes the input, password included.
    throw new ConfigError("is not a valid URL");
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  if (!host) throw new ConfigError("has no host");
  const port = url.port ? Number(url.port) : 5432;
  const user = decode(url.username, "user name");
  if (!user) throw new ConfigError("has no user name");
  const password = url.searchParams.get("password") ?? decode(url.password, "password");
  const database = decode(url.pathname.replace(/^\//, ""), "database name") || user;
  return { host, port, user, password, database, sslmode: sslMode(url.searchParams) };
}

function sslMode(params: URLSearchParams): SslMode {
  const mode = params.get("sslmode");
  if (mode !== null) {
    if ((SSL_MODES as readonly string[]).includes(mode)) return mode as SslMode;
    throw new ConfigError(`sslmode "${mode.slice(0, 32)}" is not one of ${SSL_MODES.join(", ")}`);
  }
  const ssl = params.get("ssl");
  if (ssl === null) return "prefer";
  const flagged = SSL_FLAG[ssl.toLowerCase()];
  if (flagged) return flagged;
  throw new ConfigError(`ssl "${ssl.slice(0, 32)}" is not one of true, false, 1, 0`);
}

function decode(part: string, what: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new ConfigError(`the ${what} is not valid percent-encoding`);
  }
}

/** `host:port` for messages (IPv6 in brackets). Never the password. */
export function target(config: Pick<ServerConfig, "host" | "port">): string {
  return `${config.host.includes(":") ? `[${config.host}]` : config.host}:${config.port}`;
}
