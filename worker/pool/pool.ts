import { PoolError } from "../../src/errors.ts";
import type { Capacity } from "./capacity.ts";
import { within, type Clock } from "./clock.ts";
import { Lease, TRANSITIONS, type CloseReason, type Connection, type ConnectionState } from "./connection.ts";
import type { PoolEvent } from "./events.ts";
import { lifetimeSpacingMs, sweep } from "./janitor.ts";
import { Metrics, sizing, type Sizing, type WaitHistogram } from "./metrics.ts";
import type { PoolOptions } from "./options.ts";

/** Opens, checks, resets and closes physical connections; injected so tests can fake it. */
export interface Driver<H> {
  /** Opens a connection; `signal` aborts when the pool gave up on it (`connectTimeoutMs`), so the socket can go at once. */
  open(signal: AbortSignal): Promise<H>;
  /** Resolves if the connection answers (`select 1`), rejects if it is dead. */
  validate(handle: H): Promise<void>;
  /** Rolls back an open transaction and runs `resetQuery`. */
  reset(handle: H): Promise<void>;
  close(handle: H): Promise<void>;
  /** Whether an error from a query means the connection itself is gone. */
  isFatal(error: unknown): boolean;
  /** `host:port` of the server, for messages. Never the password. */
  readonly target: string;
}

/** What the pool needs from its host besides the driver. */
export interface PoolDeps<H> {
  tenant: string;
  options: PoolOptions;
  driver: Driver<H>;
  clock: Clock;
  /** Uniform in [0, 1): lifetime jitter and connect backoff. */
  random?: () => number;
  /** Asks the host to run `sweep()` at this time (the Durable Object's alarm). */
  schedule?: (at: number | undefined) => void;
  /** Told of each pool event (connect failure, close with its reason, acquire timeout, ...); the host logs it. Default: nothing. */
  log?: (event: PoolEvent) => void;
  /** A shared connection budget: the pool never holds more than its `limit()`. Default: none (only `maxConnections`). */
  capacity?: Capacity;
}

/** Per-call acquire options. */
export interface AcquireOptions {
  /** Overrides `acquireTimeoutMs` for this call. */
  timeoutMs?: number;
  /**
   * The borrower runs one statement that leaves no session state (a one-shot
   * query): when every connection is busy at max and nobody waits, it may be
   * pipelined on a connection already running one, up to `pipelineDepth`.
   */
  shared?: boolean;
}

/** Live counters of one tenant's pool (design §5). */
export interface PoolStats {
  tenant: string;
  maxConnections: number;
  total: number;
  idle: number;
  leased: number;
  opening: number;
  closing: number;
  waiting: number;
  /** Age of the oldest waiter now, as PgBouncer's `maxwait`. */
  maxWaitMs: number;
  acquired: number;
  released: number;
  timeouts: number;
  waitQueueFull: number;
  created: number;
  connectFailures: number;
  leasesExpired: number;
  /** Leases ended because their connection died under them. */
  leasesLost: number;
  /** One-shot queries pipelined on a busy connection instead of waiting for a free one. */
  pipelined: number;
  closed: Record<CloseReason, number>;
  acquireWaitMs: { p50: number; p99: number };
  /** Every acquire's wait since this pool started (a config change starts a new pool), for `/metrics`. */
  acquireWaitHistogram: WaitHistogram;
  peakDemand: number;
  sizing: Sizing;
}

interface Waiter<H> {
  readonly enqueuedAt: number;
  readonly shared: boolean;
  readonly resolve: (lease: Lease<H>) => void;
  readonly reject: (error: PoolError) => void;
  timer: unknown;
  settled: boolean;
}

const BACKOFF_BASE_MS = 100;
const BACKOFF_CAP_MS = 5_000;
const LIFETIME_JITTER = 0.05;

/**
 * One tenant's pool: connection states, the FIFO wait queue with per-waiter
 * deadlines, leases, and the janitor. Plain TypeScript; the clock and the
 * driver are injected.
 */
