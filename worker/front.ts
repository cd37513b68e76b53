import { PoolError } from "../src/errors.ts";
import type { WireMode } from "../src/protocol.ts";
import { REROUTE } from "../src/shards.ts";
import type { Capacity } from "./pool/capacity.ts";
import type { Clock } from "./pool/clock.ts";
import type { Lease } from "./pool/connection.ts";
import { logLine, type HostEvent, type LogLine, type PoolEvent } from "./pool/events.ts";
import type { PoolOptions } from "./pool/options.ts";
import { Pool, type PoolStats } from "./pool/pool.ts";
import { serverDriver } from "./server/driver.ts";
import type { ServerConnection } from "./server/connection.ts";
import type { Connector } from "./server/socket.ts";
import type { TenantConfig } from "./tenant.ts";
import { tunnel, tunnelTo, type TunnelEnds } from "./tunnel.ts";
import { BatchRunner } from "./wire/batch.ts";
import { CancelKeys } from "./wire/cancel.ts";
import { parseFields } from "./wire/messages.ts";
import { PreparedStatements } from "./wire/prepared.ts";
import { WireSession, type SessionPool, type WireSessionDeps } from "./wire/session.ts";
import { WireStats } from "./wire/stats.ts";
import { threadSizing, ThreadMeter, type ThreadLoad } from "./thread-meter.ts";

/** A tenant's pool counters with its client sessions' (design §6). */
export interface FrontStats extends PoolStats {
  clients: number;
  clientsActive: number;
  clientsWaiting: number;
  prepared: { hits: number; parses: number; reprepares: number; evictions: number };
  /** How hard this coordinator's thread worked (the sizing verdict's `coordinator-bound`). */
  coordinator: ThreadLoad;
}

/** Per-call options of the built-in client. */
export interface RunOptions {
  acquireTimeoutMs?: number;
  queryTimeoutMs?: number;
}

/** What the front door needs from its host (the Durable Object). */
export interface FrontDeps {
  tenant: string;
  /** Which of the tenant's shards this front door serves (0 unless `shards` > 1); its connections' `application_name` says so. */
  shard?: number;
  clock: Clock;
  connector: Connector;
  /** Asks the host to run `sweep()` at this time (the Durable Object's alarm). */
  schedule: (at: number | undefined) => void;
  /** Told of each pool event as a log line (the Durable Object prints it as JSON). Default: nothing. */
  log?: (line: LogLine) => void;
  /** The connection budget of a new pool with these options (a `budget` option), or none. */
  capacity?: (options: PoolOptions) => Capacity | undefined;
}

/** Pool events a front door keeps for the dashboard. */
const RECENT_EVENTS = 50;

/**
 * One tenant's front door (design §1): every client session — a driver's
 * tunnel, a built-in one-shot, a built-in lease — is a wire session over the
 * tenant's pool of raw server connections. A config change starts a new pool;
 * sessions then borrow from it, while leases of the old one go back to it.
 * Plain TypeScript: the socket connector and clock are injected.
 */
export class FrontDoor {
  readonly tenant: string;
  readonly counters = new WireStats();
  readonly cancelKeys = new CancelKeys();
  /** Calls into this coordinator and its thread's busy time. */
  readonly thread: ThreadMeter;
  private readonly called = () => this.thread.call();
  private readonly parametersFn = () => this.serverParameters();
  private readonly endedFn = () => this.drainIfRetired();
  private readonly deps: FrontDeps;
  private pool!: Pool<ServerConnection>;
  /** The current pool and the ones a config change replaced that have not drained yet, with the time each wants its janitor run. */
  private readonly pools = new Map<Pool<ServerConnection>, number | undefined>();
  private prepared!: PreparedStatements;
  private readonly owners = new WeakMap<Lease<ServerConnection>, Pool<ServerConnection>>();
  /** The server's ParameterStatus values, from the newest connection opened; answers a driver's startup. */
  private parameters: ReadonlyMap<string, string> | undefined;
  /** The pool as sessions see it: acquire from the current pool, everything else on the lease's own. */
  private readonly sessionPool: SessionPool<ServerConnection>;
  private readonly recent: LogLine[] = [];
  /** This shard was removed from its tenant's layout: it serves the sessions it has, then its pool drains. */
  private retiring = false;

