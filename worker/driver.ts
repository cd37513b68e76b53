import postgres from "postgres";
import type { Driver } from "./pool/pool.ts";
import type { PoolOptions } from "./pool/options.ts";

/** One physical connection: a postgres.js instance limited to a single socket. */
export interface PgHandle {
  readonly sql: postgres.Sql;
  /** The server's backend pid, read when the connection opened. */
  pid: number;
}

/** SQLSTATE classes and postgres.js codes that mean the connection itself is gone. */
const FATAL_CODES = new Set(["CONNECTION_CLOSED", "CONNECTION_ENDED", "CONNECTION_DESTROYED", "CONNECT_TIMEOUT", "57P01", "57P02", "57P03"]);

/** Where the driver connects and how it tags its sessions. */
export interface PgDriverConfig {
  connectionString: string;
  tenant: string;
  options: PoolOptions;
  /** Called when a socket closes by itself (server restart, `pg_terminate_backend`). */
  onBroken: (handle: PgHandle) => void;
}

/** The `application_name` every pool connection of a tenant carries (visible in pg_stat_activity). */
export function applicationName(tenant: string): string {
  return `edgepool:${tenant}`.slice(0, 63);
}

/**
 * The postgres.js driver: one `postgres()` instance per physical connection,
 * `max: 1`, the driver's own idle and lifetime timers off (only the janitor reaps).
 */
export function pgDriver(config: PgDriverConfig): Driver<PgHandle> {
  const { options } = config;
  const url = new URL(config.connectionString);
  const target = `${url.hostname}:${url.port || "5432"}`;
  return {
    target,
    async open(signal) {
      let handle: PgHandle | undefined;
      let opened = false;
      const sql = postgres(config.connectionString, {
        max: 1,
        idle_timeout: 0,
        max_lifetime: 0,
        prepare: false,
        connect_timeout: Math.ceil(options.connectTimeoutMs / 1000),
        onnotice: () => {},
        onclose: () => {
          if (opened && handle) config.onBroken(handle);
        },
        connection: {
          application_name: applicationName(config.tenant),
          // Safety net: a transaction left open by a coordinator that vanished is ended by the server.
          idle_in_transaction_session_timeout: options.leaseTimeoutMs * 2,
        },
      });
      // The pool gave up on this attempt: drop the socket now rather than at the driver's own timeout.
      signal.addEventListener("abort", () => void sql.end({ timeout: 0 }).catch(() => {}), { once: true });
      try {
        const [row] = await sql<{ pid: number }[]>`select pg_backend_pid() as pid`;
        handle = { sql, pid: row!.pid };
        opened = true;
        return handle;
      } catch (error) {
        await sql.end({ timeout: 0 }).catch(() => {});
        throw new Error(scrub(error, url.password));
      }
    },
    async validate(handle) {
      await handle.sql`select 1`;
    },
    async reset(handle) {
      const steps = [handle.sql.unsafe("rollback")];
      if (options.resetQuery) steps.push(handle.sql.unsafe(options.resetQuery));
      await Promise.all(steps);
    },
    async close(handle) {
      await handle.sql.end({ timeout: 0 });
    },
    isFatal(error) {
      const { code, name } = (error ?? {}) as { code?: unknown; name?: unknown };
      if (typeof code === "string") return FATAL_CODES.has(code) || code.startsWith("08");
      // No code at all: not the server answering but the socket failing under the driver.
      return name !== "PostgresError";
    },
  };
}

/** A connect error's message without the password, whatever the library put in it. */
function scrub(error: unknown, password: string): string {
  const message = error instanceof Error ? error.message : String(error);
  return password ? message.split(decodeURIComponent(password)).join("***").split(password).join("***") : message;
}
