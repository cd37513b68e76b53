// The budget object at scale, simulated (bench/scale-sim.ts): many pools' BudgetLinks
// (worker/budget/link.ts, unchanged, with their real timers) on one manual clock, talking to a
// budget that counts every message; and the object's bookkeeping for many holders.
import { allocate, type BudgetReport, type Grant, type Holding } from "../../worker/budget/allocate.ts";
import { BudgetLink } from "../../worker/budget/link.ts";
import { HeapClock } from "./heap-clock.ts";

/** What a tenant's pool reports over time: `start` once, then `tick` at its own times (the model of the pool's reports). */
export interface Scenario {
  name: string;
  /** What the pools report, in words (for the results). */
  what: string;
  /** The budget's maxConnections. */
  maxConnections: (tenants: number) => number;
  /** The budget cannot grant every demand (CountingBudget then caps grants at the equal share). */
  short?: boolean;
  /** Tenants start at random offsets within this long (1 s unless said); messages count from a second after. */
  spreadMs?: number;
  /** Called once per tenant at its start. */
  start: (pool: PoolModel, random: () => number) => void;
}

/** A tenant's pool as the link sees it: what it holds and wants, following its grant as the pool core does. */
export class PoolModel {
  readonly link: BudgetLink;
  readonly clock: HeapClock;
  held = 0;
  wanted = 0;
  /** Connections it would hold: its borrowers, or idle ones it keeps (not reaped yet, or a floor). */
  private target = 0;

  constructor(link: BudgetLink, clock: HeapClock) {
    this.link = link;
    this.clock = clock;
    // The pool's pump after each answer: open up to its target within the limit, shed above the limit.
    link.attach(() => this.follow());
  }

  /** Demand changes (borrowers come or go, `keep` idle connections stay open); the pool reports what it then holds and wants. */
  want(wanted: number, keep = 0): void {
    this.wanted = wanted;
    this.target = Math.max(wanted, keep);
    this.held = Math.min(this.target, this.link.limit());
    this.link.report(this.held, this.wanted);
  }

  private follow(): void {
    const held = Math.min(this.target, this.link.limit());
    if (held === this.held) return;
    this.held = held;
    this.link.report(this.held, this.wanted);
  }
}

/**
 * A budget with the object's rule (worker/budget/object.ts `lease`): holdings by holder, a holder
 * reporting nothing held or wanted is dropped. With room for every demand the grant is allocate()'s
 * (no holder starves, so a holder gets max(wanted, held) within what is free); a `short` budget
 * caps each grant at the equal share instead (allocate()'s fair target when demands are equal),
 * which keeps 10,000 holders cheap to simulate. Answers after `rttMs` on the simulated clock.
 */
export class CountingBudget {
  messages = 0;
  /** Messages at or after this time count towards the rate. */
  countFrom = 0;
  counted = 0;
  private readonly holdings = new Map<string, { occupied: number; wanted: number }>();
  private used = 0;
  private demanding = 0;
  private readonly maxConnections: number;
  private readonly clock: HeapClock;
  private readonly rttMs: number;
  private readonly leaseTtlMs: number;

  private readonly short: boolean;

  constructor(maxConnections: number, clock: HeapClock, options: { short?: boolean; rttMs?: number; leaseTtlMs?: number } = {}) {
    const { short = false, rttMs = 5, leaseTtlMs = 30_000 } = options;
    this.maxConnections = maxConnections;
    this.short = short;
    this.clock = clock;
    this.rttMs = rttMs;
    this.leaseTtlMs = leaseTtlMs;
  }

  readonly call = (report: BudgetReport): Promise<Grant> => {
    this.messages++;
    if (this.clock.now() >= this.countFrom) this.counted++;
    const before = this.holdings.get(report.holder);
    if (before) {
      this.used -= before.occupied;
      if (before.wanted > 0) this.demanding--;
    }
    const share = Math.floor(this.maxConnections / Math.max(1, this.demanding + (report.wanted > 0 ? 1 : 0)));
    const free = Math.max(0, this.maxConnections - this.used);
    const cap = this.short ? Math.min(report.wanted, share) : Math.max(report.wanted, report.held);
    const granted = Math.max(0, Math.min(cap, free));
    if (report.held === 0 && report.wanted === 0) {
      this.holdings.delete(report.holder);
    } else {
      const occupied = Math.max(granted, report.held);
      this.holdings.set(report.holder, { occupied, wanted: report.wanted });
      this.used += occupied;
      if (report.wanted > 0) this.demanding++;
    }
    const grant: Grant = { granted, maxConnections: this.maxConnections, share, holders: this.demanding, used: this.used, leaseTtlMs: this.leaseTtlMs };
    return new Promise((resolve) => this.clock.setTimer(() => resolve(grant), this.rttMs));
  };

  /** Holders the budget keeps now. */
  get holders(): number {
    return this.holdings.size;
  }
}

/** A busy pool: its borrowers change every 100 ms (0–4, uniform); `keep` connections stay open when they leave. */
function busy(keep: number): Scenario["start"] {
  return (pool, random) => {
    const step = () => {
      pool.want(Math.floor(random() * 5), keep);
      pool.clock.setTimer(step, 100);
    };
    step();
  };
}

