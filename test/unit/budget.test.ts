import { describe, expect, it } from "vitest";
import { allocate, fairTargets, occupied, type BudgetReport, type Grant, type Holding } from "../../worker/budget/allocate.ts";
import { BudgetLink, CALL_TIMEOUT_MS, FAILURE_RETRY_MS } from "../../worker/budget/link.ts";
import type { Clock } from "../../worker/pool/clock.ts";
import type { Lease } from "../../worker/pool/connection.ts";
import { resolveOptions } from "../../worker/pool/options.ts";
import { Pool } from "../../worker/pool/pool.ts";
import { FakeDriver, ManualClock, rejection, seeded, track, type FakeHandle } from "./helpers.ts";

/** The budget object's bookkeeping (the real allocator) without the Durable Object, on the manual clock. */
class FakeBudget {
  readonly holdings = new Map<string, Holding>();
  reachable = true;
  /** Tenants whose coordinators cannot reach the budget (a partition), while others can. */
  readonly cutOff = new Set<string>();
  /** Calls get no answer at all (a hung RPC), while set. */
  hanging = false;
  calls = 0;
  constructor(readonly clock: ManualClock, readonly maxConnections: number, readonly leaseTtlMs = 30_000) {}

  readonly call = async (report: BudgetReport): Promise<Grant> => {
    this.calls++;
    if (this.hanging) return new Promise<Grant>(() => {});
    if (!this.reachable || this.cutOff.has(report.tenant)) throw new Error("budget unreachable");
    const now = this.clock.now();
    for (const [k, h] of this.holdings) if (h.expiresAt <= now) this.holdings.delete(k);
    const others = [...this.holdings.values()].filter((h) => h.holder !== report.holder);
    const { holding, grant } = allocate(this.maxConnections, others, report, now, this.leaseTtlMs);
    if (holding.held === 0 && holding.wanted === 0) this.holdings.delete(holding.holder);
    else this.holdings.set(holding.holder, holding);
    return grant;
  };

  get used(): number {
    return [...this.holdings.values()].reduce((sum, h) => sum + occupied(h), 0);
  }
}

interface Member {
  /** The coordinator vanished (reset, evicted): none of its timers fire any more. */
  dead: boolean;
  tenant: string;
  pool: Pool<FakeHandle>;
  driver: FakeDriver;
  link: BudgetLink;
}

function member(budget: FakeBudget, tenant: string, input: Record<string, unknown> = {}): Member {
  const manual = budget.clock;
  const driver = new FakeDriver(manual);
  const m = { dead: false, tenant } as Member;
  const clock: Clock = {
    now: () => manual.now(),
    setTimer: (fn, ms) => manual.setTimer(() => m.dead || fn(), ms),
    clearTimer: (timer) => manual.clearTimer(timer),
  };
  const link = new BudgetLink({ budget: "db1", tenant, holder: `${tenant}:1`, clock, call: budget.call });
  const pool = new Pool<FakeHandle>({ tenant, options: resolveOptions(tenant, { validateAfterIdleMs: 600_000, ...input }), driver, clock, random: () => 0, capacity: link });
  return Object.assign(m, { pool, driver, link });
}

/** Connections the server would see: opened and not closed, plus attempts in flight. */
function onServer(members: Member[]): number {
  return members.reduce((sum, m) => sum + m.driver.live.size + m.driver.inFlight, 0);
}

