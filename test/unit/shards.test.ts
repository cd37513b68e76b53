import { describe, expect, it } from "vitest";
import { PoolError } from "../../src/errors.ts";
import { MAX_ROUTED_TENANTS, routed, routerFor, ShardRouter, shardName } from "../../src/shards.ts";
import { resolveOptions, share, shardOptions } from "../../worker/pool/options.ts";

function invalid(input: Record<string, unknown>): string {
  try {
    resolveOptions("acme", input);
  } catch (error) {
    expect(error).toBeInstanceOf(PoolError);
    expect((error as PoolError).code).toBe("INVALID_OPTION");
    return (error as PoolError).message;
  }
  throw new Error("accepted");
}

describe("shards and locationHint options", () => {
  it("maxConnections is split across shards, the remainder to the first ones", () => {
    expect([0, 1, 2, 3].map((i) => share(40, 4, i))).toEqual([10, 10, 10, 10]);
    expect([0, 1, 2, 3].map((i) => share(10, 4, i))).toEqual([3, 3, 2, 2]);
    const options = resolveOptions("acme", { shards: 4, maxConnections: 10, minConnections: 5 });
    expect([0, 1, 2, 3].map((i) => shardOptions(options, i).maxConnections)).toEqual([3, 3, 2, 2]);
    expect([0, 1, 2, 3].map((i) => shardOptions(options, i).minConnections)).toEqual([2, 1, 1, 1]);
    expect([0, 1, 2, 3].map((i) => shardOptions(options, i).maxIdle)).toEqual([3, 3, 2, 2]);
    expect(shardOptions(resolveOptions("acme", {}), 0).maxConnections).toBe(10);
  });

  it("shards must be an integer from 1 to 64 with at least one connection per shard; locationHint one of Cloudflare's", () => {
    expect(invalid({ shards: 0 })).toMatch(/option "shards" = 0 must be an integer from 1 to 64/);
    expect(invalid({ shards: 65, maxConnections: 100 })).toMatch(/option "shards" = 65/);
    expect(invalid({ shards: 1.5 })).toMatch(/option "shards" = 1.5/);
    expect(invalid({ shards: "2" })).toMatch(/option "shards"/);
    expect(invalid({ shards: 4, maxConnections: 3 })).toMatch(/option "shards" = 4 must not exceed maxConnections \(3\)/);
    expect(invalid({ locationHint: "mars" })).toMatch(/option "locationHint" = "mars" must be one of wnam, enam, sam, weur, eeur, apac, oc, afr, me/);
    expect(resolveOptions("acme", { shards: 4, maxConnections: 8, locationHint: "weur" })).toMatchObject({ shards: 4, locationHint: "weur" });
  });
});

