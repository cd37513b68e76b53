import postgres from "postgres";
import type { Driver } from "./pool/pool.ts";
import type { PoolOptions } from "./pool/options.ts";

/** One physical connection: a postgres.js instance limited to a single socket. */
export interface PgHandle {
  readonly sql: postgres.Sql;
  /** The server's backend pid, read when the connection opened. */
  pid: number;
  /**
   * Whether statements may be prepared on it: false once something ran
   * that may have dropped prepared statements behind postgres.js's back (its
   * cache would name statements the server no longer has).
   */
  canPrepare: boolean;
}

/** Statements that drop prepared statements: after them postgres.js's statement cache cannot be trusted. */
const DROPS_STATEMENTS = /\b(discard\s+all|deallocate)\b/i;

/** Marks a connection on which `text` is about to run: no more prepared statements on it if `text` may drop them. */
export function noteStatement(handle: PgHandle, text: string): void {
  if (handle.canPrepare && DROPS_STATEMENTS.test(text)) handle.canPrepare = false;
}

/**
 * The default reset in one message: `ROLLBACK`, then `DISCARD ALL` as its
 * documented steps less `DEALLOCATE ALL`, ending with the names of the
 * statements the session made with `PREPARE`: the reset then deallocates
 * those, while the statements the pool prepared over the protocol survive
 * (postgres.js keeps using them).
 */
const DISCARD_ALL_KEEPING_PREPARED = [
  "rollback", "close all", "set session authorization default", "reset all", "unlisten *", "select pg_advisory_unlock_all()",
  "discard plans", "discard temp", "discard sequences", "select name from pg_prepared_statements where from_sql",
].join("; ");

const isDiscardAll = (query: string) => /^\s*discard\s+all\s*;?\s*$/i.test(query);

/** SQLSTATE classes and postgres.js codes that mean the connection itself is gone. */
const FATAL_CODES = new Set(["CONNECTION_CLOSED", "CONNECTION_ENDED", "CONNECTION_DESTROYED", "CONNECT_TIMEOUT", "57P01", "57P02", "57P03"]);

/** The pool's own statements are never prepared: they are cheap to parse and must not fill the statement cache. */
const UNNAMED = { prepare: false } as const;

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
  const keepPrepared = isDiscardAll(options.resetQuery);
  // A custom resetQuery that drops statements ends preparing on every connection it resets.
  const resetDrops = !keepPrepared && DROPS_STATEMENTS.test(options.resetQuery);
  return {
    target,
    async open(signal) {
      let handle: PgHandle | undefined;
      let opened = false;
      const sql = postgres(config.connectionString, {
        max: 1,
        idle_timeout: 0,
        max_lifetime: 0,
        // Statements are prepared only where a caller asks (those with parameters, see query.ts).
        prepare: true,
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
        const [row] = await sql.unsafe<{ pid: number }[]>("select pg_backend_pid() as pid", [], UNNAMED);
        handle = { sql, pid: row!.pid, canPrepare: true };
        opened = true;
        return handle;
      } catch (error) {
        await sql.end({ timeout: 0 }).catch(() => {});
        throw new Error(scrub(error, url.password));
      }
    },
    async validate(handle) {
      await handle.sql.unsafe("select 1", [], UNNAMED);
    },
    async reset(handle) {
      if (!keepPrepared) {
        if (resetDrops) handle.canPrepare = false;
        const rollback = handle.sql.unsafe("rollback", [], UNNAMED);
        await Promise.all([rollback, options.resetQuery ? handle.sql.unsafe(options.resetQuery, [], UNNAMED) : undefined]);
        return;
      }
      const results = await handle.sql.unsafe(DISCARD_ALL_KEEPING_PREPARED, [], UNNAMED);
      const names = (results as unknown as { name: string }[][]).at(-1)!.map((row) => `deallocate "${row.name.replaceAll('"', '""')}"`);
      if (names.length > 0) await handle.sql.unsafe(names.join("; "), [], UNNAMED);
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
