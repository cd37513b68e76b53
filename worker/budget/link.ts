import type { Capacity } from "../pool/capacity.ts";
import { within, type Clock } from "../pool/clock.ts";
import type { BudgetReport, Grant } from "./allocate.ts";
import { DEFAULT_LEASE_TTL_MS } from "./config.ts";

/** Asks the budget object for a grant (an RPC to the `Budget` Durable Object in production, a fake in tests). */
export type BudgetCall = (report: BudgetReport) => Promise<Grant>;

/** What a budget link needs from its host. */
export interface BudgetLinkDeps {
  budget: string;
  tenant: string;
  /** Which of the tenant's shards this pool serves (0 or absent: the tenant's own coordinator). */
  shard?: number;
  /** This pool instance's identity in the budget (a new one per coordinator start and per config change). */
  holder: string;
  clock: Clock;
  call: BudgetCall;
}

/** Least time between two reports that only change the numbers. */
export const REPORT_GAP_MS = 50;
/** How often a pool that wants more than it was granted asks again (while that may get it more). */
export const RETRY_MS = 200;
/** A holder renews at least this often while it holds or wants anything in a contended budget, so a newcomer gets its fair share within about this long. */
export const RENEW_MS = 1_000;
/** How often it renews while the budget is not contended (a newcomer finds a quarter of it free at least); at most a third of the TTL. */
export const QUIET_RENEW_MS = 10_000;
/** A budget is contended once this share of it is counted: holders then renew every `RENEW_MS` and give back what they do not use at once. */
export const CONTENDED = 0.75;
/** Wait after a failed call before the next. */
export const FAILURE_RETRY_MS = 1_000;
/** A call not answered within this long counts as failed: one that never answers must not stop the renewals for good. */
export const CALL_TIMEOUT_MS = 5_000;
/** The pool treats its grant as over this long (a tenth of the TTL at most) before the budget does, so its sockets are closed by then. */
export const EXPIRY_MARGIN_MS = 1_000;

/**
 * A pool's side of a connection budget (the pool core's `Capacity`): borrows
 * before the pool grows, gives back when it shrinks, renews its lease while
 * holding anything — every second while the budget is contended, every 10 s
 * (a third of the TTL at most) while it is not. Safe under failures: while a call
 * is out the limit is frozen at what the pool holds, a failed call grants
 * nothing new, and a lease not renewed in time drops the limit to 0 and
 * lapses (counted from when the call was sent, less `EXPIRY_MARGIN_MS`, so it
 * ends before the budget's own expiry): the pool then closes its connections,
 * leased ones included, before the budget can give them to others.
 */
export class BudgetLink implements Capacity {
  private readonly deps: BudgetLinkDeps;
  private granted = 0;
  private expiresAt = 0;
  private last: Grant | undefined;
  private lastError = "";
  private held = 0;
  private wanted = 0;
  private sentHeld = 0;
  private sentWanted = 0;
  /** The budget keeps a holding for this holder (it was told of something held or wanted). */
  private registered = false;
  private inflight = false;
  private lastSentAt = Number.NEGATIVE_INFINITY;
  private failedAt = Number.NEGATIVE_INFINITY;
  /** The last call failed. */
  private failed = false;
  private timer: unknown;
  private timerAt = Number.POSITIVE_INFINITY;
  private changed: () => void = () => {};

  constructor(deps: BudgetLinkDeps) {
    this.deps = deps;
  }

  attach(changed: () => void): void {
    this.changed = changed;
  }

  /** The grant ran out without a renewal (the budget could not be reached): the pool closes what it holds above 0, leased connections too. */
  lapsed(): boolean {
    return this.expiresAt > 0 && this.deps.clock.now() >= this.expiresAt;
  }

  limit(): number {
    if (this.deps.clock.now() >= this.expiresAt) return 0;
    // While a call is out, at most what the pool held when it was sent.
    return this.inflight ? Math.min(this.granted, this.sentHeld) : this.granted;
  }

  report(held: number, wanted: number): void {
    this.held = held;
    this.wanted = wanted;
    this.plan();
  }

  describe(): string {
    const name = `budget "${this.deps.budget}"`;
    if (this.failed) {
      return `${name} was the limit: it gave no grant (${this.lastError}), so no new connection opens`;
    }
    const g = this.last;
    if (!g) return `${name} was the limit: no grant yet`;
    return `${name} was the limit: granted ${this.limit()} of its maxConnections=${g.maxConnections} (fair share ${g.share} among ${g.holders} tenants with demand, used=${g.used})`;
  }

