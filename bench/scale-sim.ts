// 10,000 tenants, simulated in Node (part `sim` of `npm run bench:scale`, which bundles this file
// with esbuild and runs it as `node --expose-gc`, a fresh process per rep). Prints one JSON line:
//   memory  heap per idle coordinator state: a configured FrontDoor (worker/front.ts: the pool core
//           and the wire layer) never used; after 3 one-shots with its connection reaped; with 2
//           idle connections open on a fake Postgres (bench/lib/fake-postgres.ts)
//   budget  the budget object's holdings for 10,000 holders, and the CPU of one grant at that size
//   links   the budget's messages per second from 10,000 BudgetLinks (bench/lib/budget-sim.ts)
// Knobs: SCALE_TENANTS (10000), SCALE_SIM_SECONDS (60).
import { FrontDoor } from "../worker/front.ts";
import { resolveConfig } from "../worker/tenant.ts";
import { encodeQuery } from "../src/codec.ts";
import type { Holding } from "../worker/budget/allocate.ts";
import { seeded } from "./lib/seeded.ts";
import { grantOnce, holdings, SCENARIOS, simulateLinks, type LinkSimResult } from "./lib/budget-sim.ts";
import { fakePostgres } from "./lib/fake-postgres.ts";
import { HeapClock, settle } from "./lib/heap-clock.ts";

/** What one run of this file prints. */
export interface SimResult {
  tenants: number;
  simSeconds: number;
  node: string;
  memory: { name: string; what: string; bytesPerInstance: number; totalMiB: number; check: string }[];
  budget: {
    holders: number;
    bytesPerHolder: number;
    totalBytes: number;
    /** One grant's CPU at `holders` holders, µs (mean over `grants`). */
    grantUs: number;
    grants: number;
    /** The same at smaller sizes: how a grant's cost grows with the holders. */
    grantUsBySize: { holders: number; grantUs: number }[];
  };
  links: LinkSimResult[];
}

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error("scale-sim: run with node --expose-gc (npm run bench:scale does)");
  process.exit(2);
}
const tenants = Number(process.env.SCALE_TENANTS ?? 10_000);
const simSeconds = Number(process.env.SCALE_SIM_SECONDS ?? 60);

/** heapUsed after a full collection (twice: weak references and finalizers settle on the first). */
async function heap(): Promise<number> {
  for (let i = 0; i < 2; i++) {
    await settle();
    gc!();
  }
  return process.memoryUsage().heapUsed;
}


// ---------------------------------------------------------------------------------------------
// Memory per idle coordinator state

const SELECT_1 = encodeQuery("select 1");

interface Fronts {
  fronts: FrontDoor[];
  clock: HeapClock;
  opened: () => number;
}

function makeFronts(n: number): Fronts {
  const clock = new HeapClock();
  const { connector, opened } = fakePostgres();
  const fronts: FrontDoor[] = [];
  for (let i = 0; i < n; i++) {
    const tenant = `tenant-${i}`;
    // The defaults but for the pool size the bench uses; the coordinator's alarm is the host's, not simulated.
    const config = resolveConfig(tenant, { connectionString: "postgres://sim:sim@db.sim:5432/sim?sslmode=disable", options: { maxConnections: 10 } });
    fronts.push(new FrontDoor({ tenant, clock, connector, schedule: () => {} }, config));
  }
  return { fronts, clock, opened };
}

/** One built-in one-shot, as PoolCoordinator.run does it. */
async function oneShot(front: FrontDoor): Promise<void> {
  const runner = front.batches("transaction");
  try {
    await front.run(runner, SELECT_1);
  } finally {
    void runner.endWhenDone();
  }
}

/** Runs `each` over the fronts, `parallel` fronts at a time. */
async function forAll(fronts: FrontDoor[], each: (front: FrontDoor) => Promise<void>, parallel = 500): Promise<void> {
  for (let i = 0; i < fronts.length; i += parallel) await Promise.all(fronts.slice(i, i + parallel).map(each));
}

