import { describe, expect, it } from "vitest";
import type { Lease } from "../../worker/pool/connection.ts";
import { Pool } from "../../worker/pool/pool.ts";
import { resolveOptions, type PoolOptions } from "../../worker/pool/options.ts";
import { PoolError } from "../../src/errors.ts";
import { FakeDriver, FatalError, ManualClock, flush, seeded, track, type FakeHandle, type Tracked } from "./helpers.ts";

interface Borrower {
  readonly id: number;
  /** A one-shot borrower: may be pipelined on a busy connection. */
  readonly shared: boolean;
  readonly calledAt: number;
  readonly deadline: number;
  readonly timeoutMs: number;
  readonly result: Tracked<Lease<FakeHandle>>;
}

interface Hold {
  readonly lease: Lease<FakeHandle>;
  readonly shared: boolean;
}

interface Query {
  readonly lease: Lease<FakeHandle>;
  readonly result: Tracked<number>;
  readonly endsAt: number;
}

/** More opens than this in one step (one operation plus at most 20 s of clock) is a runaway open/close loop. */
const STORM_OPENS = 100;

/** Error codes a borrower may legitimately get from acquire in this run. */
const ACQUIRE_CODES = new Set(["ACQUIRE_TIMEOUT", "WAIT_QUEUE_FULL", "CONNECT_FAILED", "POOL_CLOSED"]);

function randomOptions(rand: () => number): Record<string, unknown> {
  const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
  const maybe = <T>(p: number, a: T, b: T) => (rand() < p ? a : b);
  const maxConnections = int(1, 6);
  const maxIdle = maybe(0.5, maxConnections, int(0, maxConnections));
  return {
    maxConnections,
    minConnections: int(0, maxConnections),
    initialConnections: int(0, maxConnections + 1),
    maxIdle,
    minIdle: int(0, Math.min(2, maxIdle)),
    maxConcurrentConnects: int(1, 3),
    maxWaiters: int(0, 8),
    acquireTimeoutMs: int(50, 2000),
    idleTimeoutMs: maybe(0.2, 0, int(300, 5000)),
    maxLifetimeMs: maybe(0.2, 0, int(2000, 20_000)),
    maxUses: maybe(0.5, 0, int(1, 5)),
    reuseCooldownMs: maybe(0.6, 0, int(1, 200)),
    leaseTimeoutMs: int(500, 5000),
    connectTimeoutMs: int(100, 1000),
    validateAfterIdleMs: int(0, 3000),
    pipelineDepth: int(1, 4),
  };
}

/**
 * Drives one pool with a seeded random sequence of operations and failing fakes,
 * checking the invariants after every step. Returns a summary for sanity checks.
 */