export class Pool<H> {
  readonly tenant: string;
  readonly options: PoolOptions;
  readonly metrics = new Metrics();
  private readonly driver: Driver<H>;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly schedule: (at: number | undefined) => void;
  private readonly log: (event: PoolEvent) => void;
  private readonly capacity: Capacity | undefined;
  private readonly sets: Record<ConnectionState, Set<Connection<H>>> = {
    opening: new Set(), idle: new Set(), validating: new Set(), leased: new Set(),
    returning: new Set(), closing: new Set(), closed: new Set(),
  };
  private readonly waiters: Waiter<H>[] = [];
  /** Shared leases that can carry one more pipelined query. */
  private readonly shareable = new Set<Lease<H>>();
  /** Borrowers beyond the first on shared leases: pipelined queries in progress. */
  private riders = 0;
  private nextConnectionId = 1;
  private nextLeaseId = 1;
  private failedConnects = 0;
  private lastConnectError = "";
  private nextConnectAt = 0;
  private lastLifetimeRetireAt = Number.NEGATIVE_INFINITY;
  /** `initialConnections` (at most max) still to be opened. */
  private initialPending: number;
  private readonly initialTarget: number;
  private reachedMin = false;
  private closed = false;
  private alarmAt: number | undefined;
  private pumpTimer: unknown;
  private pumpTimerAt = Number.POSITIVE_INFINITY;
  private drained: (() => void) | undefined;

  constructor(deps: PoolDeps<H>) {
    this.tenant = deps.tenant;
    this.options = deps.options;
    this.driver = deps.driver;
    this.clock = deps.clock;
    this.random = deps.random ?? Math.random;
    this.schedule = deps.schedule ?? (() => {});
    this.log = deps.log ?? (() => {});
    this.capacity = deps.capacity;
    this.capacity?.attach(() => this.pump());
    this.initialTarget = Math.min(this.options.initialConnections, this.options.maxConnections);
    this.initialPending = this.initialTarget;
    this.pump();
  }

  /** Physical connections, counting those opening and closing: never above `maxConnections`. */
  get total(): number {
    const s = this.sets;
    return s.opening.size + s.idle.size + s.validating.size + s.leased.size + s.returning.size + s.closing.size;
  }

  /** Connections the pool may hold now: `maxConnections`, or less when a budget grants less. */
  private get cap(): number {
    const max = this.options.maxConnections;
    return this.capacity ? Math.min(max, this.capacity.limit()) : max;
  }

  /** Connections the pool keeps: all but those already closing. Floors (`minConnections`) count these. */
  private get kept(): number {
    return this.total - this.sets.closing.size;
  }

  /** Borrows a connection: at once if one is free, else in FIFO order until the deadline. */
  acquire(options: AcquireOptions = {}): Promise<Lease<H>> {
    if (this.closed) return Promise.reject(this.error("POOL_CLOSED", "the pool is closed: it takes no new leases"));
    if (this.options.maxConnections === 0) {
      return Promise.reject(this.error("POOL_DISABLED", "maxConnections is 0: the pool is disabled"));
    }
    const now = this.clock.now();
    const shared = options.shared === true;
    const free = this.waiters.length === 0 ? this.takeIdle(now) : undefined;
    if (free && !this.needsValidation(free, now)) {
      const lease = this.grant(free, now, now, shared);
      this.grow(now); // minIdle: replace the idle connection just taken
      return Promise.resolve(lease);
    }
    const ride = !free && shared && this.waiters.length === 0 ? this.rideable(now) : undefined;
    if (ride) return Promise.resolve(this.ride(ride, now, now));
    // Borrowers that a free (to validate), opening or still-openable connection will serve do not count as queued.
    const coming = (free ? 1 : 0) + this.sets.opening.size + Math.max(0, this.cap - this.total);
    const queued = this.waiters.length - coming;
    const full = queued >= 0;
    if (full && queued >= this.options.maxWaiters) {
      this.metrics.queueFull++;
      this.emit({ event: "wait-queue-full", tenant: this.tenant, waiting: this.waiters.length, maxWaiters: this.options.maxWaiters });
      return Promise.reject(this.error("WAIT_QUEUE_FULL", `${this.waiters.length} borrowers already wait (maxWaiters=${this.options.maxWaiters}) ${this.counters()}`));
    }
    if (full) this.metrics.waited++;
    const timeoutMs = options.timeoutMs ?? this.options.acquireTimeoutMs;
    return new Promise<Lease<H>>((resolve, reject) => {
      const waiter: Waiter<H> = { enqueuedAt: now, shared, resolve, reject, timer: undefined, settled: false };
      waiter.timer = this.clock.setTimer(() => this.expireWaiter(waiter, timeoutMs), timeoutMs);
      this.waiters.push(waiter);
      this.notePeak();
      this.pump();
    });
  }

