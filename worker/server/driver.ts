import type { PoolOptions } from "../pool/options.ts";
import type { Driver } from "../pool/pool.ts";
import { parseServerUrl, target } from "./config.ts";
import { ServerConnection } from "./connection.ts";
import { ServerError } from "./messages.ts";
import type { Connector } from "./socket.ts";

/** Where the driver connects and how it tags its sessions. */
export interface ServerDriverConfig {
  connectionString: string;
  tenant: string;
  /** Which of the tenant's shards this pool is (0 unless `shards` > 1). */
  shard?: number;
  options: PoolOptions;
  /** Called when a connection closes by itself (server restart, `pg_terminate_backend`). */
  onBroken: (connection: ServerConnection) => void;
}

/** Statements that drop prepared statements: a reset running them voids every statement cache of the connection. */
const DROPS_STATEMENTS = /\b(discard\s+all|deallocate)\b/i;

/**
 * The default reset in one message: `ROLLBACK`, then `DISCARD ALL` as its
 * documented steps less `DEALLOCATE ALL`, ending with the names of the
 * statements the session made with SQL `PREPARE`: those are deallocated
 * next, while the statements prepared over the protocol survive.
 */
const DISCARD_ALL_KEEPING_PREPARED = [
  "rollback", "close all", "set session authorization default", "reset all", "unlisten *", "select pg_advisory_unlock_all()",
  "discard plans", "discard temp", "discard sequences", "select name from pg_prepared_statements where from_sql",
].join("; ");

const isDiscardAll = (query: string) => /^\s*discard\s+all\s*;?\s*$/i.test(query);

/** SQLSTATEs that mean the server ended the session (admin shutdown, crash shutdown, cannot connect now). */
const FATAL_CODES = new Set(["57P01", "57P02", "57P03"]);

/** The `application_name` every pool connection of a tenant carries (visible in pg_stat_activity): `edgepool:<tenant>`, and `edgepool:<tenant>#<i>` on shard i > 0. */
export function applicationName(tenant: string, shard = 0): string {
  return `edgepool:${tenant}${shard > 0 ? `#${shard}` : ""}`.slice(0, 63);
}

/**
 * The pool core's driver over raw server connections: one `ServerConnection`
 * per physical connection, opened through `connector` (`cloudflare:sockets`'
 * `connect` in the Durable Object, a node:net adapter in tests).
 */
export function serverDriver(config: ServerDriverConfig, connector: Connector): Driver<ServerConnection> {
  const { options } = config;
  const server = parseServerUrl(config.connectionString);
  const keepPrepared = isDiscardAll(options.resetQuery);
  const resetDrops = !keepPrepared && DROPS_STATEMENTS.test(options.resetQuery);
  const parameters = {
    application_name: applicationName(config.tenant, config.shard),
    // Safety net: a transaction left open by a coordinator that vanished is ended by the server.
    idle_in_transaction_session_timeout: String(options.leaseTimeoutMs * 2),
  };
  return {
    target: target(server),
    async open(signal) {
      let connection: ServerConnection | undefined;
      try {
        connection = await ServerConnection.open(connector, server, {
          parameters,
          signal,
          onClose: () => config.onBroken(connection!),
        });
        return connection;
      } catch (error) {
        // The SQLSTATE (28P01, ...) stays; the message loses the password whatever produced it.
        throw Object.assign(new Error(scrub(error, server.password)), { code: (error as { code?: unknown }).code });
      }
    },
    async validate(connection) {
      await connection.query("select 1");
    },
    async reset(connection) {
      if (!keepPrepared) {
        // Two messages, pipelined: a multi-statement Query would run DISCARD ALL inside an implicit transaction, which it refuses.
        const rollback = connection.query("rollback");
        const reset = options.resetQuery ? connection.query(options.resetQuery) : undefined;
        if (resetDrops) connection.statementEpoch++;
        await Promise.all([rollback, reset]);
        return;
      }
      const results = await connection.query(DISCARD_ALL_KEEPING_PREPARED);
      const names = results.at(-1)!.rows.map(([name]) => `deallocate "${name!.replaceAll('"', '""')}"`);
      if (names.length > 0) await connection.query(names.join("; "));
    },
    async close(connection) {
      await connection.close();
    },
    isFatal(error) {
      // No SQLSTATE: not the server answering but the socket failing under the connection.
      if (!(error instanceof ServerError)) return true;
      return FATAL_CODES.has(error.code) || error.code.startsWith("08") || error.severity === "FATAL" || error.severity === "PANIC";
    },
  };
}

/** A connect error's message without the password, whatever produced it. */
function scrub(error: unknown, password: string): string {
  const message = error instanceof Error ? error.message : String(error);
  return password ? message.split(password).join("***") : message;
}
