import { describe, expect, it } from "vitest";
import { PoolError } from "../../src/errors.ts";
import { routed, ShardRouter, shardName } from "../../src/shards.ts";
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
    const leave = router.enter(0);
    expect(router.pick()).toBe(1);
    leave();
    leave();
    expect(router.pick()).toBe(0);
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