async function run(seed: number, steps: number) {
  const rand = seeded(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
  const pick = <T>(items: readonly T[]): T | undefined => (items.length ? items[Math.floor(rand() * items.length)] : undefined);

  const clock = new ManualClock();
  const driver = new FakeDriver(clock);
  driver.openLimit = 20_000;
  const input = randomOptions(rand);
  const options: PoolOptions = resolveOptions("fuzz", input);
  let alarm: number | undefined;
  const pool = new Pool<FakeHandle>({
    tenant: "fuzz",
    options,
    driver,
    clock,
    random: seeded(seed ^ 0x5eed),
    schedule: (at) => (alarm = at),
  });

  const borrowers: Borrower[] = [];
  /** Borrowers whose acquire has not been looked at since it settled. */
  let unsettled: Borrower[] = [];
  /** Grants still held: one per borrower (a shared lease appears once per holder); pruned when given back or ended. */
  let holding: Hold[] = [];
  /** Grants whose lease ended (reclaimed or lost) before the borrower gave it back. */
  let endedUnreleased = 0;
  let handedOut = 0;
  let timeoutsSeen = 0;
  let queueFullSeen = 0;
  let queries: Query[] = [];
  const log: string[] = [];
  let nextBorrower = 1;
  let sweeps = 0;

  const fail = (message: string): never => {
    throw new Error(`seed ${seed}, options ${JSON.stringify(input)}\n${message}\nstats: ${JSON.stringify(pool.stats())}\nlast steps:\n${log.slice(-(Number(process.env.FUZZ_LOG) || 25)).join("\n")}`);
  };

  /** Moves time, running the janitor whenever the alarm the pool asked for falls due (like the Durable Object). */
  const advance = async (ms: number) => {
    const target = clock.now() + ms;
    while (alarm !== undefined && alarm <= target) {
      await clock.advanceTo(Math.max(alarm, clock.now()));
      alarm = undefined;
      sweeps++;
      pool.sweep();
      await flush();
    }
    await clock.advanceTo(target);
  };

  /** Leases whose borrower walked away: never used or released again. */
  const abandoned = new Set<Hold>();
  const heldLeases = () => holding.filter((h) => h.lease.state === "active" && !abandoned.has(h));
  const idleLeases = () => heldLeases().filter((h) => h.lease.inflight === 0);
  /** The borrower gives its grant back (once; a session lease is also released twice now and then, which must change nothing). */
  const giveBack = (hold: Hold, reset?: boolean) => {
    holding = holding.filter((h) => h !== hold);
    pool.release(hold.lease, reset === undefined ? {} : { reset });
    if (!hold.shared && rand() < 0.1) pool.release(hold.lease);
  };

  const check = () => {
    const s = pool.stats();
    const now = clock.now();
    if (s.total > options.maxConnections) fail(`total ${s.total} > maxConnections ${options.maxConnections}`);
    if (s.opening > options.maxConcurrentConnects) fail(`opening ${s.opening} > maxConcurrentConnects ${options.maxConcurrentConnects}`);
    if (driver.live.size > options.maxConnections) fail(`driver holds ${driver.live.size} connections > maxConnections`);
    // The driver's side: attempts still pending (the pool aborts the ones it gave up on).
    if (driver.pendingOpens.size > options.maxConcurrentConnects) fail(`${driver.pendingOpens.size} opens in flight at the driver > maxConcurrentConnects ${options.maxConcurrentConnects}`);
    if (driver.runaway) fail(`open/close storm: ${driver.opens} opens`);

    // Every borrower settles by its deadline; a granted one becomes a lease we hold.
    const still: Borrower[] = [];
    for (const b of unsettled) {
      const { status } = b.result;
      if (status === "pending") {
        if (now >= b.deadline) fail(`borrower ${b.id} still pending at ${now}, deadline ${b.deadline}: lost waiter`);
        still.push(b);
      } else if (status === "resolved") {
        const lease = b.result.value!;
        handedOut++;
        holding.push({ lease, shared: b.shared });
        if (lease.acquiredAt > b.deadline) fail(`borrower ${b.id} got lease ${lease.id} at ${lease.acquiredAt}, after its deadline ${b.deadline}`);
        // A one-shot may have ridden on a lease granted to another borrower: the lease's times are that one's.
        if (!b.shared && lease.waitedMs !== lease.acquiredAt - b.calledAt) fail(`lease ${lease.id} waitedMs ${lease.waitedMs} != ${lease.acquiredAt - b.calledAt}`);
      } else {
        const e = b.result.error;
        if (!(e instanceof PoolError) || !ACQUIRE_CODES.has(e.code)) fail(`borrower ${b.id} rejected with ${String(e)}`);
        if (b.result.code === "ACQUIRE_TIMEOUT") timeoutsSeen++;
        if (b.result.code === "WAIT_QUEUE_FULL") queueFullSeen++;
      }
    }
    unsettled = still;

    // No connection on two leases, and a session lease on one borrower only: only one-shot borrowers share a lease
    // (pipelining), at most pipelineDepth of them. Every active lease sits on a leased, healthy, open connection.
    holding = holding.filter((h) => h.lease.state === "active" || (endedUnreleased++, false));
    const byConnection = new Map<number, Hold[]>();
    for (const hold of holding) {
      const c = hold.lease.connection;
      byConnection.set(c.id, [...(byConnection.get(c.id) ?? []), hold]);
    }
    for (const [id, holds] of byConnection) {
      const lease = holds[0]!.lease;
      if (holds.some((h) => h.lease !== lease)) fail(`connection ${id} is held by leases ${holds.map((h) => h.lease.id).join(", ")}`);
      if (holds.length > 1 && holds.some((h) => !h.shared)) fail(`session lease ${lease.id} on connection ${id} shared by ${holds.length} borrowers`);
      if (holds.length > options.pipelineDepth) fail(`connection ${id} carries ${holds.length} borrowers > pipelineDepth ${options.pipelineDepth}`);
      if (lease.holders !== holds.length) fail(`lease ${lease.id} counts ${lease.holders} holders, borrowers hold it ${holds.length} times`);
      const c = lease.connection;
      if (c.state !== "leased") fail(`active lease ${lease.id} on connection ${c.id} in state ${c.state}`);
      if (c.lease !== lease) fail(`connection ${c.id} does not point back at its active lease ${lease.id}`);
      if (c.broken) fail(`active lease ${lease.id} on broken connection ${c.id}`);
      if (!driver.live.has(c.handle!.id)) fail(`active lease ${lease.id} on closed handle ${c.handle!.id}`);
    }

    // Counters agree with what the borrowers hold and with the driver's side.
    const active = holding.length;
    if (s.acquired - s.released - endedUnreleased !== active) {
      fail(`acquired ${s.acquired} - released ${s.released} - grants ended before release ${endedUnreleased} != grants held ${active}`);
    }
    if (s.acquired !== handedOut) fail(`acquired ${s.acquired} != leases handed out ${handedOut}`);
    if (byConnection.size > s.leased) fail(`${byConnection.size} connections held but stats.leased ${s.leased}`);
    const closedSum = Object.values(s.closed).reduce((a, b) => a + b, 0);
    if (s.created - closedSum !== driver.live.size) fail(`created ${s.created} - closed ${closedSum} != driver live ${driver.live.size}`);
    if (s.waiting > unsettled.length) fail(`stats.waiting ${s.waiting} > pending borrowers ${unsettled.length}`);
    if (s.timeouts !== timeoutsSeen) fail(`timeouts ${s.timeouts} != ACQUIRE_TIMEOUT rejections ${timeoutsSeen}`);
    if (s.waitQueueFull !== queueFullSeen) fail(`waitQueueFull ${s.waitQueueFull} != WAIT_QUEUE_FULL rejections ${queueFullSeen}`);

    queries = queries.filter((q) => {
      if (q.result.status !== "pending") return false;
      if (now >= q.endsAt) fail(`query on lease ${q.lease.id} still pending after its end`);
      return true;
    });
  };

  await flush();
  check();
  // Even seeds drain while the sequence is still running (opens, resets, validations under way).
  const drainAt = seed % 2 === 0 ? int(Math.floor(steps * 0.8), steps - 1) : steps;
  let drained: Tracked<void> | undefined;
  let borrowersBeforeDrain = Number.POSITIVE_INFINITY;
  let maxOpensPerStep = 0;
  for (let step = 0; step < steps; step++) {
    const opensBefore = driver.opens;
    if (step === drainAt) {
      drained = track(pool.drain());
      borrowersBeforeDrain = borrowers.length;
      log.push(`${clock.now()} drain (mid-run)`);
    }
    const r = rand();
    if (r < 0.25) {
      const useDefault = rand() < 0.3;
      const timeoutMs = useDefault ? options.acquireTimeoutMs : int(0, 3000);
      const shared = rand() < 0.4;
      const b: Borrower = {
        id: nextBorrower++,
        shared,
        calledAt: clock.now(),
        timeoutMs,
        deadline: clock.now() + timeoutMs,
        result: track(pool.acquire(useDefault ? { shared } : { timeoutMs, shared })),
      };
      borrowers.push(b);
      unsettled.push(b);
      log.push(`${clock.now()} acquire #${b.id} timeout ${timeoutMs}${useDefault ? " (default)" : ""}${shared ? " shared" : ""}`);
    } else if (r < 0.42) {
      const hold = pick(idleLeases());
      if (hold) {
        const reset = rand() < 0.7;
        log.push(`${clock.now()} release lease ${hold.lease.id} (conn ${hold.lease.connection.id}) reset=${reset}`);
        giveBack(hold, reset);
      }
    } else if (r < 0.55) {
      const lease = pick(heldLeases())?.lease;
      if (lease) {
        const delay = int(0, 400);
        const kind = rand();
        const expected = lease.connection.handle!.id;
        const result = track(
          pool.use(lease, (handle) => {
            if (handle.id !== expected) fail(`lease ${lease.id} ran on handle ${handle.id}, expected ${expected}`);
            if (!driver.live.has(handle.id)) fail(`lease ${lease.id} ran a query on closed handle ${handle.id}`);
            return new Promise<number>((resolve, reject) =>
              clock.setTimer(() => {
                if (kind < 0.1) reject(new FatalError("server closed the connection unexpectedly"));
                else if (kind < 0.2) reject(new Error("syntax error"));
                else resolve(handle.id);
              }, delay),
            );
          }),
        );
        queries.push({ lease, result, endsAt: clock.now() + delay });
        log.push(`${clock.now()} use lease ${lease.id} for ${delay}ms kind=${kind.toFixed(2)}`);
      }
    } else if (r < 0.58) {
      const id = pick([...driver.live]);
      if (id !== undefined) {
        log.push(`${clock.now()} markBroken handle ${id}`);
        pool.markBroken(driver.openedHandles[id - 1]!);
      }
    } else if (r < 0.62) {
      log.push(`${clock.now()} extra sweep`);
      sweeps++;
      pool.sweep();
    } else if (r < 0.7) {
      const k = rand();
      const behaviour =
        k < 0.4 ? ({ kind: "fail", delayMs: int(0, 300) } as const)
        : k < 0.6 ? ({ kind: "hang" } as const)
        : ({ kind: "ok", delayMs: int(0, 1500) } as const);
      driver.openPlan.push(behaviour);
      log.push(`${clock.now()} next open: ${JSON.stringify(behaviour)}`);
    } else if (r < 0.73) {
      const id = pick([...driver.live]);
      if (id !== undefined) {
        driver.dead.add(id);
        log.push(`${clock.now()} handle ${id} dies (validate fails)`);
      }
    } else if (r < 0.75) {
      const id = pick([...driver.live]);
      if (id !== undefined) {
        driver.resetFailsFor.add(id);
        log.push(`${clock.now()} reset fails on handle ${id}`);
      }
    } else if (r < 0.77) {
      driver.validateDelayMs = int(0, 200);
      driver.resetDelayMs = int(0, 100);
      driver.closeDelayMs = int(0, 100);
      log.push(`${clock.now()} delays validate=${driver.validateDelayMs} reset=${driver.resetDelayMs} close=${driver.closeDelayMs}`);
    } else if (r < 0.79) {
      // The borrower walks away without releasing: only leaseTimeoutMs can reclaim it.
      const hold = pick(idleLeases());
      if (hold) {
        abandoned.add(hold);
        log.push(`${clock.now()} abandon lease ${hold.lease.id}`);
      }
    } else {
      const ms = rand() < 0.1 ? int(1000, 20_000) : int(0, 300);
      log.push(`${clock.now()} advance ${ms}`);
      await advance(ms);
    }
    // Timers already due (a 0ms acquire timeout, a 0ms open delay) fire before anyone looks.
    await advance(0);
    maxOpensPerStep = Math.max(maxOpensPerStep, driver.opens - opensBefore);
    if (driver.opens - opensBefore > STORM_OPENS) fail(`open/close storm: ${driver.opens - opensBefore} opens in one step`);
    check();
  }

  // Borrowers give everything back; the pool drains.
  await advance(2000);
  check();
  for (const hold of idleLeases()) giveBack(hold);
  await flush();
  check();
  if (!drained) {
    drained = track(pool.drain());
    log.push(`${clock.now()} drain`);
  }
  for (let i = 0; i < 40 && drained.status === "pending"; i++) {
    await advance(1000);
    for (const hold of idleLeases()) giveBack(hold);
    await flush();
    check();
  }
  await advance(options.leaseTimeoutMs + 1000);
  check();
  if (drained.status !== "resolved") fail(`drain did not finish: ${JSON.stringify(pool.stats())}`);
  const s = pool.stats();
  if (s.total !== 0 || driver.live.size !== 0) fail(`after drain total=${s.total}, driver live=${driver.live.size}`);
  if (borrowers.some((b) => b.result.status === "pending")) fail("a borrower is still pending after drain");
  if (borrowers.slice(borrowersBeforeDrain).some((b) => b.result.code !== "POOL_CLOSED")) fail("an acquire after drain did not fail with POOL_CLOSED");

  return {
    acquired: s.acquired,
    timeouts: s.timeouts,
    connectFailures: s.connectFailures,
    leasesExpired: s.leasesExpired,
    leasesLost: s.leasesLost,
    pipelined: s.pipelined,
    pipelineDepth: options.pipelineDepth,
    borrowers: borrowers.length,
    maxOpensPerStep,
    sweeps,
  };
}

describe("randomized sequences", () => {
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    it(`seed ${seed}: invariants hold after every one of 2000 steps (max, concurrency, one borrower per connection, no lost waiter, counters)`, async () => {
      const summary = await run(seed, 2000);
      // The run must have exercised the pool, or it proves nothing.
      expect(summary.borrowers).toBeGreaterThan(400);
      expect(summary.acquired).toBeGreaterThan(50);
      expect(summary.sweeps).toBeGreaterThan(10);
      if (summary.pipelineDepth > 1) expect(summary.pipelined).toBeGreaterThan(0);
    });
  }

  it("the same seed gives the same run", async () => {
    expect(await run(7, 400)).toEqual(await run(7, 400));
  });
});