describe("budget: fair targets", () => {
  it("max-min fair: small demands are met, the rest split evenly, never above the budget", () => {
    expect(fairTargets(10, [5, 5, 5])).toEqual([3, 3, 4]);
    expect(fairTargets(10, [1, 100, 100])).toEqual([1, 4, 5]);
    expect(fairTargets(40, Array(20).fill(10)).every((t) => t === 2)).toBe(true);
    expect(fairTargets(4, [0, 10])).toEqual([0, 4]);
    const random = seeded(7);
    for (let i = 0; i < 200; i++) {
      const wants = Array.from({ length: 1 + Math.floor(random() * 30) }, () => Math.floor(random() * 12));
      const max = Math.floor(random() * 60);
      const targets = fairTargets(max, wants);
      expect(targets.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(max);
      targets.forEach((t, k) => expect(t).toBeLessThanOrEqual(wants[k]!));
    }
  });

  it("a holder gets no more than what the others leave free, and only its target while another one starves", () => {
    const now = 0;
    const big: Holding = { holder: "a", tenant: "a", held: 8, wanted: 10, granted: 8, expiresAt: 30_000 };
    // Alone, b may take what a leaves free.
    expect(allocate(10, [big], { holder: "b", tenant: "b", held: 0, wanted: 10 }, now, 30_000).grant.granted).toBe(2);
    // a renews while b starves at 0 of its target 5: a is cut to its target.
    const starving: Holding = { holder: "b", tenant: "b", held: 0, wanted: 10, granted: 0, expiresAt: 30_000 };
    const a = allocate(10, [starving], { holder: "a", tenant: "a", held: 8, wanted: 10 }, now, 30_000);
    expect(a.grant.granted).toBe(5);
    // It still counts what it holds until it reports fewer.
    expect(occupied(a.holding)).toBe(8);
  });
});

describe("budget: pools borrow before they grow", () => {
  it("the sum of connections of every pool in a budget never exceeds it; each pool's demand is served", async () => {
    const clock = new ManualClock(0);
    const budget = new FakeBudget(clock, 6);
    const members = ["a", "b", "c"].map((t) => member(budget, t, { maxConnections: 5, acquireTimeoutMs: 60_000 }));
    const leases = members.map((m) => Array.from({ length: 5 }, () => track(m.pool.acquire())));
    let peak = 0;
    for (let step = 0; step < 40; step++) {
      await clock.advance(50);
      peak = Math.max(peak, onServer(members), budget.used);
      // Each borrower gives its connection back once it got one: everybody's work completes.
      for (const [i, list] of leases.entries()) for (const l of list) if (l.status === "resolved" && l.value!.state === "active") members[i]!.pool.release(l.value!, { reset: false });
    }
    expect(peak).toBeLessThanOrEqual(6);
    expect(leases.flat().every((l) => l.status === "resolved")).toBe(true);
  });

  it("a pool at its budget limit waits in its queue and times out with ACQUIRE_TIMEOUT naming the budget and its numbers", async () => {
    const clock = new ManualClock(0);
    const budget = new FakeBudget(clock, 2);
    const a = member(budget, "a", { maxConnections: 5, acquireTimeoutMs: 1_000 });
    const held = [track(a.pool.acquire()), track(a.pool.acquire())];
    await clock.advance(10);
    expect(held.every((l) => l.status === "resolved")).toBe(true);
    const third = track(a.pool.acquire());
    await clock.advance(1_000);
    const error = await rejection(third.promise, "ACQUIRE_TIMEOUT");
    expect(error.message).toMatch(/budget "db1" was the limit: granted 2 of its maxConnections=2 \(fair share 2 among 1 tenants with demand, used=2\)/);
    expect(a.driver.opened).toBe(2);
  });

  it("a newcomer gets its fair share: pools above their share shed connections as they come back", async () => {
    const clock = new ManualClock(0);
    const budget = new FakeBudget(clock, 4);
    const a = member(budget, "a", { maxConnections: 4, acquireTimeoutMs: 60_000 });
    const aLeases = Array.from({ length: 4 }, () => track(a.pool.acquire()));
    await clock.advance(10);
    expect(a.driver.live.size).toBe(4);
    const b = member(budget, "b", { maxConnections: 4, acquireTimeoutMs: 60_000 });
    const bLeases = Array.from({ length: 4 }, () => track(b.pool.acquire()));
    await clock.advance(300);
    expect(bLeases.filter((l) => l.status === "resolved")).toHaveLength(0);
    // a keeps working (its borrowers return and borrow again), above its fair share of 2.
    let aActive = aLeases;
    let aServed = 0;
    for (let i = 0; i < 30; i++) {
      const next = aActive.filter((l) => l.status === "pending");
      for (const l of aActive) {
        if (l.status !== "resolved") continue;
        a.pool.release(l.value!, { reset: false });
        aServed++;
        next.push(track(a.pool.acquire()));
      }
      aActive = next;
      await clock.advance(100);
      expect(onServer([a, b])).toBeLessThanOrEqual(4);
    }
    expect(bLeases.filter((l) => l.status === "resolved")).toHaveLength(2);
    expect(b.driver.live.size).toBe(2);
    expect(a.driver.live.size).toBe(2);
    expect(aServed).toBeGreaterThan(20);
  });

  it("idle reaping gives capacity back to the budget", async () => {
    const clock = new ManualClock(0);
    const budget = new FakeBudget(clock, 4);
    const a = member(budget, "a", { maxConnections: 4, idleTimeoutMs: 1_000 });
    const leases = Array.from({ length: 3 }, () => track(a.pool.acquire()));
    await clock.advance(10);
    for (const l of leases) a.pool.release(l.value!, { reset: false });
    await clock.advance(10);
    expect(budget.used).toBe(3);
    await clock.advance(1_000);
    a.pool.sweep();
    await clock.advance(100);
    expect(a.driver.live.size).toBe(0);
    expect(budget.used).toBe(0);
    expect(budget.holdings.size).toBe(0);
  });

  it("minConnections is honoured only within the fair share", async () => {
    const clock = new ManualClock(0);
    const budget = new FakeBudget(clock, 4);
    const a = member(budget, "a", { maxConnections: 4, minConnections: 4, initialConnections: 4 });
    const b = member(budget, "b", { maxConnections: 4, minConnections: 4, initialConnections: 4 });
    for (let i = 0; i < 20; i++) {
      await clock.advance(100);
      expect(onServer([a, b])).toBeLessThanOrEqual(4);
    }
    expect(a.driver.live.size).toBe(2);
    expect(b.driver.live.size).toBe(2);
  });
});

describe("budget: leases of capacity", () => {
  it("an unreachable budget never lets a pool grow: no grant, no new connection; past the lease's TTL it sheds idle ones", async () => {
    const clock = new ManualClock(0);
    const budget = new FakeBudget(clock, 4, 10_000);
    const a = member(budget, "a", { maxConnections: 4, acquireTimeoutMs: 60_000, idleTimeoutMs: 0 });
    const first = track(a.pool.acquire());
    await clock.advance(10);
    a.pool.release(first.value!, { reset: false });
    await clock.advance(10);
    budget.reachable = false;
    const leases = Array.from({ length: 3 }, () => track(a.pool.acquire({ timeoutMs: 2_000 })));
    await clock.advance(5_000);
    expect(a.driver.opens).toBe(1);
    expect(leases.filter((l) => l.status === "resolved")).toHaveLength(1);
    const timedOut = leases.filter((l) => l.status === "rejected");
    expect(timedOut.map((l) => l.code)).toEqual(["ACQUIRE_TIMEOUT", "ACQUIRE_TIMEOUT"]);
    expect((timedOut[0]!.error as Error).message).toMatch(/budget "db1" was the limit: it gave no grant \(budget unreachable\), so no new connection opens/);
    for (const l of leases) if (l.status === "resolved") a.pool.release(l.value!, { reset: false });
    // The lease was last renewed at 0 with a TTL of 10 s: the pool's copy ends 1 s earlier (EXPIRY_MARGIN_MS), then the idle connection goes.
    await clock.advanceTo(8_990);
    expect(a.driver.live.size).toBe(1);
    await clock.advanceTo(9_020);
    expect(a.driver.live.size).toBe(0);
    expect(a.driver.opens).toBe(1);
    budget.reachable = true;
    const later = Array.from({ length: 3 }, () => track(a.pool.acquire()));
    await clock.advance(FAILURE_RETRY_MS + 100);
    expect(later.filter((l) => l.status === "resolved")).toHaveLength(3);
  });

  it(`a budget call that never answers counts as failed after ${CALL_TIMEOUT_MS} ms: the link asks again and the pool grows once the budget answers`, async () => {
    const clock = new ManualClock(0);
    const budget = new FakeBudget(clock, 4, 30_000);
    const a = member(budget, "a", { maxConnections: 4, acquireTimeoutMs: 60_000 });
    const first = track(a.pool.acquire());
    await clock.advance(10);
    expect(first.status).toBe("resolved");
    budget.hanging = true;
    const more = Array.from({ length: 2 }, () => track(a.pool.acquire()));
    await clock.advance(CALL_TIMEOUT_MS - 100);
    // The call for more is out and unanswered: nothing new opens meanwhile.
    expect(a.driver.opens).toBe(1);
    const calls = budget.calls;
    budget.hanging = false;
    await clock.advance(100 + FAILURE_RETRY_MS + 100);
    expect(budget.calls).toBeGreaterThan(calls);
    expect(more.map((l) => l.status)).toEqual(["resolved", "resolved"]);
    expect(a.driver.opens).toBe(3);
  });

  it("a pool that holds and wants nothing stops calling an unreachable budget once its grant has ended (a deleted budget is not called forever)", async () => {
    const clock = new ManualClock(0);
    const budget = new FakeBudget(clock, 4, 10_000);
    const a = member(budget, "a", { maxConnections: 4, acquireTimeoutMs: 60_000, idleTimeoutMs: 1_000 });
    const lease = track(a.pool.acquire());
    await clock.advance(10);
    a.pool.release(lease.value!, { reset: false });
    budget.reachable = false;
    // The idle connection is reaped; the give-back fails and is retried until the grant (TTL 10 s, less 1 s) has ended.
    for (let t = 0; t < 12_000; t += 500) {
      await clock.advance(500);
      a.pool.sweep();
    }
    expect(a.driver.live.size).toBe(0);
    const calls = budget.calls;
    await clock.advance(60_000);
    expect(budget.calls).toBe(calls);
    // Wanting again calls at once.
    budget.reachable = true;
    const again = track(a.pool.acquire());
    await clock.advance(FAILURE_RETRY_MS + 100);
    expect(again.status).toBe("resolved");
  });

  it("a live pool cut off from the budget closes its leased connections (LEASE_LOST) before the budget gives them to another: the sum never exceeds it", async () => {
    const clock = new ManualClock(0);
    const budget = new FakeBudget(clock, 3, 10_000);
    const a = member(budget, "a", { maxConnections: 3, acquireTimeoutMs: 60_000 });
    const held = Array.from({ length: 3 }, () => track(a.pool.acquire()));
    await clock.advance(10);
    expect(held.every((l) => l.status === "resolved")).toBe(true);
    // Cut off: a cannot reach the budget any more, b can.
    budget.cutOff.add("a");
    const cutAt = clock.now();
    const b = member(budget, "b", { maxConnections: 3, acquireTimeoutMs: 60_000 });
    const wanted = Array.from({ length: 3 }, () => track(b.pool.acquire()));
    let lostAt: number | undefined;
    let servedAt: number | undefined;
    while (clock.now() - cutAt < 15_000 && servedAt === undefined) {
      await clock.advance(50);
      expect(onServer([a, b])).toBeLessThanOrEqual(3);
      if (lostAt === undefined && a.driver.live.size === 0) lostAt = clock.now();
      if (wanted.every((l) => l.status === "resolved")) servedAt = clock.now();
    }
    // a's borrowers lost their connections when its grant lapsed (renewed last at ~cutAt, TTL 10 s, 1 s margin) ...
    expect(lostAt! - cutAt).toBeLessThanOrEqual(9_000 + 1_100);
    for (const l of held) expect(l.value!.state).toBe("lost");
    // ... and b got the capacity only after the budget's own expiry of a's holding.
    expect(servedAt! - cutAt).toBeGreaterThan(9_000);
    expect(servedAt! - cutAt).toBeLessThanOrEqual(10_000 + 1_500);
  });

  it("capacity held by a pool that vanished returns within the lease TTL", async () => {
    const clock = new ManualClock(0);
    const budget = new FakeBudget(clock, 3, 5_000);
    const a = member(budget, "a", { maxConnections: 3 });
    const held = Array.from({ length: 3 }, () => track(a.pool.acquire()));
    await clock.advance(10);
    expect(held.every((l) => l.status === "resolved")).toBe(true);
    expect(budget.used).toBe(3);
    // a vanishes with its sockets: nothing of it runs or renews any more.
    a.dead = true;
    a.link.report = () => {};
    const vanishedAt = clock.now();
    const b = member(budget, "b", { maxConnections: 3, acquireTimeoutMs: 60_000 });
    const leases = Array.from({ length: 3 }, () => track(b.pool.acquire()));
    let servedAt: number | undefined;
    while (clock.now() - vanishedAt < 10_000 && servedAt === undefined) {
      await clock.advance(100);
      if (leases.every((l) => l.status === "resolved")) servedAt = clock.now();
    }
    expect(servedAt).toBeDefined();
    expect(servedAt! - vanishedAt).toBeLessThanOrEqual(5_000 + 300);
  });

  it("randomized: many pools borrowing and returning at random never exceed the budget, and no waiter is left once demand stops", async () => {
    const random = seeded(42);
    const clock = new ManualClock(0);
    const budget = new FakeBudget(clock, 7, 3_000);
    const members = Array.from({ length: 5 }, (_, i) => member(budget, `t${i}`, { maxConnections: 4, acquireTimeoutMs: 120_000, idleTimeoutMs: 500 }));
    const active: { m: Member; lease: ReturnType<typeof track<Lease<FakeHandle>>> }[] = [];
    for (let step = 0; step < 400; step++) {
      const m = members[Math.floor(random() * members.length)]!;
      if (random() < 0.55) active.push({ m, lease: track(m.pool.acquire()) });
      else {
        const i = active.findIndex((a) => a.lease.status === "resolved");
        if (i >= 0) {
          const [a] = active.splice(i, 1);
          a!.m.pool.release(a!.lease.value!, { reset: false });
        }
      }
      if (random() < 0.05) for (const x of members) x.pool.sweep();
      await clock.advance(Math.floor(random() * 60));
      expect(onServer(members)).toBeLessThanOrEqual(7);
    }
    for (let round = 0; round < 200 && active.length > 0; round++) {
      for (const a of active.splice(0)) {
        if (a.lease.status === "resolved") a.m.pool.release(a.lease.value!, { reset: false });
        else active.push(a);
      }
      await clock.advance(100);
      expect(onServer(members)).toBeLessThanOrEqual(7);
    }
    expect(active).toHaveLength(0);
  });
});