async function memory(): Promise<SimResult["memory"]> {
  const out: SimResult["memory"] = [];
  const measure = async (name: string, what: string, build: () => Promise<{ keep: unknown; check: string }>) => {
    const before = await heap();
    const { keep, check } = await build();
    const after = await heap();
    out.push({ name, what, bytesPerInstance: (after - before) / tenants, totalMiB: (after - before) / 2 ** 20, check });
    // Kept alive until measured; dropped before the next state.
    void keep;
  };

  await measure("configured, never used", "a FrontDoor for a configured tenant: its pool (no connection), prepared-statement registry, cancel keys, counters, the start event", async () => {
    const f = makeFronts(tenants);
    const total = f.fronts.reduce((sum, front) => sum + front.stats().total, 0);
    return { keep: f, check: `${total} connections open` };
  });

  await measure("idle after 3 one-shots, connection reaped", "the same after 3 built-in one-shots (`select 1`), then past idleTimeoutMs and a janitor sweep: no connection left, its recent pool events (at most 50) kept", async () => {
    const f = makeFronts(tenants);
    await forAll(f.fronts, async (front) => {
      for (let i = 0; i < 3; i++) await oneShot(front);
    });
    await f.clock.advance(61_000);
    for (const front of f.fronts) front.sweep();
    await f.clock.advance(2_000);
    const total = f.fronts.reduce((sum, front) => sum + front.stats().total, 0);
    return { keep: f, check: `${f.opened()} connections opened, ${total} open at the end` };
  });

  await measure("2 idle connections open", "a FrontDoor after 2 concurrent one-shots, twice: 2 server connections open and idle on the fake server (their streams and read loops included)", async () => {
    const f = makeFronts(tenants);
    await forAll(f.fronts, async (front) => {
      for (let i = 0; i < 2; i++) await Promise.all([oneShot(front), oneShot(front)]);
    });
    await f.clock.advance(100);
    const total = f.fronts.reduce((sum, front) => sum + front.stats().total, 0);
    const idle = f.fronts.reduce((sum, front) => sum + front.stats().idle, 0);
    return { keep: f, check: `${f.opened()} connections opened, ${total} open (${idle} idle) at the end` };
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// The budget object's bookkeeping, and one grant's CPU at that size

async function budget(): Promise<SimResult["budget"]> {
  const now = 1_000_000;
  const before = await heap();
  const map = holdings(tenants, now);
  const after = await heap();
  // Unmeasured: the JIT's warm-up of allocate() and the object's steps.
  grantCpuUs(holdings(100, now), now, 3_000);
  const grants = 200;
  // Smaller budgets get more grants, so each figure spans at least ~100 ms of CPU.
  const grantUsBySize = [100, 1_000].filter((n) => n < tenants).map((n) => ({ holders: n, grantUs: grantCpuUs(holdings(n, now), now, Math.round((grants * 10_000) / n)) }));
  return {
    holders: map.size, bytesPerHolder: (after - before) / tenants, totalBytes: after - before,
    grantUs: grantCpuUs(map, now, grants), grants, grantUsBySize,
  };
}

/** Mean CPU of one grant (a renewal by a holder picked at random; the budget has room for all), µs, after 20 unmeasured ones. */
function grantCpuUs(map: Map<string, Holding>, now: number, grants: number): number {
  const random = seeded(7);
  const holders = [...map.keys()];
  const renew = (i: number) => {
    const k = Math.floor(random() * holders.length);
    grantOnce(map, map.size * 10, { holder: holders[k]!, tenant: map.get(holders[k]!)!.tenant, held: 2, wanted: 1 }, now + i);
  };
  for (let i = 0; i < 20; i++) renew(i);
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < grants; i++) renew(20 + i);
  const cpu = process.cpuUsage(cpu0);
  return (cpu.user + cpu.system) / grants;
}

// ---------------------------------------------------------------------------------------------

const result: SimResult = {
  tenants,
  simSeconds,
  node: process.version,
  memory: await memory(),
  budget: await budget(),
  links: [],
};
for (const scenario of SCENARIOS) {
  await heap();
  result.links.push(await simulateLinks(scenario, tenants, simSeconds, seeded(42)));
  console.error(`scale-sim: ${scenario.name}: ${result.links.at(-1)!.messagesPerSecond.toFixed(0)} messages/s (${(result.links.at(-1)!.wallMs / 1000).toFixed(1)} s)`);
}
console.log(JSON.stringify(result));