  /**
   * Runs `fn` on the lease's connection. Fails with `LEASE_RELEASED` or
   * `LEASE_EXPIRED` once the lease is over; marks the connection broken when
   * the driver says the error was fatal.
   */
  async use<T>(lease: Lease<H>, fn: (handle: H) => Promise<T>): Promise<T> {
    this.assertActive(lease);
    lease.inflight++;
    lease.lastActivityAt = this.clock.now();
    try {
      if (lease.connection.broken) throw this.lose(lease);
      return await fn(lease.connection.handle as H);
    } catch (error) {
      if (error instanceof PoolError || !this.driver.isFatal(error)) throw error;
      throw this.lose(lease, error instanceof Error ? error.message : String(error));
    } finally {
      lease.inflight--;
      lease.lastActivityAt = this.clock.now();
      this.want(lease.lastActivityAt + this.options.leaseTimeoutMs);
    }
  }

  /** Throws the error a caller gets for a lease that is over. */
  assertActive(lease: Lease<H>): void {
    if (lease.state === "active") return;
    if (lease.state === "released") throw this.error("LEASE_RELEASED", `lease ${lease.id} was already released`);
    if (lease.state === "lost") throw this.lose(lease);
    throw this.error("LEASE_EXPIRED", `lease ${lease.id} was reclaimed after ${this.options.leaseTimeoutMs}ms without activity (leaseTimeoutMs); its transaction was rolled back`);
  }

  /**
   * A borrower that drives the connection itself (a wire session) reports
   * traffic: it counts as activity for `leaseTimeoutMs`. `inflight` (+1 when
   * a request goes out unanswered, -1 when its answer is in) brackets what
   * the janitor never reclaims, as `use()` does.
   */
  touch(lease: Lease<H>, inflight = 0): void {
    if (lease.state !== "active") return;
    lease.inflight += inflight;
    lease.lastActivityAt = this.clock.now();
    if (lease.inflight === 0) this.want(lease.lastActivityAt + this.options.leaseTimeoutMs);
  }

  /**
   * Gives a lease's connection back; idempotent once the lease is over. A
   * shared lease (pipelined one-shots) is given back once per holder, and the
   * connection returns when the last one does. With `reset` (the default) the
   * connection is rolled back and `resetQuery` runs before anyone else gets it.
   */
  release(lease: Lease<H>, options: { reset?: boolean } = {}): void {
    if (lease.state !== "active") return;
    this.metrics.released++;
    if (options.reset !== false) lease.resetOnRelease = true;
    if (lease.holders > 1) {
      // A pipelined query is done; the connection stays with the others, and has room for one more.
      lease.holders--;
      this.riders--;
      if (lease.shared) this.shareable.add(lease);
      this.pump();
      return;
    }
    this.end(lease, "released");
    const c = lease.connection;
    c.lease = undefined;
    const now = this.clock.now();
    const reason = this.retireReason(c, now);
    if (reason) return this.retire(c, reason);
    if (!lease.resetOnRelease) return this.toIdle(c, now, true);
    this.move(c, "returning");
    this.answered(this.driver.reset(c.handle as H), "the reset").then(
      () => this.toIdle(c, this.clock.now(), true),
      () => this.retire(c, "broken"),
    );
  }

