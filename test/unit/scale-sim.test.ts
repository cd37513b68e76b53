// The scale simulation's parts (bench/scale-sim.ts, `npm run bench:scale`) count what they claim:
// the clock fires timers in order, the counting budget grants what allocate() grants when it has
// room, idle links renew once per RENEW_MS, and a FrontDoor on the fake Postgres runs one-shots.
import { describe, expect, it } from "vitest";
import { allocate, type Holding } from "../../worker/budget/allocate.ts";
import { BudgetLink, QUIET_RENEW_MS, RENEW_MS } from "../../worker/budget/link.ts";
import { FrontDoor } from "../../worker/front.ts";
import { resolveConfig } from "../../worker/tenant.ts";
import { encodeQuery } from "../../src/codec.ts";
import { CountingBudget, SCENARIOS, simulateLinks } from "../../bench/lib/budget-sim.ts";
import { fakePostgres } from "../../bench/lib/fake-postgres.ts";
import { HeapClock } from "../../bench/lib/heap-clock.ts";
import { seeded } from "./helpers.ts";

const scenario = (name: string) => SCENARIOS.find((s) => s.name === name)!;

describe("scale simulation", () => {
  it("the heap clock fires due timers in time order, creation order on ties, and skips cleared ones", async () => {
    const clock = new HeapClock(0);
    const fired: string[] = [];
    clock.setTimer(() => fired.push("b"), 20);
    clock.setTimer(() => fired.push("a"), 10);
    clock.setTimer(() => fired.push("c"), 20);
    const cleared = clock.setTimer(() => fired.push("x"), 15);
    clock.setTimer(() => clock.setTimer(() => fired.push("d"), 0), 30);
    clock.clearTimer(cleared);
    await clock.advanceTo(25);
    expect(fired).toEqual(["a", "b", "c"]);
    await clock.advanceTo(40);
    expect(fired).toEqual(["a", "b", "c", "d"]);
    expect(clock.now()).toBe(40);
    expect(clock.pending).toBe(0);
  });

  it("with room for every demand, the counting budget grants what allocate() grants", async () => {
    const clock = new HeapClock(0);
    const max = 1_000;
    const budget = new CountingBudget(max, clock);
    const random = seeded(3);
    const live = new Map<string, Holding>();
    for (let i = 0; i < 300; i++) {
      const holder = `h${Math.floor(random() * 40)}`;
      const report = { holder, tenant: holder, held: Math.floor(random() * 5), wanted: Math.floor(random() * 5) };
      const expected = allocate(max, [...live.values()].filter((h) => h.holder !== holder), report, 0, 30_000);
      if (report.held === 0 && report.wanted === 0) live.delete(holder);
      else live.set(holder, expected.holding);
      const answer = budget.call(report);
      await clock.advance(10);
      expect((await answer).granted).toBe(expected.grant.granted);
    }
    expect(budget.messages).toBe(300);
    expect(budget.holders).toBe(live.size);
  });

  it("idle tenants holding connections in a budget with room send one renewal per QUIET_RENEW_MS each; tenants holding nothing send none", async () => {
    const tenants = 50;
    const seconds = 32;
    const holding = await simulateLinks(scenario("idle, 2 idle connections kept"), tenants, seconds, seeded(1));
    // Renewals fall on whole periods of each link, so a window of 31 s holds 3 or 4 of each.
    expect(holding.messagesPerSecond * 31).toBeGreaterThanOrEqual(tenants * 3);
    expect(holding.messagesPerSecond * 31).toBeLessThanOrEqual(tenants * 4);
    expect(holding.holdersAtEnd).toBe(tenants);
    const empty = await simulateLinks(scenario("idle, no connections"), tenants, seconds, seeded(1));
    expect(empty.messages).toBe(0);
  });

  it("the counting budget sees every call a link makes; a contended budget is renewed every RENEW_MS, one with room every QUIET_RENEW_MS", async () => {
    const clock = new HeapClock(0);
    // 1 of 1 counted: contended.
    const budget = new CountingBudget(1, clock);
    let calls = 0;
    const link = new BudgetLink({ budget: "b", tenant: "t", holder: "t:1", clock, call: (r) => (calls++, budget.call(r)) });
    link.report(1, 1);
    await clock.advance(5_500);
    link.report(0, 0);
    await clock.advance(5_000);
    // The first report, a renewal every RENEW_MS until the give-back at 5.5 s, then nothing.
    expect(calls).toBe(1 + Math.floor(5_500 / RENEW_MS) + 1);
    // 1 of 100: room; renewals every 10 s.
    const roomy = new CountingBudget(100, clock);
    let quiet = 0;
    const other = new BudgetLink({ budget: "b", tenant: "u", holder: "u:1", clock, call: (r) => (quiet++, roomy.call(r)) });
    other.report(1, 1);
    await clock.advance(25_500);
    expect(quiet).toBe(1 + Math.floor(25_500 / QUIET_RENEW_MS));
    expect(budget.messages).toBe(calls);
    expect(budget.holders).toBe(0);
  });

  it("a FrontDoor on the fake Postgres runs a one-shot, and its janitor reaps the idle connection", async () => {
    const clock = new HeapClock();
    const { connector, opened } = fakePostgres();
    const config = resolveConfig("sim", { connectionString: "postgres://sim:sim@db.sim:5432/sim?sslmode=disable", options: { maxConnections: 10 } });
    const front = new FrontDoor({ tenant: "sim", clock, connector, schedule: () => {} }, config);
    const runner = front.batches("transaction");
    const answer = await front.run(runner, encodeQuery("select 1"));
    void runner.endWhenDone();
    // DataRow with one column "1", then ReadyForQuery idle.
    expect(answer.includes(0x44)).toBe(true);
    expect(answer.at(-1)).toBe(0x49);
    await clock.advance(100);
    expect(front.stats()).toMatchObject({ total: 1, idle: 1 });
    await clock.advance(61_000);
    front.sweep();
    await clock.advance(1_000);
    expect(front.stats().total).toBe(0);
    expect(opened()).toBe(1);
  });
});