describe("shard routing", () => {
  it("shard 0 is the tenant's own name, shard i is tenant#i", () => {
    expect([0, 1, 3].map((i) => shardName("acme", i))).toEqual(["acme", "acme#1", "acme#3"]);
  });

  it("power of two choices: of two draws, the shard with the lower load hint plus sessions in flight", () => {
    const draws = [0, 0.5]; // candidates 0 and 2 of 4
    const router = new ShardRouter(() => draws.shift() ?? 0, () => 1_000);
    router.learn(0, { shards: 4, load: 5 });
    router.learn(2, { shards: 4, load: 1 });
    expect(router.pick()).toBe(2);
    // Unknown shard count: everything goes to shard 0 until an answer says more.
    expect(new ShardRouter().pick()).toBe(0);
  });

  it("a stale hint counts as unknown; sessions in flight count until they leave", () => {
    let now = 0;
    const router = new ShardRouter(() => 0, () => now);
    router.learn(0, { shards: 2, load: 9 });
    now = 10_000;
    expect(router.pick()).toBe(0);
    const visit = router.enter(0);
    expect(router.pick()).toBe(1);
    visit.leave();
    visit.leave();
    expect(router.pick()).toBe(0);
  });

  it("a hint already counts this client's sessions on the shard: only sessions sent after it add to its load", () => {
    const router = new ShardRouter(() => 0, () => 1_000);
    router.learn(0, { shards: 2, load: 3 });
    const before = [router.enter(1), router.enter(1)];
    // Shard 1's hint counts the two sessions it holds: 2 (not 2 + 2) beats shard 0's 3.
    router.learn(1, { shards: 2, load: 2 });
    expect(router.pick()).toBe(1);
    const after = router.enter(1);
    expect(router.pick()).toBe(0); // 2 + 1 sent since = 3: a tie goes to the first draw
    // A session the hint counted stays in its load until the next hint; one sent since leaves it at once.
    before[0]!.leave();
    expect(router.pick()).toBe(0);
    after.leave();
    expect(router.pick()).toBe(1);
  });

  it("a shard that leaves sessions unanswered while others answer weighs them by how many typical answer times they waited", () => {
    let now = 0;
    const router = new ShardRouter(() => 0, () => now);
    router.learn(0, { shards: 2 });
    // Sent at once, before any hint: shard 0 turns out slow, shard 1 answers in 10 ms (the typical answer time).
    const slow = [router.enter(0), router.enter(0)];
    const fast = [router.enter(1), router.enter(1)];
    now = 10;
    for (const [i, visit] of fast.entries()) {
      visit.answered();
      router.learn(1, { shards: 2, load: 1 - i });
      visit.leave();
    }
    // Other clients' sessions load shard 1 with 4.
    router.learn(1, { shards: 2, load: 4 });
    // Pending for one typical answer time: shard 0 counts its 2 sessions, less than shard 1's 4.
    expect(router.pick()).toBe(0);
    // Pending for three: 2 x 3 = 6 > 4, while shard 0 still shows no load of its own.
    now = 30;
    expect(router.pick()).toBe(1);
    // Once shard 0 answers, it is no longer late: its sessions count as they are.
    slow[0]!.answered();
    expect(router.pick()).toBe(0);
    for (const visit of slow) visit.leave();
  });

  it("a shard that keeps answering is not late, however long one of its sessions runs", () => {
    let now = 0;
    const router = new ShardRouter(() => 0, () => now);
    router.learn(0, { shards: 2, load: 0 });
    const long = router.enter(1);
    for (; now < 1_000; now += 5) {
      const visit = router.enter(1);
      now += 5;
      visit.answered();
      router.learn(1, { shards: 2, load: 1 });
      visit.leave();
    }
    // Shard 1 last answered 6 ms ago: its hint (1) times 6 / 5, not times the long session's 1,000 ms over a 5 ms typical answer.
    now += 1;
    router.learn(0, { shards: 2, load: 2 });
    expect(router.pick()).toBe(1);
    long.leave();
  });

  it("picks spread over all shards with unknown loads", () => {
    const router = new ShardRouter();
    router.learn(0, { shards: 4 });
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 4_000; i++) counts[router.pick()]!++;
    for (const c of counts) expect(c).toBeGreaterThan(800);
  });

  it("a refusal from a shard that ran nothing goes to another shard once; a second refusal is the answer", async () => {
    const router = new ShardRouter(() => 0);
    router.learn(0, { shards: 3, load: 0 });
    const asked: number[] = [];
    const refused = { ok: false, error: { kind: "pool", code: "UNKNOWN_TENANT" } };
    const { answer } = await routed(router, (s) => s, async (s) => (asked.push(s), refused), () => true);
    expect(asked).toHaveLength(2);
    expect(new Set(asked).size).toBe(2);
    expect(answer).toBe(refused);
  });

  it("a call that broke goes to another shard only if retryOnThrow says nothing was delivered", async () => {
    const router = new ShardRouter(() => 0);
    router.learn(0, { shards: 2, load: 0 });
    let calls = 0;
    await expect(routed(router, (s) => s, async () => { calls++; throw new Error("reset"); }, () => false)).rejects.toThrow("reset");
    expect(calls).toBe(1);
    const ok = { ok: true, hint: { shards: 2, load: 0 } };
    const { answer } = await routed(router, (s) => s, async (s) => { if (s === 0) throw new Error("overloaded"); return ok; }, () => true);
    expect(answer).toBe(ok);
  });
});

describe("routers per tenant", () => {
  it("one per tenant and target, kept for the isolate; past MAX_ROUTED_TENANTS made-up names the oldest is forgotten, so they cannot grow the isolate without bound", () => {
    const target = {};
    const first = routerFor(target, "t-0");
    expect(routerFor(target, "t-0")).toBe(first);
    expect(routerFor({}, "t-0")).not.toBe(first);
    for (let i = 1; i <= MAX_ROUTED_TENANTS; i++) routerFor(target, `t-${i}`);
    // t-0 was the oldest: forgotten; the newest are kept.
    expect(routerFor(target, `t-${MAX_ROUTED_TENANTS}`)).toBe(routerFor(target, `t-${MAX_ROUTED_TENANTS}`));
    expect(routerFor(target, "t-0")).not.toBe(first);
  });
});
