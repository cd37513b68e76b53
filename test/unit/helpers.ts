import type { Clock } from "../../worker/pool/clock.ts";
import { Pool, type AcquireOptions, type Driver } from "../../worker/pool/pool.ts";
import type { Lease } from "../../worker/pool/connection.ts";
import { resolveOptions, type PoolOptions } from "../../worker/pool/options.ts";
import { PoolError } from "../../src/errors.ts";

/** Lets every pending promise chain run (setImmediate comes after the whole microtask queue). */
export async function flush(rounds = 3): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((r) => setImmediate(r));
}

interface Timer {
  readonly id: number;
  readonly at: number;
  readonly fn: () => void;
}

/** A clock that only moves when the test says so; timers fire in time order, in creation order on ties. */
export class ManualClock implements Clock {
  private t: number;
  private nextId = 1;
  private readonly timers = new Map<number, Timer>();

  constructor(start = 1_000_000) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimer(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { id, at: this.t + Math.max(0, ms), fn });
    return id;
  }

  clearTimer(timer: unknown): void {
    this.timers.delete(timer as number);
  }

  /** When this timer fires, if it is still set. */
  timerAt(timer: unknown): number | undefined {
    return this.timers.get(timer as number)?.at;
  }

  /** Timers not yet fired. */
  get pending(): number {
    return this.timers.size;
  }

  /** Moves time forward by `ms`, firing due timers one by one and letting promises settle after each. */
  async advance(ms: number): Promise<void> {
    await this.advanceTo(this.t + ms);
  }

  async advanceTo(target: number): Promise<void> {
    await flush();
    for (;;) {
      let next: Timer | undefined;
      for (const timer of this.timers.values()) {
        if (timer.at > target) continue;
        if (!next || timer.at < next.at || (timer.at === next.at && timer.id < next.id)) next = timer;
      }
      if (!next) break;
      this.timers.delete(next.id);
      this.t = Math.max(this.t, next.at);
      next.fn();
      await flush();
    }
    this.t = target;
    await flush();
  }
}

export { seeded } from "../../bench/lib/seeded.ts";

/** A fake physical connection. */
export interface FakeHandle {
  readonly id: number;
}

/** What the next `open()` does. */
export type OpenBehaviour =
  | { kind: "ok"; delayMs?: number }
  | { kind: "fail"; message?: string; delayMs?: number }
  | { kind: "hang" };

/** An error the fake driver reports as fatal (the connection is gone). */
export class FatalError extends Error {
  readonly fatal = true;
}

/**
 * A connection factory with controllable behaviour. Delays run on the manual clock.
 * Counts what the pool asked of it, so tests check the driver's side, not the pool's word.
 */
export class FakeDriver implements Driver<FakeHandle> {
  readonly target = "db.example:5432";
  private nextId = 1;
  /** Behaviours for the next opens, in order; then `defaultOpen`. */
  readonly openPlan: OpenBehaviour[] = [];
  defaultOpen: OpenBehaviour = { kind: "ok" };
  /** Handles whose `validate` rejects (dead server side). */
  readonly dead = new Set<number>();
  validateDelayMs = 0;
  /** Handles whose `reset` rejects. */
  readonly resetFailsFor = new Set<number>();
  resetFailsAll = false;
  resetDelayMs = 0;
  closeDelayMs = 0;
  /** When set, `close` never settles. */
  closeHangs = false;

  /** Beyond this many opens the driver stops answering and sets `runaway`. */
  openLimit = 5_000;
  runaway = false;
  /** A driver that does not honour the abort signal (its attempt may still succeed late). */
  ignoreAbort = false;
  opens = 0;
  opened = 0;
  /** Attempts the pool aborted (connect timeout) before they settled. */
  aborted = 0;
  openFailures = 0;
  inFlight = 0;
  maxInFlight = 0;
  validations = 0;
  resets = 0;
  closes = 0;
  /** Start times of opens still pending, by attempt number. */
  readonly pendingOpens = new Map<number, number>();
  readonly openStartedAt: number[] = [];
  readonly openedHandles: FakeHandle[] = [];
  readonly closedIds: number[] = [];
  /** When each `close` was called, in the same order as `closedIds`. */
  readonly closedAt: number[] = [];
  readonly resetIds: number[] = [];
  readonly validatedIds: number[] = [];
  /** Handles opened and not yet closed. */
  readonly live = new Set<number>();
  maxLive = 0;