  /**
   * Sets the timer for the next call: soon when the numbers moved in a way
   * the budget must hear (more that may be granted, a give-back others may
   * need, more held than granted), every RETRY_MS while asking may get more,
   * else a renewal (every RENEW_MS in a contended budget, QUIET_RENEW_MS in
   * one with room; a third of the TTL at most).
   */
  private plan(): void {
    if (this.inflight) return;
    const { held, wanted, granted } = this;
    if (!this.registered && held === 0 && wanted === 0) return;
    // Nothing held or wanted, the budget unreachable, and the grant past its end: the budget has dropped this holder by now
    // (its copy of the lease ends after this one), so there is nothing left to give back — stop calling (a deleted budget would be called forever).
    if (held === 0 && wanted === 0 && this.failed && this.deps.clock.now() >= this.expiresAt) {
      this.registered = false;
      return;
    }
    const moved = held !== this.sentHeld || wanted !== this.sentWanted;
    const short = wanted > granted;
    const surplus = granted > Math.max(held, wanted);
    let at: number;
    const contended = this.contended();
    // Short, but at its fair share of a full budget: asking again gets nothing until a renewal shows a change.
    const canGrow = short && this.canGrow();
    // A surplus goes back at once in a contended budget, and always when the pool gives back everything (it leaves the budget).
    const giveBack = surplus && (contended || (held === 0 && wanted === 0));
    if (this.failed) at = this.failedAt + FAILURE_RETRY_MS;
    else if (moved && (canGrow || giveBack || held > granted)) at = this.lastSentAt + REPORT_GAP_MS;
    else if (canGrow) at = this.lastSentAt + RETRY_MS;
    else at = this.lastSentAt + Math.min(contended ? RENEW_MS : QUIET_RENEW_MS, Math.floor((this.last?.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS) / 3));
    // Past the lease's end the pool must shed: wake it then.
    if (granted > 0 && this.expiresAt > 0) at = Math.min(at, this.expiresAt);
    this.arm(at);
  }

  /** Whether the last grant found the budget contended (or there is none yet): then others may be waiting for what this pool holds. */
  private contended(): boolean {
    const g = this.last;
    return !g || g.used >= g.maxConnections * CONTENDED;
  }

  /** Whether asking for more may get more: no grant yet, below the fair share, or the budget had room. */
  private canGrow(): boolean {
    const g = this.last;
    return !g || this.granted < g.share || g.used < g.maxConnections;
  }

  private arm(at: number): void {
    const now = this.deps.clock.now();
    if (this.timer !== undefined && this.timerAt <= at) return;
    if (this.timer !== undefined) this.deps.clock.clearTimer(this.timer);
    this.timerAt = at;
    this.timer = this.deps.clock.setTimer(() => {
      this.timer = undefined;
      this.timerAt = Number.POSITIVE_INFINITY;
      this.due();
    }, Math.max(0, at - now));
  }

  private due(): void {
    const now = this.deps.clock.now();
    if (this.granted > 0 && now >= this.expiresAt) {
      this.granted = 0;
      this.changed();
    }
    if (this.inflight) return;
    if (this.failed ? now < this.failedAt + FAILURE_RETRY_MS : now < this.lastSentAt + REPORT_GAP_MS) return this.plan();
    this.send();
  }

  private send(): void {
    const { held, wanted } = this;
    const sentAt = this.deps.clock.now();
    this.inflight = true;
    this.lastSentAt = sentAt;
    this.sentHeld = held;
    this.sentWanted = wanted;
    const call = Promise.resolve().then(() => this.deps.call({ holder: this.deps.holder, tenant: this.deps.tenant, ...(this.deps.shard ? { shard: this.deps.shard } : {}), held, wanted }));
    // A late answer is dropped: the budget then counts more for this holder than it uses, never less.
    within(this.deps.clock, call, CALL_TIMEOUT_MS, `the budget did not answer within ${CALL_TIMEOUT_MS} ms`)
      .then(
        (grant) => {
          this.last = grant;
          this.lastError = "";
          this.failed = false;
          this.granted = grant.granted;
          this.expiresAt = sentAt + grant.leaseTtlMs - Math.min(EXPIRY_MARGIN_MS, Math.floor(grant.leaseTtlMs / 10));
          this.registered = held > 0 || wanted > 0 || grant.granted > 0;
        },
        (error: unknown) => {
          this.failed = true;
          this.failedAt = this.deps.clock.now();
          this.lastError = error instanceof Error ? error.message : String(error);
          // No grant, no new connection: keep at most what was held when the call went out.
          this.granted = Math.min(this.granted, held);
        },
      )
      .finally(() => {
        this.inflight = false;
        this.changed();
        this.plan();
      });
  }
}