  constructor(deps: FrontDeps, config: TenantConfig) {
    this.deps = deps;
    this.tenant = deps.tenant;
    this.thread = new ThreadMeter(deps.clock);
    this.sessionPool = {
      acquire: (options) => this.acquire(options.timeoutMs, options.shared),
      release: (lease, options) => this.owner(lease).release(lease, options),
      touch: (lease, inflight) => this.owner(lease).touch(lease, inflight),
      // The handle may be an old pool's (a session that began before a config change).
      markBroken: (handle) => {
        for (const pool of this.pools.keys()) pool.markBroken(handle);
      },
      assertActive: (lease) => this.owner(lease).assertActive(lease),
    };
    this.configure(config);
    const o = config.options;
    this.note({ event: "coordinator-start", tenant: this.tenant, maxConnections: o.maxConnections, minConnections: o.minConnections, initialConnections: o.initialConnections });
  }

  /** The latest pool events (at most 50), oldest first. */
  events(): LogLine[] {
    return [...this.recent];
  }

  /** Logs an event: kept for `events()` and handed to the host's `log`. */
  note(event: PoolEvent | HostEvent): void {
    const line = logLine(event, this.deps.clock.now());
    this.recent.push(line);
    if (this.recent.length > RECENT_EVENTS) this.recent.shift();
    this.deps.log?.(line);
  }

  /** The current pool. */
  get current(): Pool<ServerConnection> {
    return this.pool;
  }

  /** Applies a new config: new connections follow it; the old pool drains (its leases finish, its waiters move here). */
  configure(config: TenantConfig): void {
    const old = this.pool;
    this.retiring = false;
    const pool: Pool<ServerConnection> = new Pool({
      tenant: this.tenant,
      options: config.options,
      clock: this.deps.clock,
      driver: this.driver(config, () => pool),
      schedule: (at) => this.wants(pool, at),
      log: (event) => this.note(event),
      capacity: this.deps.capacity?.(config.options),
    });
    if (old) this.note({ event: "tenant-configured", tenant: this.tenant, maxConnections: config.options.maxConnections });
    this.pool = pool;
    this.pools.set(pool, undefined);
    if (!this.prepared) this.prepared = new PreparedStatements(config.options.maxPreparedStatements, this.counters);
    else if (this.prepared.maxPreparedStatements !== config.options.maxPreparedStatements) this.prepared = this.prepared.successor(config.options.maxPreparedStatements);
    // Until it drained, the old pool keeps its janitor: a lease of it left without activity is still reclaimed.
    if (old) void old.drain().then(() => this.pools.delete(old) && this.wants(old, undefined));
  }

  /** A pool's next janitor run changed: the host's alarm goes to the earliest any live pool wants. */
  private wants(pool: Pool<ServerConnection>, at: number | undefined): void {
    if (this.pools.has(pool)) this.pools.set(pool, at);
    let next: number | undefined;
    for (const t of this.pools.values()) if (t !== undefined && (next === undefined || t < next)) next = t;
    this.deps.schedule(next);
  }

  /** Stops taking sessions and closes every connection once its borrower is done. */
  drain(): Promise<void> {
    return this.pool.drain();
  }

  /**
   * This shard left its tenant's layout (a smaller `shards`): the sessions it
   * has (a driver's open sessions, leases, one-shots in flight) keep their
   * pool, waiters included; the host takes no new ones; the pool drains once
   * the last one ended. Like PgBouncer's `SHUTDOWN WAIT_FOR_CLIENTS`.
   */
  retire(): void {
    this.retiring = true;
    this.drainIfRetired();
  }

