// `edgepool proxy` (bin/edgepool.ts, a child process) with the real tools: psql, pgbench and
// pg_dump, through the WebSocket tunnel to the coordinator (wrangler dev), against a database of
// the test's own on the real Postgres (pg_dump's: on a Postgres 15 server it starts, see below).
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { mintToken } from "../../worker/auth.ts";
import { cleanEnv, libpqArgs, runTool, startProxyCli, type ProxyProcess } from "./cli.ts";
import { ADMIN_TOKEN, startCoordinator } from "./coordinator.ts";
import { startDebianPostgres15, type DebianPostgres15 } from "./debian-postgres15.ts";

const databaseUrl = inject("databaseUrl");
const MAX_CONNECTIONS = 5;
let coordinator: Awaited<ReturnType<typeof startCoordinator>>;
const admin = postgres(databaseUrl, { max: 1, onnotice: () => {} });
const suffix = crypto.randomUUID().slice(0, 8);
/** The tenant's own database on the test server (psql's and pgbench's tables). */
const database = `tools_${suffix}`;
const tenant = `tools-${suffix}`;
let token: string;
let proxy: ProxyProcess;
let dir: string;
/** The tenant's database, straight (not through edgepool): what the tools' work left there. */
let direct: postgres.Sql;

const urlOf = (name: string) => {
  const url = new URL(databaseUrl);
  url.pathname = `/${name}`;
  return url.toString();
};

