// `npm run soak`: the load test's mix (one-shot + lease clients inserting unique ids) against
// the real coordinator in workerd, round after round, checking that nothing is lost and that
// workerd's memory does not grow. SOAK_SECONDS (default 600) in rounds of SOAK_ROUND_SECONDS (60).
import { readdirSync, readFileSync } from "node:fs";
import postgres from "postgres";
import { unstable_dev } from "wrangler";
import { freePort, startEmbeddedPostgres } from "../test/setup/embedded.ts";

process.env.WRANGLER_SEND_METRICS ??= "false";
process.env.CLOUDFLARE_CF_FETCH_ENABLED ??= "false";
const total = Number(process.env.SOAK_SECONDS ?? 600);
const roundSeconds = Math.min(total, Number(process.env.SOAK_ROUND_SECONDS ?? 60));
const oneShots = Number(process.env.SOAK_ONESHOTS ?? 2_000);
const leases = Number(process.env.SOAK_LEASES ?? 200);
const admin = "soak-admin-token";

/** Resident memory of every workerd process below this one, in MiB. */
function workerdRssMiB(): number {
  const parents = new Map<number, number>();
  const names = new Map<number, string>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      names.set(Number(entry), stat.slice(stat.indexOf("(") + 1, close));
      parents.set(Number(entry), Number(stat.slice(close + 2).split(" ")[1]));
    } catch {}
  }
  const below = (pid: number): boolean => {
    for (let p = parents.get(pid); p; p = parents.get(p)) if (p === process.pid) return true;
    return false;
  };
  let kib = 0;
  for (const [pid, name] of names) {
    if (name !== "workerd" || !below(pid)) continue;
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    kib += Number(m?.[1] ?? 0);
  }
  return Math.round(kib / 1024);
}

const pg = process.env.DATABASE_URL ? undefined : await startEmbeddedPostgres();
const databaseUrl = process.env.DATABASE_URL ?? pg!.url;
const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
const worker = await unstable_dev("test/fixtures/edge-worker.ts", {
  config: "test/wrangler.test.toml",
  ip: "127.0.0.1",
  port: await freePort(),
  inspectorPort: await freePort(),
  persist: false,
  logLevel: "warn",
  vars: { DATABASE_URL: databaseUrl, EDGEPOOL_ADMIN_TOKEN: admin },
  experimental: { disableExperimentalWarning: true, disableDevRegistry: true, watch: false },
});
let failedCheck = false;
try {
  await sql`create table if not exists load_probe (id text primary key, at timestamptz not null default now())`;
  const tenant = `soak-${Date.now()}`;
  const put = await worker.fetch(`/v1/tenants/${tenant}`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${admin}` },
    body: JSON.stringify({ connectionString: databaseUrl, maxConnections: 10, maxWaiters: 5_000, acquireTimeoutMs: 15_000 }),
  });
  if (!put.ok) throw new Error(`PUT tenant: ${put.status} ${await put.text()}`);
  const rss: number[] = [];
  console.log(`soak: ${total}s in rounds of ${roundSeconds}s, ${oneShots} one-shot + ${leases} lease clients, maxConnections 10`);
  for (let round = 1; round * roundSeconds <= total; round++) {
    const run = `${tenant}-r${round}`;
    const response = await worker.fetch("/load", {
      method: "POST",
      body: JSON.stringify({ tenant, run, seconds: roundSeconds, oneShots, leases, acquireTimeoutMs: 15_000 }),
    });
    const report = (await response.json()) as { ok: number; failed: { id: string }[]; latencyMs: Record<string, number>; stats: Record<string, any> };
    const [{ n }] = (await sql<{ n: number }[]>`select count(*)::int as n from load_probe where id like ${`${run}-%`}`) as unknown as [{ n: number }];
    rss.push(workerdRssMiB());
    const lost = n !== report.ok;
    failedCheck ||= lost;
    console.log(
      `round ${round}: ${report.ok} ok, ${report.failed.length} failed, ${n} rows${lost ? " MISMATCH" : ""}, ` +
        `p50 ${report.latencyMs.p50} ms p99 ${report.latencyMs.p99} ms, acquire wait p99 ${report.stats.acquireWaitMs.p99} ms, workerd RSS ${rss.at(-1)} MiB`,
    );
  }
  // Memory must level off: the last round may not exceed the first by more than 25 % + 32 MiB.
  const grew = rss.length > 1 && rss.at(-1)! > rss[0]! * 1.25 + 32;
  console.log(`workerd RSS per round (MiB): ${rss.join(", ")} → ${grew ? "GROWING" : "flat"}`);
  failedCheck ||= grew;
} finally {
  await worker.stop();
  await sql.end();
  await pg?.stop();
}
process.exit(failedCheck ? 1 : 0);