  /**
   * A client session over two byte streams, startup first: a driver's
   * (postgres.js, pg, psql through the proxy) or the remote built-in client's.
   * `options` override the pool's `acquireTimeoutMs` and `queryTimeoutMs` for
   * the session; past `queryTimeoutMs` a query is cancelled with `QUERY_TIMEOUT`.
   */
  connect(mode: WireMode, inbound: ReadableStream<Uint8Array>, options: RunOptions = {}): ReadableStream<Uint8Array> {
    return tunnel(inbound, this.clientSession(mode, options), this.called);
  }

  /** `connect()` for a transport that takes the session's bytes itself (a WebSocket): no outbound stream in between. */
  connectTo(mode: WireMode, inbound: ReadableStream<Uint8Array>, out: TunnelEnds, options: RunOptions = {}): void {
    tunnelTo(inbound, out, this.clientSession(mode, options), this.called);
  }

  /** Counts a client session's arrival and makes its wire session (startup first) once the tunnel has its ends. */
  private clientSession(mode: WireMode, options: RunOptions): (ends: TunnelEnds) => WireSession<ServerConnection> {
    const timeouts = { acquireTimeoutMs: options.acquireTimeoutMs, queryTimeoutMs: options.queryTimeoutMs ?? this.pool.options.queryTimeoutMs };
    this.thread.call();
    return (ends) => new WireSession<ServerConnection>({ ...this.sessionDeps(mode), ...ends, ...timeouts, startup: true });
  }

  /** A built-in session (no startup): one-shot batches in transaction mode, a lease in session mode. */
  batches(mode: WireMode, options: RunOptions = {}): BatchRunner<ServerConnection> {
    // One-shots may be pipelined on busy connections at max; a lease holds its connection alone.
    const shared = mode === "transaction";
    return new BatchRunner<ServerConnection>({ ...this.sessionDeps(mode), acquireTimeoutMs: options.acquireTimeoutMs, shared }, this.pool.options.maxResultBytes);
  }

  /**
   * Runs one built-in batch. Past `queryTimeoutMs` the running query is
   * cancelled on the server and the batch fails with `QUERY_TIMEOUT` (a
   * server silent for another `queryTimeoutMs` is given up: `LEASE_LOST`); a
   * session a pool error ended (`LEASE_EXPIRED`, `LEASE_LOST`) answers with it.
   */
  async run(runner: BatchRunner<ServerConnection>, bytes: Uint8Array, options: RunOptions = {}): Promise<Uint8Array> {
    this.thread.call();
    const { clock } = this.deps;
    const timeoutMs = options.queryTimeoutMs ?? this.pool.options.queryTimeoutMs;
    const started = clock.now();
    let timedOut = false;
    const timer = timeoutMs > 0 ? clock.setTimer(() => {
      timedOut = true;
      runner.session.timeOut(timeoutMs);
    }, timeoutMs) : undefined;
    try {
      if (runner.session.closed && runner.session.endedBy) throw runner.session.endedBy;
      const answer = await runner.run(bytes);
      if (runner.session.endedBy) throw runner.session.endedBy;
      // Refused before any of it ran by a shard that cannot take it now: thrown (not answered), so the client may send it to another shard.
      const refused = runner.session.refusedWith;
      if (refused && REROUTE.has(refused.code)) throw refused;
      // 57014 after the deadline is our cancel, even if its answer overtook the timer.
      if ((timedOut || (timeoutMs > 0 && clock.now() - started >= timeoutMs)) && hasSqlState(answer, "57014")) {
        throw new PoolError("QUERY_TIMEOUT", this.tenant, `tenant "${this.tenant}" query was cancelled on the server after ${timeoutMs}ms (queryTimeoutMs)`);
      }
      return answer;
    } catch (error) {
      throw runner.session.endedBy ?? error;
    } finally {
      if (timer !== undefined) clock.clearTimer(timer);
    }
  }