  constructor(private readonly clock: ManualClock) {}

  /** Handles the driver has closed, as a set. */
  isClosed(handle: FakeHandle): boolean {
    return this.closedIds.includes(handle.id);
  }

  /**
   * Opens a fake connection as the plan says. Like a real driver it gives up
   * when the pool aborts the attempt (`signal`), so an abandoned attempt is no
   * longer in flight.
   */
  open(signal?: AbortSignal): Promise<FakeHandle> {
    const attempt = ++this.opens;
    if (this.opens > this.openLimit) {
      // A runaway open/close loop: stop feeding it so the test can fail instead of spinning forever.
      this.runaway = true;
      return new Promise<FakeHandle>(() => {});
    }
    const behaviour = this.openPlan.shift() ?? this.defaultOpen;
    this.openStartedAt.push(this.clock.now());
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    this.pendingOpens.set(attempt, this.clock.now());
    return new Promise<FakeHandle>((resolve, reject) => {
      let timer: unknown;
      let settled = false;
      const end = () => {
        settled = true;
        this.inFlight--;
        this.pendingOpens.delete(attempt);
        signal?.removeEventListener("abort", onAbort);
      };
      const onAbort = () => {
        if (settled) return;
        end();
        if (timer !== undefined) this.clock.clearTimer(timer);
        this.aborted++;
        reject(new Error("aborted"));
      };
      const finish = () => {
        if (settled) return;
        end();
        if (behaviour.kind === "fail") {
          this.openFailures++;
          reject(new Error(behaviour.message ?? "connection refused"));
          return;
        }
        const handle: FakeHandle = { id: this.nextId++ };
        this.opened++;
        this.openedHandles.push(handle);
        this.live.add(handle.id);
        this.maxLive = Math.max(this.maxLive, this.live.size);
        resolve(handle);
      };
      if (!this.ignoreAbort) {
        if (signal?.aborted) return onAbort();
        signal?.addEventListener("abort", onAbort);
      }
      if (behaviour.kind === "hang") return;
      if (behaviour.delayMs) timer = this.clock.setTimer(finish, behaviour.delayMs);
      else finish();
    });
  }

  validate(handle: FakeHandle): Promise<void> {
    this.validations++;
    this.validatedIds.push(handle.id);
    const ok = !this.dead.has(handle.id);
    return this.later(this.validateDelayMs, ok, `validate: connection ${handle.id} is dead`);
  }

  reset(handle: FakeHandle): Promise<void> {
    this.resets++;
    this.resetIds.push(handle.id);
    const ok = !this.resetFailsAll && !this.resetFailsFor.has(handle.id);
    return this.later(this.resetDelayMs, ok, `reset failed on connection ${handle.id}`);
  }

  close(handle: FakeHandle): Promise<void> {
    this.closes++;
    this.closedIds.push(handle.id);
    this.closedAt.push(this.clock.now());
    this.live.delete(handle.id);
    if (this.closeHangs) return new Promise<void>(() => {});
    return this.later(this.closeDelayMs, true, "");
  }

  isFatal(error: unknown): boolean {
    return error instanceof FatalError;
  }

  private later(delayMs: number, ok: boolean, message: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const done = () => (ok ? resolve() : reject(new Error(message)));
      if (delayMs > 0) this.clock.setTimer(done, delayMs);
      else done();
    });
  }
}

/** The state of a promise the test watches without awaiting it (and without unhandled rejections). */
export interface Tracked<T> {
  status: "pending" | "resolved" | "rejected";
  value?: T;
  error?: unknown;
  /** The code of a rejecting PoolError. */
  readonly code: string | undefined;
  readonly promise: Promise<T>;
}

