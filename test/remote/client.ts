// A remote client, run as its own process under Deno or Node 22 by the remote tests:
//   <runtime> test/remote/client.ts <url> <tenant> <token> suite|hold
// It prints one JSON line per step, so the test can read what happened.
import { createPool, getConnection, PoolError } from "../../src/index.ts";

const [url, tenant, token, mode] = (globalThis as { Deno?: { args: string[] } }).Deno?.args ?? process.argv.slice(2);
const say = (step: string, value: unknown) => console.log(JSON.stringify({ step, value }));

if (mode === "hold") {
  // Takes a lease, leaves a transaction open, and waits to be killed.
  const conn = await getConnection(url!, { tenant, token });
  await conn.sql`begin`;
  await conn.sql`insert into remote_probe (tag) values (${`held-${tenant}`})`;
  say("held", conn.pid);
  await new Promise(() => setInterval(() => {}, 60_000));
}

const db = createPool(url!, { tenant, token });
const [row] = await db.sql<{ n: number; db: string }>`select ${41}::int + 1 as n, current_database() as db`;
say("one-shot", row);

const tag = `committed-${tenant}`;
const committed = await db.begin(async (tx) => {
  await tx.sql`insert into remote_probe (tag) values (${tag})`;
  return (await tx.sql<{ n: number }>`select count(*)::int as n from remote_probe where tag = ${tag}`)[0]!.n;
});
say("transaction", committed);

const holder = await db.getConnection();
const timeout = await db.getConnection({ acquireTimeoutMs: 300 }).then(
  () => "acquired",
  (e: PoolError) => ({ isPoolError: e instanceof PoolError, code: e.code, message: e.message }),
);
say("acquire-timeout", timeout);
await holder.release();

const refused = await createPool(url!, { tenant, token: `${token}x` }).sql`select 1`.then(
  () => "accepted",
  (e: PoolError) => e.code,
);
say("bad-token", refused);
say("stats", await db.stats());
process.exit(0);