/** The link scenarios of bench/scale-sim.ts. */
export const SCENARIOS: Scenario[] = [
  {
    name: "idle, no connections",
    what: "each pool reports once that it holds and wants nothing (a configured tenant between requests, connections reaped)",
    maxConnections: (n) => n * 10,
    start: (pool) => pool.want(0),
  },
  {
    name: "idle, 2 idle connections kept",
    what: "each pool has 2 borrowers for 0.5 s, then keeps their 2 connections idle and wants none (until its idleTimeoutMs reaps them; or a floor of minConnections 2)",
    maxConnections: (n) => n * 10,
    start: (pool) => {
      pool.want(2);
      pool.clock.setTimer(() => pool.want(0, 2), 500);
    },
  },
  {
    name: "busy, budget with room",
    what: "each pool's borrowers change every 100 ms (0–4, uniform), connections follow at once (opened and closed: the worst case); the budget can grant every demand",
    maxConnections: (n) => n * 10,
    start: busy(0),
  },
  {
    name: "busy, idle connections kept",
    what: "as busy with room, but, as a pool does until its idleTimeoutMs, connections stay open when borrowers leave (held stays at the peak, 4)",
    maxConnections: (n) => n * 10,
    start: busy(4),
  },
  {
    name: "busy, budget short",
    what: "as busy, but the budget's maxConnections is one per tenant: most pools want more than they are granted",
    maxConnections: (n) => n,
    short: true,
    start: busy(0),
  },
  {
    name: "churn",
    what: "each tenant every 5 s (own phase) gets requests for 1 s: wants 1 connection, then keeps it idle 1 s, then holds nothing",
    maxConnections: (n) => n * 10,
    spreadMs: 5_000,
    start: (pool) => {
      const cycle = () => {
        pool.want(1);
        pool.clock.setTimer(() => pool.want(0, 1), 1_000);
        pool.clock.setTimer(() => pool.want(0, 0), 2_000);
        pool.clock.setTimer(cycle, 5_000);
      };
      cycle();
    },
  },
];

export interface LinkSimResult {
  name: string;
  what: string;
  tenants: number;
  simSeconds: number;
  /** Messages from the links to the budget per second, counted once every tenant has started (a second after the last start). */
  messagesPerSecond: number;
  messages: number;
  /** Holders the budget kept at the end. */
  holdersAtEnd: number;
  /** Wall time the simulation took, ms. */
  wallMs: number;
}

/** Runs one scenario: `tenants` links on one clock for `seconds` simulated seconds, counting their calls. */
export async function simulateLinks(scenario: Scenario, tenants: number, seconds: number, random: () => number): Promise<LinkSimResult> {
  const wall = performance.now();
  const clock = new HeapClock(0);
  const budget = new CountingBudget(scenario.maxConnections(tenants), clock, { short: scenario.short });
  // Every tenant has started by `spread`; its first transitions are over a second later.
  const spread = scenario.spreadMs ?? 1_000;
  budget.countFrom = spread + 1_000;
  for (let i = 0; i < tenants; i++) {
    const link = new BudgetLink({ budget: "sim", tenant: `t${i}`, holder: `t${i}:0`, clock, call: budget.call });
    const pool = new PoolModel(link, clock);
    clock.setTimer(() => scenario.start(pool, random), Math.floor(random() * spread));
  }
  if (seconds * 1_000 <= budget.countFrom) throw new Error(`scenario "${scenario.name}" needs more than ${budget.countFrom / 1_000} simulated seconds`);
  await clock.advanceTo(seconds * 1_000);
  return {
    name: scenario.name,
    what: scenario.what,
    tenants,
    simSeconds: seconds,
    messagesPerSecond: budget.counted / (seconds - budget.countFrom / 1_000),
    messages: budget.messages,
    holdersAtEnd: budget.holders,
    wallMs: performance.now() - wall,
  };
}

/** The budget object's holdings for `holders` holders, as worker/budget/object.ts keeps them in memory. */
export function holdings(holders: number, now: number): Map<string, Holding> {
  const map = new Map<string, Holding>();
  for (let i = 0; i < holders; i++) {
    // A holder id as the coordinator makes it: tenant + ":" + a UUID.
    const holder = `tenant-${i}:${crypto.randomUUID()}`;
    map.set(holder, { holder, tenant: `tenant-${i}`, held: 2, wanted: 1, granted: 2, expiresAt: now + 30_000 });
  }
  return map;
}

/**
 * One message's work in the budget object at this size, less its storage write: expire, collect
 * the others, allocate() (worker/budget/object.ts `lease`). Returns the new holding.
 */
export function grantOnce(map: Map<string, Holding>, maxConnections: number, report: BudgetReport, now: number): Holding {
  for (const [holder, h] of map) if (h.expiresAt <= now) map.delete(holder);
  const others = [...map.values()].filter((h) => h.holder !== report.holder);
  const { holding } = allocate(maxConnections, others, report, now, 30_000);
  map.set(holding.holder, holding);
  return holding;
}
