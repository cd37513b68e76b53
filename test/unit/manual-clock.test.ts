import { describe, expect, it } from "vitest";
import { FakeDriver, ManualClock, seeded, track } from "./helpers.ts";

// The harness the pool tests stand on: if these fail, no other result means anything.
describe("test harness", () => {
  it("the manual clock fires due timers in time order, creation order on ties, and stops at the target", async () => {
    const clock = new ManualClock(0);
    const fired: string[] = [];
    clock.setTimer(() => fired.push(`b@${clock.now()}`), 20);
    clock.setTimer(() => fired.push(`a@${clock.now()}`), 10);
    clock.setTimer(() => fired.push(`c@${clock.now()}`), 20);
    const late = clock.setTimer(() => fired.push("late"), 31);
    await clock.advance(30);
    expect(fired).toEqual(["a@10", "b@20", "c@20"]);
    expect(clock.now()).toBe(30);
    clock.clearTimer(late);
    await clock.advance(100);
    expect(fired).toHaveLength(3);
  });

  it("promise chains started by a timer settle before the next timer fires", async () => {
    const clock = new ManualClock(0);
    const seen: string[] = [];
    clock.setTimer(() => {
      void Promise.resolve().then(() => Promise.resolve()).then(() => seen.push("chain"));
    }, 5);
    clock.setTimer(() => seen.push("next timer"), 5);
    clock.setTimer(() => clock.setTimer(() => seen.push(`nested@${clock.now()}`), 0), 7);
    await clock.advance(10);
    expect(seen).toEqual(["chain", "next timer", "nested@7"]);
  });

  it("the fake driver's delayed open resolves on the manual clock and counts what it was asked", async () => {
    const clock = new ManualClock(0);
    const driver = new FakeDriver(clock);
    driver.openPlan.push({ kind: "ok", delayMs: 50 }, { kind: "fail", message: "nope" });
    const a = track(driver.open());
    const b = track(driver.open());
    await clock.advance(0);
    expect(a.status).toBe("pending");
    expect(b.status).toBe("rejected");
    expect(driver.maxInFlight).toBe(2);
    await clock.advance(50);
    expect(a.value).toEqual({ id: 1 });
    expect(driver.inFlight).toBe(0);
    expect([...driver.live]).toEqual([1]);
  });

  it("the seeded generator repeats for a seed and differs across seeds", () => {
    const draw = (seed: number) => Array.from({ length: 5 }, seeded(seed));
    expect(draw(1)).toEqual(draw(1));
    expect(draw(1)).not.toEqual(draw(2));
    expect(draw(3).every((x) => x >= 0 && x < 1)).toBe(true);
  });
});
