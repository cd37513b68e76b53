// The same file runs under Node 22, Deno and Bun: `<runtime> client.ts <url> <tenant> <token>`.
// It prints one JSON line per step for test/package/install.test.ts.
import { createPool, getConnection, PoolError } from "edgepool";

const [url, tenant, token] = (globalThis as { Deno?: { args: string[] } }).Deno?.args ?? process.argv.slice(2);
const say = (step: string, value: unknown) => console.log(JSON.stringify({ step, value }));

const db = createPool(url!, { tenant, token });
const [row] = await db.sql<{ n: number }>`select ${41}::int + 1 as n`;
say("one-shot", row);

const tag = `package-${tenant}`;
say("transaction", await db.begin(async (tx) => {
  await tx.sql`insert into package_probe (tag) values (${tag})`;
  return (await tx.sql<{ n: number }>`select count(*)::int as n from package_probe where tag = ${tag}`)[0]!.n;
}));

const conn = await getConnection(url!, { tenant, token });
say("lease", (await conn.sql<{ pid: number }>`select pg_backend_pid() as pid`)[0]!.pid === conn.pid);
await conn.release();

const refused = await createPool(url!, { tenant, token: `${token}x` }).sql`select 1`.catch((e: unknown) => e);
say("bad-token", { isPoolError: refused instanceof PoolError, code: (refused as PoolError).code });
process.exit(0);
