// A remote client run as its own process under Node 22, Deno or Bun by runtimes.test.ts:
//   <runtime> test/remote/runtime-client.ts <url> <tenant> <token> suite|hold
// postgres.js and pg through the WebSocket tunnel, and the built-in client. One JSON line per step.
import pg from "pg";
import postgres from "postgres";
import { createPool, pgOptions, PoolError, postgresOptions } from "../../src/index.ts";

const [url, tenant, token, mode] = (globalThis as { Deno?: { args: string[] } }).Deno?.args ?? process.argv.slice(2);
const say = (step: string, value: unknown) => console.log(JSON.stringify({ step, value }));
const failure = (e: unknown) => {
  const error = e as { code?: string; severity?: string; message?: string };
  return { code: error.code, severity: error.severity, message: error.message, isPoolError: e instanceof PoolError };
};

if (mode === "hold") {
  // A transaction left open on the tunnel; the test kills this process with SIGKILL.
  const sql = postgres(postgresOptions(url!, { tenant: tenant!, token: token! }));
  await sql.begin(async (tx) => {
    await tx`insert into runtime_probe (tag) values (${`held-${tenant}`})`;
    const [{ pid }] = await tx<{ pid: number }[]>`select pg_backend_pid() as pid`;
    say("held", pid);
    await new Promise(() => setInterval(() => {}, 60_000));
  });
}

const sql = postgres(postgresOptions(url!, { tenant: tenant!, token: token! }));
const [row] = await sql<{ n: number; pid: number }[]>`select ${41}::int + 1 as n, pg_backend_pid() as pid`;
say("postgres.js", row);
say("postgres.js-error", await sql`select 1/0`.then(() => "no error", failure));
const tag = `committed-${tenant}`;
say("postgres.js-transaction", await sql.begin(async (tx) => {
  await tx`insert into runtime_probe (tag) values (${tag})`;
  return (await tx<{ n: number }[]>`select count(*)::int as n from runtime_probe where tag = ${tag}`)[0]!.n;
}));
await sql.end();

const pool = new pg.Pool(pgOptions(url!, { tenant: tenant!, token: token!, mode: "session" }));
const { rows } = await pool.query<{ n: number; pid: number }>("select $1::int + 1 as n, pg_backend_pid() as pid", [6]);
say("pg", rows[0]);
say("pg-error", await pool.query("selec").then(() => "no error", failure));
await pool.end();

const refused = postgres(postgresOptions(url!, { tenant: tenant!, token: `${token}x` }));
say("postgres.js-bad-token", await refused`select 1`.then(() => "accepted", failure));
await refused.end();

const db = createPool(url!, { tenant, token });
say("builtin", [...(await db.sql<{ n: number }>`select ${3}::int as n`)]);
say("builtin-error", await db.sql`select 1/0`.then(() => "no error", failure));
const refusedDb = createPool(url!, { tenant, token: `${token}x` });
say("builtin-bad-token", await refusedDb.sql`select 1`.then(() => "accepted", failure));
// end() waits for the one-shots in flight and closes the client's sessions: the process exits by itself, at once.
const last = db.sql`select pg_sleep(0.2)`;
await Promise.all([db.end(), refusedDb.end()]);
say("builtin-end", { inflight: await last.then(() => "answered", failure), after: await db.sql`select 1`.then(() => "accepted", failure) });
