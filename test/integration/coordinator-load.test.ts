import { describe, expect, it } from "vitest";
import { createPool } from "../../src/index.ts";
import type { ShardedStats } from "../../worker/shards.ts";
import { configure, tenantName, testEnv } from "./helpers.ts";

/** A tenant's stats as its coordinator answers them. */
async function statsOf(stub: Awaited<ReturnType<typeof configure>>, tenant: string): Promise<ShardedStats> {
  const answer = await stub.stats(tenant);
  if (!answer.ok) throw new Error(answer.error.message);
  return answer.value;
}

/** Runs `clients` loops of one-shots for `ms`; answers how many ran. */
async function drive(clients: number, ms: number, query: () => Promise<unknown>): Promise<number> {
  const until = Date.now() + ms;
  let ran = 0;
  await Promise.all(Array.from({ length: clients }, async () => {
    while (Date.now() < until) {
      await query();
      ran++;
    }
  }));
  return ran;
}

describe("coordinator thread load", () => {
  it("a quiet tenant's coordinator shows its thread near idle and keeps 1 shard; one driven hard (64 clients, 64 KB answers, up to 8 s) shows it busy: coordinator-bound, 2 shards suggested", async () => {
    const quiet = tenantName("thread-quiet");
    const hot = tenantName("thread-hot");
    // Its connection opened (and authenticated: SCRAM is real work on the thread) before its traffic starts.
    const quietStub = await configure(quiet, { maxConnections: 4, initialConnections: 1 });
    for (let i = 0; i < 100 && (await statsOf(quietStub, quiet)).idle < 1; i++) await new Promise((resolve) => setTimeout(resolve, 50));
    const hotStub = await configure(hot, { maxConnections: 8, acquireTimeoutMs: 30_000 });

    // The quiet one first, alone: 20 one-shots 50 ms apart (its probe runs only while it gets calls).
    const quietDb = createPool(testEnv.EDGEPOOL, { tenant: quiet });
    for (let i = 0; i < 20; i++) {
      await quietDb.sql`select 1`;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const calm = await statsOf(quietStub, quiet);

    // The coordinator does real work per call: a 500-row answer of ~64 KB read from Postgres and sent back. The
    // probe reads a lower bound of the thread's busy time, so it is driven in rounds of 2 s (4 at most) until it
    // shows the thread as the limit: how soon depends on how fast this machine is at the moment.
    const hotDb = createPool(testEnv.EDGEPOOL, { tenant: hot });
    let ran = 0;
    let rounds = 0;
    let busy = await statsOf(hotStub, hot);
    while (rounds < 4 && busy.sizing.verdict !== "coordinator-bound") {
      ran += await drive(64, 2_000, () => hotDb.sql`select repeat('x', 120) as x from generate_series(1, 500)`);
      rounds++;
      busy = await statsOf(hotStub, hot);
    }
    console.log(`coordinator-load: quiet ${JSON.stringify(calm.coordinator)} ${calm.sizing.verdict}; hot ${ran} one-shots in ${rounds} rounds of 2 s, ${JSON.stringify(busy.coordinator)} ${busy.sizing.verdict} suggestedShards=${busy.sizing.suggestedShards}`);

    expect(calm.coordinator.callsPerSecond).toBeGreaterThanOrEqual(1);
    expect(calm.coordinator.callsPerSecond).toBeLessThanOrEqual(20);
    // Near 0; bounded generously: other processes on a loaded machine delay the probe too.
    expect(calm.coordinator.busyMsPerSecond).toBeLessThanOrEqual(300);
    expect(calm.sizing.suggestedShards).toBe(1);
    expect(calm.sizing.verdict).not.toBe("coordinator-bound");

    expect(ran).toBeGreaterThan(64);
    expect(busy.coordinator.callsPerSecond).toBeGreaterThan(calm.coordinator.callsPerSecond);
    expect(busy.coordinator.busyMsPerSecond).toBeGreaterThan(100);
    expect(busy.coordinator.busyRatio).toBeGreaterThan(0.7);
    expect(busy.sizing).toMatchObject({ verdict: "coordinator-bound", suggestedShards: 2 });
    expect(busy.sizing.reason).toMatch(/^coordinator thread at \d+% in its busiest second/);
  });

  it("a sharded tenant's stats: calls summed over its shards, busy time and ratio its busiest shard's, suggestedShards its shard count while no thread is the limit", async () => {
    const tenant = tenantName("thread-shards");
    const stub = await configure(tenant, { shards: 2, maxConnections: 4 });
    const db = createPool(testEnv.EDGEPOOL, { tenant });
    // The first answer tells this isolate the tenant has 2 shards; then the one-shots spread over both.
    await db.sql`select 1`;
    await Promise.all(Array.from({ length: 40 }, () => db.sql`select pg_sleep(0.01), 1 as one`));
    const stats = await statsOf(stub, tenant);
    const shards = stats.shards!;
    expect(shards.map((s) => s.shard)).toEqual([0, 1]);
    const calls = shards.map((s) => s.coordinator.callsPerSecond);
    console.log(`coordinator-load: shards ${JSON.stringify(shards.map((s) => s.coordinator))} -> ${JSON.stringify(stats.coordinator)}`);
    expect(calls.every((n) => n >= 1)).toBe(true);
    expect(stats.coordinator.callsPerSecond).toBe(calls.reduce((a, b) => a + b, 0));
    expect(stats.coordinator.busyMsPerSecond).toBe(Math.max(...shards.map((s) => s.coordinator.busyMsPerSecond)));
    expect(stats.coordinator.busyRatio).toBe(Math.max(...shards.map((s) => s.coordinator.busyRatio)));
    if (stats.sizing.verdict !== "coordinator-bound") expect(stats.sizing.suggestedShards).toBe(2);
    else expect(stats.sizing.suggestedShards).toBeGreaterThan(2);
  });
});