  /** A built-in lease: a session-mode session holding a server connection from now on. */
  async lease(options: RunOptions = {}): Promise<{ runner: BatchRunner<ServerConnection>; pid: number }> {
    this.thread.call();
    const runner = this.batches("session", options);
    const backend = await runner.session.start();
    return { runner, pid: backend.pid };
  }

  /** Borrowers holding or waiting for a connection of the current pool (the shard's load hint). */
  load(): number {
    return this.pool.load();
  }

  /** The pool's counters, the client sessions', the thread's load, and the sizing verdict with the thread in view. */
  stats(): FrontStats {
    const s = this.counters;
    const pool = this.pool.stats();
    const coordinator = this.thread.load();
    return {
      ...pool,
      clients: s.clients,
      clientsActive: s.clientsActive,
      clientsWaiting: s.clientsWaiting,
      prepared: { hits: s.preparedHits, parses: s.preparedParses, reprepares: s.preparedReprepares, evictions: s.preparedEvictions },
      coordinator,
      sizing: threadSizing(pool.sizing, coordinator, this.pool.options.shards ?? 1),
    };
  }

  /** The janitor, from the host's alarm: every live pool's (each tells `wants` its next run). */
  sweep(): void {
    for (const pool of [...this.pools.keys()]) pool.sweep();
  }

  /** A new session's dependencies. Plain data (no getter, closures made once): sessions copy it with a spread, per one-shot. */
  private sessionDeps(mode: WireMode): Omit<WireSessionDeps<ServerConnection>, "send" | "close" | "startup"> {
    return {
      tenant: this.tenant,
      mode,
      pool: this.sessionPool,
      clock: this.deps.clock,
      // The registry as of the session's start (a config change may bring a new one for later sessions).
      prepared: this.prepared,
      stats: this.counters,
      cancelKeys: this.cancelKeys,
      parameters: this.parametersFn,
      ended: this.endedFn,
    };
  }

  private drainIfRetired(): void {
    if (this.retiring && this.counters.clients === 0) void this.pool.drain();
  }

  /** Borrows from the current pool; a waiter caught by a config change moves to the new pool instead of failing. */
  private async acquire(timeoutMs: number | undefined, shared = false): Promise<Lease<ServerConnection>> {
    for (;;) {
      const pool = this.pool;
      try {
        const lease = await pool.acquire({ timeoutMs, shared });
        this.owners.set(lease, pool);
        const params = lease.connection.handle?.parameters;
        if (params) this.parameters = params;
        return lease;
      } catch (error) {
        const replaced = error instanceof PoolError && error.code === "POOL_CLOSED" && this.pool !== pool;
        if (!replaced) throw error;
      }
    }
  }

  private owner(lease: Lease<ServerConnection>): Pool<ServerConnection> {
    return this.owners.get(lease) ?? this.pool;
  }

  /** ParameterStatus values for a startup answer: cached, or read from a connection borrowed for a moment. */
  private async serverParameters(): Promise<ReadonlyMap<string, string>> {
    if (this.parameters) return this.parameters;
    const lease = await this.acquire(undefined);
    this.owner(lease).release(lease, { reset: false });
    return this.parameters!;
  }

  private driver(config: TenantConfig, pool: () => Pool<ServerConnection>) {
    return serverDriver(
      { connectionString: config.connectionString, tenant: this.tenant, shard: this.deps.shard, options: config.options, onBroken: (c) => pool().markBroken(c) },
      this.deps.connector,
    );
  }
}

/** Whether a backend answer holds an ErrorResponse with this SQLSTATE. */
function hasSqlState(answer: Uint8Array, sqlstate: string): boolean {
  const view = new DataView(answer.buffer, answer.byteOffset, answer.byteLength);
  for (let at = 0; at + 5 <= answer.length; at += 1 + view.getInt32(at + 1)) {
    if (answer[at] !== 0x45) continue;
    const fields = parseFields(answer.subarray(at, at + 1 + view.getInt32(at + 1)));
    if (fields.get("C") === sqlstate) return true;
  }
  return false;
}
