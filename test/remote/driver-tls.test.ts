import { writeFileSync } from "node:fs";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPool, PoolError } from "../../src/index.ts";
import { applicationName } from "../../worker/server/driver.ts";
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from "../setup/embedded.ts";
import { installServerCertificate, prependHba, testCertificates, type TestCertificates } from "../setup/tls.ts";
import { startWranglerDev, type WranglerDev } from "./wrangler-process.ts";

// TLS from workerd to a TLS-only Postgres whose certificate a test CA signed. workerd trusts the
// CA only when NODE_EXTRA_CA_CERTS names it in the environment of the process that loads
// miniflare (design §7): one `wrangler dev` child with it, one without.
const ADMIN_TOKEN = "tls-admin-token-0123456789";
const MD5_PASSWORD = "md5-pass-tls-3e9a1c";

let certs: TestCertificates | undefined;
let server: EmbeddedPostgresHandle;
let observer: postgres.Sql;
let trusted: WranglerDev;
let untrusted: WranglerDev;

/** The server's URL with another user, host and sslmode. */
function serverUrl(sslmode: string, options: { user?: string; password?: string; host?: string } = {}): string {
  const u = new URL(server.url);
  if (options.user) u.username = options.user;
  if (options.password) u.password = options.password;
  if (options.host) u.hostname = options.host;
  u.searchParams.set("sslmode", sslmode);
  return u.toString();
}

async function admin(dev: WranglerDev, method: string, path: string, body?: unknown) {
  const response = await fetch(`${dev.url}${path}`, { method, headers: { Authorization: `Bearer ${ADMIN_TOKEN}` }, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = (await response.json()) as Record<string, any>;
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

/** A tenant on `connectionString` behind `dev`, and a built-in client for it. */
async function tenantOn(dev: WranglerDev, prefix: string, connectionString: string) {
  const tenant = `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
  await admin(dev, "PUT", `/v1/tenants/${tenant}`, { connectionString, maxConnections: 1, connectTimeoutMs: 3_000, acquireTimeoutMs: 5_000 });
  const { token } = await admin(dev, "POST", `/v1/tenants/${tenant}/tokens`, { ttlSeconds: 600 });
  return { tenant, db: createPool(dev.url, { tenant, token }) };
}

/** What the server says about the TLS of a tenant's pool connections. */
async function sslOfPool(tenant: string) {
  return observer<{ ssl: boolean; version: string; usename: string }[]>`
    select s.ssl, s.version, a.usename from pg_stat_ssl s join pg_stat_activity a using (pid) where a.application_name = ${applicationName(tenant)}`;
}

beforeAll(async () => {
  const made = (certs = testCertificates("edgepool tls test CA"));
  server = await startEmbeddedPostgres({
    flags: ["ssl=on"],
    beforeStart: async (dir) => {
      prependHba(dir, ["hostnossl all all 127.0.0.1/32 reject", "hostssl all md5user 127.0.0.1/32 md5"]);
      installServerCertificate(made, dir);
    },
  });
  observer = postgres(server.url, { max: 1, onnotice: () => {}, ssl: { ca: made.caPem } });
  await observer.unsafe(`set password_encryption = 'md5'; create role md5user login password '${MD5_PASSWORD}'`);
  const vars = { DATABASE_URL: serverUrl("require"), EDGEPOOL_ADMIN_TOKEN: ADMIN_TOKEN };
  [trusted, untrusted] = await Promise.all([
    startWranglerDev({ main: "worker/index.ts", config: "wrangler.toml", vars, env: { NODE_EXTRA_CA_CERTS: made.caFile } }),
    startWranglerDev({ main: "worker/index.ts", config: "wrangler.toml", vars }),
  ]);
}, 120_000);

afterAll(async () => {
  if (process.env.EDGEPOOL_DEBUG_WRANGLER) writeFileSync(process.env.EDGEPOOL_DEBUG_WRANGLER, `${trusted?.output()}\n-----\n${untrusted?.output()}`);
  await Promise.all([trusted?.stop(), untrusted?.stop()]);
  await observer?.end({ timeout: 0 });
  await server?.stop();
  certs?.remove();
});

describe("TLS from the coordinator to a TLS-only Postgres", () => {
  it("the server refuses plaintext: a connection without TLS is rejected by pg_hba (the tests below cannot pass without TLS)", async () => {
    const plain = postgres(server.url, { max: 1, ssl: false, onnotice: () => {} });
    await expect(plain`select 1`).rejects.toMatchObject({ code: "28000" });
    await plain.end({ timeout: 0 });
  });

  const cases: [string, string, string, { host?: string; user?: string; password?: string }][] = [
    ["sslmode=require, SCRAM role", "require", "scram-sha-256:postgres", {}],
    ["sslmode=verify-full, host localhost, SCRAM role", "verify-full", "scram-sha-256:postgres", { host: "localhost" }],
    ["sslmode=verify-full, host localhost, md5 role", "verify-full", "md5:md5user", { host: "localhost", user: "md5user", password: MD5_PASSWORD }],
  ];
  it.each(cases)("%s: the pool's backend runs TLS (pg_stat_ssl.ssl) with the CA trusted", async (_name, sslmode, method, options) => {
    const { tenant, db } = await tenantOn(trusted, "tls", serverUrl(sslmode, options));
    // system_user is "<auth method>:<user>" as the server authenticated the pool's connection.
    const [row] = await db.sql<{ method: string }>`select system_user as method`;
    expect(row!.method).toBe(method);
    const ssl = await sslOfPool(tenant);
    expect(ssl).toHaveLength(1);
    expect(ssl[0]).toMatchObject({ ssl: true, usename: options.user ?? "postgres" });
    console.log(`[driver-tls] ${sslmode} ${method}: ${ssl[0]!.version}`);
  });

  it.each(["verify-full", "require"] as const)("sslmode=%s with a server certificate from an unknown CA fails with CONNECT_FAILED naming the TLS cause", async (sslmode) => {
    const { tenant, db } = await tenantOn(untrusted, "tls-unknown-ca", serverUrl(sslmode, { host: "localhost" }));
    const error = await db.sql`select 1`.then(() => undefined, (e: unknown) => e);
    console.log(`[driver-tls] unknown CA, sslmode=${sslmode}: ${error instanceof Error ? error.message : String(error)}`);
    expect(error).toBeInstanceOf(PoolError);
    expect((error as PoolError).code).toBe("CONNECT_FAILED");
    expect((error as PoolError).message).toMatch(/TLS handshake failed: the server.s certificate was not accepted \(not signed by a CA the runtime trusts, or not valid for host "localhost"; workerd logs the cause under its internal error; reference = \w+\)/);
    expect((error as PoolError).message).not.toContain(new URL(server.url).password);
    expect(await sslOfPool(tenant)).toEqual([]);
  });
});