export function track<T>(promise: Promise<T>): Tracked<T> {
  const t = {
    status: "pending",
    promise,
    get code() {
      return t.error instanceof PoolError ? t.error.code : undefined;
    },
  } as Tracked<T>;
  promise.then(
    (value) => {
      t.status = "resolved";
      t.value = value;
    },
    (error: unknown) => {
      t.status = "rejected";
      t.error = error;
    },
  );
  return t;
}

/** Runs `fn`, expecting a `PoolError` with this code; returns it for message checks. */
export async function rejection(promise: Promise<unknown>, code: string): Promise<PoolError> {
  try {
    await promise;
  } catch (error) {
    if (!(error instanceof PoolError)) throw new Error(`expected PoolError ${code}, got ${String(error)}`);
    if (error.code !== code) throw new Error(`expected PoolError ${code}, got ${error.code}: ${error.message}`);
    return error;
  }
  throw new Error(`expected PoolError ${code}, but it resolved`);
}

/** Same as `rejection`, for synchronous throws. */
export function thrown(fn: () => unknown, code: string): PoolError {
  try {
    fn();
  } catch (error) {
    if (!(error instanceof PoolError)) throw new Error(`expected PoolError ${code}, got ${String(error)}`);
    if (error.code !== code) throw new Error(`expected PoolError ${code}, got ${error.code}: ${error.message}`);
    return error;
  }
  throw new Error(`expected PoolError ${code}, but nothing was thrown`);
}

export interface Harness {
  pool: Pool<FakeHandle>;
  clock: ManualClock;
  driver: FakeDriver;
  options: PoolOptions;
  /** Every deadline the pool asked the host (the alarm) for, in order. */
  scheduled: (number | undefined)[];
  /** Lets the pool's promise chains settle. */
  settle(): Promise<void>;
}

/**
 * A pool on a manual clock and a fake driver. `random` defaults to 0 (no jitter)
 * unless given; `validateAfterIdleMs` is left as given (default 30 s).
 */
export function makePool(
  input: Record<string, unknown> = {},
  deps: { clock?: ManualClock; driver?: FakeDriver; random?: () => number; tenant?: string; before?: (driver: FakeDriver) => void } = {},
): Harness {
  const clock = deps.clock ?? new ManualClock();
  const driver = deps.driver ?? new FakeDriver(clock);
  deps.before?.(driver);
  const tenant = deps.tenant ?? "acme";
  const options = resolveOptions(tenant, input);
  const scheduled: (number | undefined)[] = [];
  const pool = new Pool<FakeHandle>({
    tenant,
    options,
    driver,
    clock,
    random: deps.random ?? (() => 0),
    schedule: (at) => scheduled.push(at),
  });
  return { pool, clock, driver, options, scheduled, settle: () => clock.advance(0) };
}

/**
 * Acquires and expects the lease without the clock moving (pending promises may run).
 * Fails at once instead of hanging the test when the pool makes the borrower wait.
 */
export async function acquireNow(h: Harness, options?: AcquireOptions): Promise<Lease<FakeHandle>> {
  const t = track(h.pool.acquire(options));
  await h.settle();
  if (t.status === "rejected") throw t.error;
  if (t.status !== "resolved") throw new Error(`acquire did not resolve without waiting (stats: ${JSON.stringify(h.pool.stats())})`);
  return t.value!;
}

/** `n` borrowers at once, all expected to get a lease without the clock moving. */
export async function hold(h: Harness, n: number): Promise<Lease<FakeHandle>[]> {
  const borrowers = Array.from({ length: n }, () => track(h.pool.acquire({ timeoutMs: 60_000 })));
  await h.settle();
  const waiting = borrowers.filter((b) => b.status !== "resolved").length;
  if (waiting > 0) throw new Error(`${waiting} of ${n} borrowers did not get a lease without waiting (stats: ${JSON.stringify(h.pool.stats())})`);
  return borrowers.map((b) => b.value!);
}

/** Runs the janitor at every deadline it asks for, as the alarm would, up to and including `until`. */
export async function runAlarms(h: Harness, until: number): Promise<void> {
  let next = h.pool.sweep();
  while (next !== undefined && next <= until) {
    await h.clock.advanceTo(next);
    next = h.pool.sweep();
  }
  await h.clock.advanceTo(until);
  h.pool.sweep();
  await h.settle();
}
