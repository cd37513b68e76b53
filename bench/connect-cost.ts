// What a fresh connection costs against a query on an open one, on this machine:
// `npm run bench:connect`. Uses the embedded Postgres (SCRAM auth, loopback, no TLS)
// unless DATABASE_URL is set.
import postgres from "postgres";
import { startEmbeddedPostgres } from "../test/setup/embedded.ts";

const rounds = Number(process.env.ROUNDS ?? 200);
const server = process.env.DATABASE_URL ? undefined : await startEmbeddedPostgres();
const url = process.env.DATABASE_URL ?? server!.url;
const options = { max: 1, onnotice: () => {} } as const;

const open = postgres(url, options);
await open`select 1`;
let started = performance.now();
for (let i = 0; i < rounds; i++) await open`select 1`;
const queryMs = (performance.now() - started) / rounds;
await open.end();

started = performance.now();
for (let i = 0; i < rounds; i++) {
  const fresh = postgres(url, options);
  await fresh`select 1`;
  await fresh.end();
}
const connectMs = (performance.now() - started) / rounds;
await server?.stop();

console.log(`select 1 on an open connection:        ${queryMs.toFixed(3)} ms`);
console.log(`new connection (TCP + SCRAM) + select 1: ${connectMs.toFixed(3)} ms`);
console.log(`ratio: ${(connectMs / queryMs).toFixed(0)}x  (${rounds} rounds each)`);
