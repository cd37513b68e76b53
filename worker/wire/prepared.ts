import type { Backend } from "./backend.ts";
import { parse } from "./messages.ts";
import type { WireStats } from "./stats.ts";

/**
 * One distinct statement (query text and parameter types) under the one
 * server-side name the coordinator gives it, as PgBouncer's `prepare.c`.
 */
export interface Statement {
  readonly key: string;
  /** `edgepool_<n>`: unique per coordinator, so any server connection may hold it under this name. */
  readonly serverName: string;
  /** `serverName` as UTF-8, for the Binds rewritten to it. */
  readonly serverNameBytes: Uint8Array;
  readonly query: string;
  readonly types: readonly number[];
  /** The Parse that prepares it under `serverName` (built once, sent as is). */
  readonly parse: Uint8Array;
}

const encoder = new TextEncoder();

/** Distinct statements the registry remembers beyond those sessions hold (a statement is rebuilt, under a new name, once forgotten). */
const REMEMBERED_STATEMENTS = 10_000;

/**
 * The coordinator's prepared-statement registry for transaction mode
 * (PgBouncer ≥ 1.21's model): per client session, client name → statement;
 * per server connection, the server-side names it holds, LRU-bounded by
 * `maxPreparedStatements` and void once its `statementEpoch` moved.
 * `maxPreparedStatements: 0` turns tracking off: named statements pass through.
 */
export class PreparedStatements {
  /** Whether named statements are tracked at all. */
  readonly enabled: boolean;
  private readonly byKey = new Map<string, Statement>();
  private readonly servers = new WeakMap<Backend, ServerStatements>();
  /** Where the next name's number comes from: shared with a `successor`. */
  private readonly ids: { next: number };

  constructor(
    readonly maxPreparedStatements: number,
    readonly stats: WireStats,
    ids = { next: 1 },
  ) {
    this.enabled = maxPreparedStatements > 0;
    this.ids = ids;
  }

  /**
   * The registry for a new `maxPreparedStatements`, numbering its names from
   * the same sequence: sessions begun before the change keep this registry,
   * and a server connection may serve both, so one name must never mean two
   * statements there (42P05).
   */
  successor(maxPreparedStatements: number): PreparedStatements {
    return new PreparedStatements(maxPreparedStatements, this.stats, this.ids);
  }

  /** The statement for this text and these types; one per distinct pair while remembered. */
  statement(query: string, types: readonly number[]): Statement {
    const key = `${types.join(",")}\u0000${query}`;
    let statement = this.byKey.get(key);
    if (statement) {
      // Most recently used last: the oldest is forgotten first.
      this.byKey.delete(key);
    } else {
      const serverName = `edgepool_${this.ids.next++}`;
      statement = { key, serverName, serverNameBytes: encoder.encode(serverName), query, types: [...types], parse: parse(serverName, query, types) };
      if (this.byKey.size >= REMEMBERED_STATEMENTS) this.byKey.delete(this.byKey.keys().next().value!);
    }
    this.byKey.set(key, statement);
    return statement;
  }

  /** The statements a server connection holds (a fresh, empty set after its epoch moved). */
  server(backend: Backend): ServerStatements {
    let server = this.servers.get(backend);
    if (!server || server.epoch !== backend.statementEpoch) {
      server = new ServerStatements(backend.statementEpoch, this.maxPreparedStatements);
      this.servers.set(backend, server);
    }
    return server;
  }
}

/** One client session's named statements: client name → statement. */
export class SessionStatements {
  private readonly byName = new Map<string, Statement>();
  private readonly max: number;

  /** `max`: names kept, least recently prepared forgotten first (a driver's session keeps all it made: it may Bind any of them later). */
  constructor(max = Infinity) {
    this.max = max;
  }

  get(name: string): Statement | undefined {
    return this.byName.get(name);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  set(name: string, statement: Statement): void {
    this.byName.delete(name);
    this.byName.set(name, statement);
    if (this.byName.size > this.max) this.byName.delete(this.byName.keys().next().value!);
  }

  /** Forgets one name (Close, DEALLOCATE); whether it was known. */
  delete(name: string): boolean {
    return this.byName.delete(name);
  }

  /** Forgets every name (DISCARD ALL, DEALLOCATE ALL). */
  clear(): void {
    this.byName.clear();
  }

  get size(): number {
    return this.byName.size;
  }
}

/** Server-side names one server connection holds, least recently used first. */
export class ServerStatements {
  private readonly byName = new Map<string, Statement>();

  constructor(
    /** The backend's `statementEpoch` this set belongs to. */
    readonly epoch: number,
    private readonly capacity: number,
  ) {}

  /** Whether the server holds it; marks it used. */
  use(statement: Statement): boolean {
    if (!this.byName.has(statement.serverName)) return false;
    this.byName.delete(statement.serverName);
    this.byName.set(statement.serverName, statement);
    return true;
  }

  /** Records a statement being prepared; returns those to close to stay within capacity, oldest first. */
  add(statement: Statement): Statement[] {
    this.byName.set(statement.serverName, statement);
    const evicted: Statement[] = [];
    for (const [name, oldest] of this.byName) {
      if (this.byName.size <= this.capacity) break;
      this.byName.delete(name);
      evicted.push(oldest);
    }
    return evicted;
  }

  /** A Parse did not happen after all (an earlier error made the server skip it, or it failed). */
  delete(statement: Statement): void {
    this.byName.delete(statement.serverName);
  }

  /** The server dropped them all (DISCARD ALL, DEALLOCATE ALL). */
  clear(): void {
    this.byName.clear();
  }

  get size(): number {
    return this.byName.size;
  }

  /** Server-side names held, least recently used first. */
  names(): string[] {
    return [...this.byName.keys()];
  }
}