  /**
   * The socket of this connection closed or failed: never hand it out again.
   * A lease on it ends at once (`LEASE_LOST`) so its slot is freed.
   */
  markBroken(handle: H): void {
    for (const state of ["idle", "leased", "validating", "returning"] as const) {
      for (const c of this.sets[state]) {
        if (c.handle !== handle) continue;
        c.broken = true;
        if (state === "idle") this.retire(c, "broken");
        if (state === "leased" && c.lease) this.lose(c.lease);
        return;
      }
    }
  }

  /** Ends a lease whose connection died: the slot is freed, later use fails with `LEASE_LOST`. */
  private lose(lease: Lease<H>, cause = "the server closed the connection"): PoolError {
    if (lease.state === "active") {
      this.end(lease, "lost");
      this.metrics.leasesLost++;
      lease.connection.lease = undefined;
      lease.connection.broken = true;
      this.retire(lease.connection, "broken");
    }
    return this.error("LEASE_LOST", `lease ${lease.id} lost its connection (${cause}); session state and any open transaction are gone, acquire again`);
  }

  /** The janitor, run from the alarm: applies its rules and returns when to run next. */
  sweep(): number | undefined {
    const now = this.clock.now();
    const result = sweep(
      {
        options: this.options,
        idle: this.sets.idle,
        leased: this.sets.leased,
        kept: this.kept,
        floor: this.floor(),
        lastLifetimeRetireAt: this.lastLifetimeRetireAt,
      },
      now,
    );
    for (const c of result.expired) {
      const lease = c.lease!;
      this.end(lease, "expired");
      c.lease = undefined;
      this.metrics.leasesExpired++;
      this.emit({ event: "lease-expired", tenant: this.tenant, lease: lease.id, connection: c.id, leaseTimeoutMs: this.options.leaseTimeoutMs });
      this.retire(c, "lease-expired");
    }
    for (const { connection, reason } of result.closes) this.retire(connection, reason);
    this.pump();
    this.alarmAt = result.nextAt;
    this.schedule(result.nextAt);
    return result.nextAt;
  }