beforeAll(async () => {
  // The real tools are the point of this file: fail loudly without them (Debian 12: postgresql-client has psql, postgresql-15 has pgbench, and the server and pg_dump 15 the pg_dump test uses).
  for (const tool of ["psql", "pgbench"]) {
    if (!existsSync(`/usr/bin/${tool}`)) throw new Error(`${tool} is not installed (/usr/bin/${tool}): the proxy tests run the real tools`);
  }
  await admin.unsafe(`create database ${database}`);
  coordinator = await startCoordinator(databaseUrl);
  token = await coordinator.tenant(tenant, { maxConnections: MAX_CONNECTIONS, acquireTimeoutMs: 10_000 }, urlOf(database));
  proxy = await startProxyCli(coordinator.url, tenant, { token });
  dir = mkdtempSync(join(tmpdir(), "edgepool-tools-"));
  direct = postgres(urlOf(database), { max: 1, onnotice: () => {} });
});
afterAll(async () => {
  await proxy?.stop();
  await coordinator?.stop();
  await direct?.end();
  await admin.unsafe(`drop database if exists ${database} with (force)`).catch(() => {});
  await admin.end();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The tenant's server connections as Postgres sees them. */
async function serverConnections(): Promise<number> {
  const [row] = await admin<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where application_name = ${`edgepool:${tenant}`}`;
  return row!.n;
}

/** Samples the tenant's server connections every 25 ms while `work` runs; resolves with its result and the most seen. */
async function sampling<T>(work: () => Promise<T>): Promise<{ result: T; most: number }> {
  let most = 0;
  let running = true;
  const sampler = (async () => {
    while (running) {
      most = Math.max(most, await serverConnections());
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  })();
  try {
    return { result: await work(), most };
  } finally {
    running = false;
    await sampler;
  }
}

const psql = (port: number, args: string[], env: Record<string, string> = {}, input?: string) =>
  runTool("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", ...libpqArgs(port, database), ...args], { env: { PGCONNECT_TIMEOUT: "10", ...env }, input });

describe("psql through edgepool proxy", () => {
  it("\\dt, a query, an error, \\copy in and out; SSLRequest answered N (sslmode=prefer goes on in plain, require is refused)", async () => {
    const table = `psql_probe_${suffix}`;
    const created = await psql(proxy.port, ["-c", `create table ${table} (id int primary key, name text not null)`]);
    expect(created, created.stderr).toMatchObject({ code: 0 });
    const listed = await psql(proxy.port, ["-c", "\\dt"]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain(`public|${table}|table|`);
    const query = await psql(proxy.port, ["-c", "select 40 + 2, current_database()"]);
    expect(query.stdout.trim()).toBe(`42|${database}`);
    const error = await psql(proxy.port, ["-c", "select 1/0"]);
    expect(error.code).toBe(1);
    expect(error.stderr).toContain("ERROR:  division by zero");
    // The session survives an error: a script with an error in the middle goes on (no ON_ERROR_STOP).
    const script = await runTool("psql", ["-X", "-At", ...libpqArgs(proxy.port, database)], { input: "select 1;\nselect nope;\nselect 3;\n" });
    expect(script.stdout.trim().split("\n")).toEqual(["1", "3"]);
    expect(script.stderr).toContain('column "nope" does not exist');

    const rows = Array.from({ length: 5_000 }, (_, i) => `${i},"name ${i}, with a comma"`).join("\n") + "\n";
    writeFileSync(join(dir, "in.csv"), rows);
    const copyIn = await psql(proxy.port, ["-c", `\\copy ${table} from '${join(dir, "in.csv")}' csv`]);
    expect(copyIn.code, copyIn.stderr).toBe(0);
    const [stored] = await direct<{ n: number; last: string }[]>`select count(*)::int as n, max(name) filter (where id = 4999) as last from ${direct(table)}`;
    expect(stored).toEqual({ n: 5_000, last: "name 4999, with a comma" });
    const copyOut = await psql(proxy.port, ["-c", `\\copy (select * from ${table} order by id) to '${join(dir, "out.csv")}' csv`]);
    expect(copyOut.code, copyOut.stderr).toBe(0);
    expect(readFileSync(join(dir, "out.csv"), "utf8")).toBe(rows);

    const prefer = await psql(proxy.port, ["-c", "select 1"], { PGSSLMODE: "prefer" });
    expect(prefer.stdout.trim()).toBe("1");
    const require = await psql(proxy.port, ["-c", "select 1"], { PGSSLMODE: "require" });
    expect(require.code).toBe(2);
    expect(require.stderr).toContain("server does not support SSL");
    // The token is in no process listing the proxy makes, and in nothing it printed.
    expect(readFileSync(`/proc/${proxy.child.pid}/cmdline`, "utf8")).not.toContain(token);
    expect(proxy.output()).not.toContain(token);
  });

  it("the token as the startup password (proxy without EDGEPOOL_TOKEN): missing, malformed, expired and cross-tenant refused with FATAL UNAUTHORIZED; the right one works", async () => {
    const passwordProxy = await startProxyCli(coordinator.url, tenant);
    try {
      const other = await coordinator.tenant(`tools-other-${suffix}`);
      const expired = await mintToken(ADMIN_TOKEN, tenant, Math.floor(Date.now() / 1000) - 5);
      for (const [name, password] of Object.entries({ malformed: "not-a-token", expired, crossTenant: other })) {
        const refused = await psql(passwordProxy.port, ["-c", "select 1"], { PGPASSWORD: password });
        expect(refused.code, name).toBe(2);
        expect(refused.stderr, name).toMatch(/FATAL: {2}UNAUTHORIZED: tenant "tools-[^"]+": /);
        expect(refused.stderr).not.toContain(password);
      }
      const missing = await psql(passwordProxy.port, ["-w", "-c", "select 1"]);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toContain("no password supplied");
      const ok = await psql(passwordProxy.port, ["-c", "select 'in'"], { PGPASSWORD: token });
      expect(ok.stdout.trim(), ok.stderr).toBe("in");
      expect(passwordProxy.output()).not.toContain(token);
    } finally {
      expect(await passwordProxy.stop()).toBe(0);
    }
  });

  it("SIGTERM stops the proxy cleanly: it exits 0, its clients' tunnels close, an open transaction is rolled back and the connection returned", async () => {
    const own = await startProxyCli(coordinator.url, tenant, { token, args: ["--mode", "session"] });
    const table = `sigterm_probe_${suffix}`;
    await direct.unsafe(`create table ${table} (tag text)`);
    const client = spawn("psql", ["-X", "-At", ...libpqArgs(own.port, database)], { env: cleanEnv(), stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    client.stdout!.on("data", (d) => (out += d));
    client.stdin!.write(`begin;\ninsert into ${table} values ('held');\nselect 'inside', pg_backend_pid();\n`);
    while (!out.includes("inside")) await new Promise((resolve) => setTimeout(resolve, 20));
    const pid = Number(out.trim().split("|")[1]);
    const db = direct;
    expect((await db`select state from pg_stat_activity where pid = ${pid}`)[0]).toEqual({ state: "idle in transaction" });
    const stoppedAt = Date.now();
    expect(await own.stop("SIGTERM")).toBe(0);
    const stopMs = Date.now() - stoppedAt;
    expect(own.output()).toContain("SIGTERM: closing 1 client connection(s)");
    let idleMs = -1;
    while (Date.now() - stoppedAt < 5_000) {
      const [row] = await db<{ state: string }[]>`select state from pg_stat_activity where pid = ${pid}`;
      if (row?.state === "idle") {
        idleMs = Date.now() - stoppedAt;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(idleMs).toBeGreaterThanOrEqual(0);
    expect(await db`select 1 from ${db(table)}`).toHaveLength(0);
    client.stdin!.end();
    client.kill();
    console.log(`[proxy] SIGTERM: proxy exited in ${stopMs} ms; the backend was idle (rolled back, returned) ${idleMs} ms after the signal`);
  });
});

describe("pgbench through edgepool proxy", () => {
  it(`pgbench -i, then -T 10 -c 10 (TPC-B-like) and -S -M prepared -T 10 -c 10: no failed transaction, never more than maxConnections (${MAX_CONNECTIONS}) server connections`, async () => {
    const init = await runTool("pgbench", ["-i", "-s", "1", "-q", ...libpqArgs(proxy.port, database)], { timeoutMs: 60_000 });
    expect(init.code, init.stderr).toBe(0);
    const [accounts] = await direct<{ n: number }[]>`select count(*)::int as n from pgbench_accounts`;
    expect(accounts!.n).toBe(100_000);
    const figures: string[] = [`init ${init.ms} ms`];
    for (const [name, extra] of [["tpcb", []], ["select-only prepared", ["-S", "-M", "prepared"]]] as const) {
      const { result: run, most } = await sampling(() => runTool("pgbench", ["-T", "10", "-c", "10", "-j", "2", ...extra, ...libpqArgs(proxy.port, database)], { timeoutMs: 60_000 }));
      expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(0);
      const processed = Number(/number of transactions actually processed: (\d+)/.exec(run.stdout)?.[1]);
      const failed = /number of failed transactions: (\d+)/.exec(run.stdout)?.[1];
      const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(run.stdout)?.[1]);
      const latency = /latency average = ([\d.]+) ms/.exec(run.stdout)?.[1];
      expect(processed).toBeGreaterThan(0);
      expect(failed ?? "0", run.stdout).toBe("0");
      expect(most).toBeLessThanOrEqual(MAX_CONNECTIONS);
      figures.push(`${name}: ${processed} transactions, ${tps} tps, latency ${latency} ms, failed ${failed ?? "n/a"}, at most ${most} server connections`);
    }
    console.log(`[proxy] pgbench -c 10 through edgepool proxy (maxConnections ${MAX_CONNECTIONS}): ${figures.join("; ")}`);
  }, 120_000);
});

describe("pg_dump through edgepool proxy (session mode)", () => {
  // pg_dump must be of the server's major version or newer, and Debian 12's is 15: this tenant's
  // database lives on a Postgres 15 server of the test's own (postgresql-15's binaries).
  const role = `dump_owner_${suffix}`;
  const rolePassword = crypto.randomUUID();
  const source = `dump_src_${suffix}`;
  const restored = `dump_restored_${suffix}`;
  const dumpTenant = `tools-dump-${suffix}`;
  let pg15: DebianPostgres15;
  let dumpToken: string;
  const roleUrl = (name: string) => {
    const url = new URL(pg15.url(name));
    url.username = role;
    url.password = rolePassword;
    return url.toString();
  };
  /** Rows and a digest of every row's text, table by table, of the public schema of `name` on the Postgres 15 server. */
  const contents = async (name: string) => {
    const sql = postgres(roleUrl(name), { max: 1, onnotice: () => {} });
    try {
      const tables = await sql<{ name: string }[]>`select tablename as name from pg_tables where schemaname = 'public' order by 1`;
      const out: Record<string, { rows: number; md5: string | null }> = {};
      for (const { name: t } of tables) {
        const [row] = await sql<{ rows: number; md5: string | null }[]>`select count(*)::int as rows, md5(string_agg(x::text, chr(10) order by x::text)) as md5 from ${sql(t)} as x`;
        out[t] = row!;
      }
      return out;
    } finally {
      await sql.end();
    }
  };

  beforeAll(async () => {
    pg15 = await startDebianPostgres15();
    const superuser = postgres(pg15.url(), { max: 1, onnotice: () => {} });
    try {
      await superuser.unsafe(`create role ${role} login password '${rolePassword}'`);
      await superuser.unsafe(`create database ${source} owner ${role}`);
      await superuser.unsafe(`create database ${restored} owner ${role}`);
    } finally {
      await superuser.end();
    }
    // Tables with known row counts, owned by the tenant's role: keys, a foreign key, an identity,
    // jsonb, numeric, timestamps, text that COPY must escape (tabs, newlines, backslashes, non-ASCII), an empty table, a view.
    const owner = postgres(roleUrl(source), { max: 1, onnotice: () => {} });
    try {
      await owner.unsafe(`
        create table accounts (id int primary key, name text not null, balance numeric(12,2) not null, opened timestamptz not null);
        insert into accounts select i, 'account ' || i, i * 1.25, timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute' from generate_series(1, 10000) i;
        create table orders (id bigint generated always as identity primary key, account int not null references accounts, items jsonb not null);
        insert into orders (account, items) select 1 + i % 10000, jsonb_build_object('n', i, 'tags', jsonb_build_array('a', i % 7)) from generate_series(1, 2500) i;
        create table notes (id int primary key, body text);
        insert into notes select i, case i % 4 when 0 then 'tab' || chr(9) || 'here' when 1 then 'two' || chr(10) || 'lines' when 2 then 'back' || chr(92) || 'slash, "quoted"' else 'ünïcödé ' || i end from generate_series(1, 500) i;
        insert into notes values (501, null);
        create table empty_table (id int);
        create view big_accounts as select * from accounts where balance > 10000;
      `);
    } finally {
      await owner.end();
    }
    dumpToken = await coordinator.tenant(dumpTenant, { maxConnections: 2, acquireTimeoutMs: 10_000 }, roleUrl(source));
  });
  afterAll(async () => {
    await pg15?.stop();
  });

  it("pg_dump 15 of the tenant's Postgres 15 database through edgepool proxy --mode session restores (psql -f) into a fresh database with the same row counts, table by table", async () => {
    const session = await startProxyCli(coordinator.url, dumpTenant, { token: dumpToken, args: ["--mode", "session"] });
    try {
      const file = join(dir, "dump.sql");
      const dump = await runTool(pg15.tool("pg_dump"), ["-f", file, ...libpqArgs(session.port, source)], { timeoutMs: 60_000 });
      expect(dump.code, dump.stderr).toBe(0);
      const text = readFileSync(file, "utf8");
      expect(text).toMatch(/-- Dumped from database version 15\./);
      expect(text).toMatch(/-- Dumped by pg_dump version 15\./);
      const restore = await runTool(pg15.tool("psql"), ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", file, "-d", roleUrl(restored)], { timeoutMs: 60_000 });
      expect(restore.code, restore.stderr).toBe(0);
      const before = await contents(source);
      expect(Object.fromEntries(Object.entries(before).map(([t, c]) => [t, c.rows]))).toEqual({ accounts: 10_000, empty_table: 0, notes: 501, orders: 2_500 });
      const after = await contents(restored);
      expect(after).toEqual(before);
      console.log(
        `[proxy] pg_dump 15 through edgepool proxy (session mode): ${(text.length / 1024).toFixed(0)} KiB in ${dump.ms} ms, restored in ${restore.ms} ms; ` +
          `rows per table, source = restored (and the same md5 of their rows): ${Object.entries(after).map(([t, c]) => `${t} ${c.rows}`).join(", ")}`,
      );
    } finally {
      expect(await session.stop()).toBe(0);
    }
  });

  it("pg_dump refuses a server of a newer major version through the proxy as it would directly (it reads the real server_version through the tunnel)", async (context) => {
    const version = Number(/(\d+)\./.exec((await runTool(pg15.tool("pg_dump"), ["--version"])).stdout)?.[1]);
    const [server] = await admin<{ v: number }[]>`select current_setting('server_version_num')::int / 10000 as v`;
    if (server!.v <= version) context.skip();
    const session = await startProxyCli(coordinator.url, tenant, { token, args: ["--mode", "session"] });
    try {
      const dump = await runTool(pg15.tool("pg_dump"), ["-f", join(dir, "refused.sql"), ...libpqArgs(session.port, database)], { timeoutMs: 60_000 });
      expect(dump.code).toBe(1);
      expect(dump.stderr).toContain(`server version: ${server!.v}`);
      expect(dump.stderr).toContain(`pg_dump version: ${version}`);
    } finally {
      await session.stop();
    }
  });
});