  /** Stops taking leases, fails waiters with `POOL_CLOSED`, closes idle connections; resolves once every connection is closed. */
  drain(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      for (const w of this.waiters.splice(0)) this.settle(w, undefined, this.error("POOL_CLOSED", "the pool was closed while waiting"));
      for (const c of [...this.sets.idle]) this.retire(c, "shutdown");
    }
    if (this.total === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.drained;
      this.drained = () => {
        previous?.();
        resolve();
      };
    });
  }

  /** Borrowers holding or waiting for a connection: the load hint a shard gives its clients (cheaper than `stats()`). */
  load(): number {
    return this.sets.leased.size + this.sets.validating.size + this.waiters.length;
  }

  /** Live counters for `stats()`. */
  stats(): PoolStats {
    const m = this.metrics;
    const now = this.clock.now();
    return {
      tenant: this.tenant,
      maxConnections: this.options.maxConnections,
      total: this.total,
      idle: this.sets.idle.size,
      leased: this.sets.leased.size + this.sets.validating.size,
      opening: this.sets.opening.size,
      closing: this.sets.closing.size + this.sets.returning.size,
      waiting: this.waiters.length,
      maxWaitMs: this.waiters.length > 0 ? now - this.waiters[0]!.enqueuedAt : 0,
      acquired: m.acquired,
      released: m.released,
      timeouts: m.timeouts,
      waitQueueFull: m.queueFull,
      created: m.created,
      connectFailures: m.connectFailures,
      leasesExpired: m.leasesExpired,
      leasesLost: m.leasesLost,
      pipelined: m.pipelined,
      closed: { ...m.closed },
      acquireWaitMs: { p50: m.waitPercentile(50), p99: m.waitPercentile(99) },
      acquireWaitHistogram: m.waitHistogram(),
      peakDemand: m.peakDemand,
      sizing: sizing(m, this.options.maxConnections, this.options.minConnections, this.options.shards ?? 1),
    };
  }

  /** Hands free connections to waiters, opens what demand and the floors need, and arms the timers. Called after every change. */
  private pump(): void {
    const now = this.clock.now();
    while (this.waiters.length > 0) {
      const c = this.takeIdle(now);
      if (c) {
        this.serve(this.waiters.shift()!, c, now);
        continue;
      }
      // In FIFO order: a one-shot at the head may ride on a busy connection; a lease at the head waits for a free one.
      const ride = this.waiters[0]!.shared ? this.rideable(now) : undefined;
      if (!ride) break;
      const waiter = this.waiters.shift()!;
      this.ride(ride, waiter.enqueuedAt, now, waiter);
    }
    this.grow(now);
    this.shed();
    this.armPumpTimer(now);
    this.capacity?.report(this.total, this.wanted());
    if (this.closed && this.total === 0 && this.drained) {
      const drained = this.drained;
      this.drained = undefined;
      drained();
    }
  }

  private serve(waiter: Waiter<H>, c: Connection<H>, now: number): void {
    if (!this.needsValidation(c, now)) {
      this.grant(c, waiter.enqueuedAt, now, waiter.shared, waiter);
      return;
    }
    this.move(c, "validating");
    this.answered(this.driver.validate(c.handle as H), "the validation query").then(
      () => {
        const at = this.clock.now();
        if (waiter.settled || c.broken || this.closed) {
          // Not handed out: the waiter goes back to the head (or fails if the pool closed); toIdle closes a broken connection or one of a closed pool.
          if (!waiter.settled) {
            if (this.closed) this.settle(waiter, undefined, this.error("POOL_CLOSED", "the pool was closed while waiting"));
            else this.waiters.unshift(waiter);
          }
          this.toIdle(c, at);
          this.pump();
        } else this.grant(c, waiter.enqueuedAt, at, waiter.shared, waiter);
      },
      () => {
        this.retire(c, "broken");
        if (!waiter.settled) this.waiters.unshift(waiter);
        this.pump();
      },
    );
  }

  private grant(c: Connection<H>, enqueuedAt: number, now: number, shared: boolean, waiter?: Waiter<H>): Lease<H> {
    this.move(c, "leased");
    c.uses++;
    const lease = new Lease(this.nextLeaseId++, c, now, now - enqueuedAt, shared);
    c.lease = lease;
    if (shared && this.options.pipelineDepth > 1) this.shareable.add(lease);
    this.metrics.acquired++;
    this.metrics.recordWait(now - enqueuedAt);
    this.notePeak();
    this.want(now + this.options.leaseTimeoutMs);
    if (waiter) this.settle(waiter, lease);
    return lease;
  }

  /**
   * The shared lease with the fewest queries on it that can take one more;
   * only when the pool is at max (a new connection is the better choice below
   * it) and the connection is not due to retire.
   */
  private rideable(now: number): Lease<H> | undefined {
    if (this.total < this.cap) return undefined;
    let best: Lease<H> | undefined;
    for (const lease of this.shareable) {
      const c = lease.connection;
      if (c.broken || c.retireAt <= now || (this.options.maxUses > 0 && c.uses >= this.options.maxUses)) continue;
      if (!best || lease.holders < best.holders) best = lease;
    }
    return best;
  }

  /** Pipelines one more one-shot query on a shared lease's connection. */
  private ride(lease: Lease<H>, enqueuedAt: number, now: number, waiter?: Waiter<H>): Lease<H> {
    lease.holders++;
    this.riders++;
    if (lease.holders >= this.options.pipelineDepth) this.shareable.delete(lease);
    lease.connection.uses++;
    this.metrics.acquired++;
    this.metrics.pipelined++;
    this.metrics.recordWait(now - enqueuedAt);
    this.notePeak();
    if (waiter) this.settle(waiter, lease);
    return lease;
  }

  /** A lease is over (its last holder released it, or it was reclaimed or lost): nobody rides on it any more. */
  private end(lease: Lease<H>, state: Exclude<Lease<H>["state"], "active">): void {
    lease.state = state;
    this.shareable.delete(lease);
    this.riders -= lease.holders - 1;
  }

  private settle(waiter: Waiter<H>, lease?: Lease<H>, error?: PoolError): void {
    waiter.settled = true;
    this.clock.clearTimer(waiter.timer);
    if (lease) waiter.resolve(lease);
    else waiter.reject(error!);
  }

  private expireWaiter(waiter: Waiter<H>, timeoutMs: number): void {
    if (waiter.settled) return;
    const index = this.waiters.indexOf(waiter);
    if (index >= 0) this.waiters.splice(index, 1);
    this.metrics.timeouts++;
    this.emit({
      event: "acquire-timeout", tenant: this.tenant, timeoutMs, total: this.total, leased: this.sets.leased.size + this.sets.validating.size,
      idle: this.sets.idle.size, opening: this.sets.opening.size, waiting: this.waiters.length + 1,
    });
    const budget = this.capacity && this.cap < this.options.maxConnections && this.total >= this.cap ? `; ${this.capacity.describe()}` : "";
    const cause = (this.total === 0 && this.lastConnectError ? `; last connect error: ${this.lastConnectError}` : "") + budget;
    this.settle(waiter, undefined, this.error("ACQUIRE_TIMEOUT", `had no free connection after ${timeoutMs}ms ${this.counters(1)}${cause}`));
  }

  /** The most recently used free connection (LIFO keeps the rest idle long enough to be reaped). */
  private takeIdle(now: number): Connection<H> | undefined {
    let best: Connection<H> | undefined;
    for (const c of this.sets.idle) {
      if (c.broken || c.availableAt > now) continue;
      if (!best || c.idleSince >= best.idleSince) best = c;
    }
    return best;
  }

  private needsValidation(c: Connection<H>, now: number): boolean {
    return now - c.idleSince > this.options.validateAfterIdleMs;
  }

  /** Puts a connection in the idle set; a returned one (`cooldown`) is not handed out before `reuseCooldownMs`. */
  private toIdle(c: Connection<H>, now: number, cooldown = false): void {
    if (this.closed) return this.retire(c, "shutdown");
    if (c.broken) return this.retire(c, "broken");
    if (this.kept > this.cap) return this.retire(c, "max-idle");
    const beyondMaxIdle = this.sets.idle.size >= this.options.maxIdle && this.kept > this.floor();
    if (this.waiters.length === 0 && beyondMaxIdle) return this.retire(c, "max-idle");
    c.idleSince = now;
    c.availableAt = cooldown ? now + this.options.reuseCooldownMs : now;
    this.move(c, "idle");
    if (this.options.idleTimeoutMs > 0) this.want(now + this.options.idleTimeoutMs);
    if (c.retireAt !== Number.POSITIVE_INFINITY) this.want(Math.max(c.retireAt, now));
    this.pump();
  }

  /** Why a returned connection must close instead of going back to idle, if it must. */
  private retireReason(c: Connection<H>, now: number): CloseReason | undefined {
    if (this.closed) return "shutdown";
    if (c.broken) return "broken";
    if (this.options.maxUses > 0 && c.uses >= this.options.maxUses) return "max-uses";
    if (c.retireAt <= now && now >= this.lastLifetimeRetireAt + lifetimeSpacingMs(this.options)) return "max-lifetime";
    return undefined;
  }

  private retire(c: Connection<H>, reason: CloseReason): void {
    this.move(c, "closing");
    this.metrics.closed[reason]++;
    const now = this.clock.now();
    this.emit({ event: "connection-closed", tenant: this.tenant, connection: c.id, reason, ageMs: now - c.createdAt, uses: c.uses, total: this.total });
    if (reason === "max-lifetime") this.lastLifetimeRetireAt = now;
    const handle = c.handle as H;
    Promise.resolve()
      .then(() => this.driver.close(handle))
      .catch(() => {})
      .finally(() => {
        this.move(c, "closed");
        this.sets.closed.delete(c);
        this.pump();
      });
  }

  /** The pool never shrinks below `minConnections` once it has reached it. */
  private floor(): number {
    return this.reachedMin ? this.options.minConnections : 0;
  }

  /** Opens connections for waiters, the reached minimum, `minIdle` and `initialConnections`, within max, concurrency and backoff. */
  private grow(now: number): void {
    if (this.closed) return;
    const o = this.options;
    const opening = this.sets.opening.size;
    const live = this.kept - opening;
    const forWaiters = this.waiters.length - opening;
    const forFloor = Math.max(this.floor(), this.initialPending > 0 ? this.initialTarget : 0) - live - opening;
    const forIdle = o.minIdle - this.sets.idle.size - opening;
    let wanted = Math.max(forWaiters, forFloor, forIdle);
    wanted = Math.min(wanted, this.cap - this.total, o.maxConcurrentConnects - opening);
    if (wanted <= 0 || now < this.nextConnectAt) return;
    for (let i = 0; i < wanted; i++) this.open(now);
  }

  /**
   * Above a lowered budget limit: idle connections close first (busy ones
   * close when returned, in `toIdle`). When the grant lapsed, leased ones
   * close too, newest lease first: the budget may already be giving their
   * capacity to others.
   */
  private shed(): void {
    if (!this.capacity) return;
    let over = this.kept - this.cap;
    if (over <= 0) return;
    const idle = [...this.sets.idle].sort((a, b) => a.idleSince - b.idleSince);
    for (const c of idle) {
      if (over-- <= 0) break;
      this.retire(c, "max-idle");
    }
    if (over <= 0 || !this.capacity.lapsed?.()) return;
    const leased = [...this.sets.leased].filter((c) => c.lease).sort((a, b) => b.lease!.acquiredAt - a.lease!.acquiredAt).slice(0, over);
    for (const c of leased) this.lose(c.lease!, "the connection budget's grant lapsed: it could not be renewed in time");
    if (leased.length > 0) this.emit({ event: "budget-lapsed", tenant: this.tenant, leasesLost: leased.length, cause: this.capacity.describe() });
  }

  /** Connections the pool would hold if the budget allowed: busy ones, waiters, and the floors (all within max). */
  private wanted(): number {
    if (this.closed) return 0;
    const s = this.sets;
    const busy = s.leased.size + s.validating.size + s.returning.size;
    const floor = Math.max(this.floor(), this.initialPending > 0 ? this.initialTarget : 0);
    return Math.min(this.options.maxConnections, Math.max(busy + this.waiters.length, floor, busy + this.options.minIdle));
  }

  private open(now: number): void {
    const c: Connection<H> = {
      id: this.nextConnectionId++, state: "opening", handle: undefined, createdAt: now, retireAt: Number.POSITIVE_INFINITY,
      uses: 0, idleSince: now, availableAt: now, broken: false, lease: undefined,
    };
    this.sets.opening.add(c);
    let done = false;
    const abort = new AbortController();
    const timer = this.clock.setTimer(() => {
      if (done) return;
      done = true;
      abort.abort();
      this.connectFailed(c, `timed out after ${this.options.connectTimeoutMs}ms (connectTimeoutMs)`);
    }, this.options.connectTimeoutMs);
    Promise.resolve()
      .then(() => this.driver.open(abort.signal))
      .then(
        (handle) => {
          if (done) return void this.driver.close(handle).catch(() => {});
          done = true;
          this.clock.clearTimer(timer);
          this.opened(c, handle);
        },
        (error: unknown) => {
          if (done) return;
          done = true;
          this.clock.clearTimer(timer);
          const code = (error as { code?: unknown } | undefined)?.code;
          this.connectFailed(c, error instanceof Error ? error.message : String(error), typeof code === "string" ? code : undefined);
        },
      );
  }

  private opened(c: Connection<H>, handle: H): void {
    const now = this.clock.now();
    const o = this.options;
    c.handle = handle;
    c.createdAt = now;
    c.retireAt = o.maxLifetimeMs > 0 ? now + o.maxLifetimeMs - Math.floor(this.random() * LIFETIME_JITTER * o.maxLifetimeMs) : Number.POSITIVE_INFINITY;
    this.failedConnects = 0;
    this.lastConnectError = "";
    this.nextConnectAt = 0;
    this.metrics.created++;
    this.emit({ event: "connection-opened", tenant: this.tenant, connection: c.id, total: this.total });
    if (this.initialPending > 0) this.initialPending--;
    if (this.closed) return this.retire(c, "shutdown");
    if (o.minConnections > 0 && this.kept >= o.minConnections) this.reachedMin = true;
    this.toIdle(c, now);
  }

  private connectFailed(c: Connection<H>, cause: string, code?: string): void {
    this.move(c, "closed");
    this.sets.closed.delete(c);
    this.metrics.connectFailures++;
    this.failedConnects++;
    this.lastConnectError = cause;
    const backoff = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (this.failedConnects - 1));
    const delay = Math.round(backoff / 2 + (this.random() * backoff) / 2);
    this.nextConnectAt = this.clock.now() + delay;
    this.emit({
      event: "connect-failed", tenant: this.tenant, target: this.driver.target, cause, ...(code ? { code } : {}),
      attempt: this.failedConnects, retryInMs: delay,
    });
    const error = this.error("CONNECT_FAILED", `could not connect to ${this.driver.target}: ${cause} (attempt ${this.failedConnects} in a row, next in ${delay}ms)`);
    if (this.kept === 0) {
      for (const w of this.waiters.splice(0)) this.settle(w, undefined, error);
    }
    this.pump();
  }

  private armPumpTimer(now: number): void {
    let at = Number.POSITIVE_INFINITY;
    if (this.waiters.length > 0) {
      for (const c of this.sets.idle) if (c.availableAt > now) at = Math.min(at, c.availableAt);
    }
    if (this.nextConnectAt > now) at = Math.min(at, this.nextConnectAt);
    if (at === Number.POSITIVE_INFINITY || at >= this.pumpTimerAt) return;
    if (this.pumpTimer !== undefined) this.clock.clearTimer(this.pumpTimer);
    this.pumpTimerAt = at;
    this.pumpTimer = this.clock.setTimer(() => {
      this.pumpTimer = undefined;
      this.pumpTimerAt = Number.POSITIVE_INFINITY;
      this.pump();
    }, at - now);
  }

  /** Tells the host of an event; a failing log hook never breaks the pool. */
  private emit(event: PoolEvent): void {
    try {
      this.log(event);
    } catch {}
  }

  /** Every change of a connection's state goes through here. */
  private move(c: Connection<H>, to: ConnectionState): void {
    if (!TRANSITIONS[c.state].includes(to)) {
      throw this.error("INTERNAL", `connection ${c.id} cannot move from ${c.state} to ${to}`);
    }
    this.sets[c.state].delete(c);
    c.state = to;
    this.sets[to].add(c);
  }

  /**
   * The pool's own statement (a validation, a reset), failed if the server
   * has not answered within `connectTimeoutMs`: a server that went silent
   * without closing the socket must not keep the connection out of use for
   * good (the caller then retires it, which closes the socket).
   */
  private answered(work: Promise<void>, what: string): Promise<void> {
    const ms = this.options.connectTimeoutMs;
    return within(this.clock, work, ms, `${what} got no answer within connectTimeoutMs=${ms}`);
  }

  /** Asks the host for a janitor run at `at` unless one is already due sooner. */
  private want(at: number): void {
    if (this.alarmAt !== undefined && this.alarmAt <= at) return;
    this.alarmAt = at;
    this.schedule(at);
  }

  private notePeak(): void {
    const demand = this.sets.leased.size + this.sets.validating.size + this.riders + this.waiters.length;
    if (demand > this.metrics.peakDemand) this.metrics.peakDemand = demand;
  }

  private counters(extraWaiting = 0): string {
    return `(max=${this.options.maxConnections}, total=${this.total}, leased=${this.sets.leased.size + this.sets.validating.size}, idle=${this.sets.idle.size}, opening=${this.sets.opening.size}, waiting=${this.waiters.length + extraWaiting})`;
  }

  private error(code: ConstructorParameters<typeof PoolError>[0], detail: string): PoolError {
    return new PoolError(code, this.tenant, `tenant "${this.tenant}" ${detail}`);
  }
}
