// The packed tarball (test/package/pack.ts) installed into a fresh project outside the repository,
// as a user would (`npm install <tarball>`), and used every way the README offers: from Node 22,
// Deno and Bun against a coordinator Worker built from the installed package; from a Worker that
// hosts the Durable Object itself; from a Worker bound to the separate coordinator Worker; and
// under tsc with moduleResolution bundler and node16. The Workers' wrangler.toml files are the
// snippets README.md shows.
import { spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { startDev, WRANGLER_ENV, type Dev } from "./wrangler.ts";

const repo = process.cwd();
const databaseUrl = inject("databaseUrl");
const ADMIN_TOKEN = "package-admin-token-0123456789";
const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });

let project: string;
let coordinator: Dev;
let ownWorker: Dev;
let boundWorker: Dev;

/** Runs a command to its end; resolves with its exit code and output (never rejects on a non-zero exit). */
function run(command: string, args: string[], cwd: string, env: Record<string, string> = {}) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: { ...process.env, ...WRANGLER_ENV, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.once("error", reject);
    child.once("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

async function admin(method: string, path: string, body?: unknown) {
  const response = await fetch(`${coordinator.url}${path}`, { method, headers: { Authorization: `Bearer ${ADMIN_TOKEN}` }, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = (await response.json()) as Record<string, unknown>;
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

beforeAll(async () => {
  await sql`create table if not exists package_probe (tag text not null)`;
  project = mkdtempSync(join(tmpdir(), "edgepool-consumer-"));
  cpSync(join(repo, "test/package/consumer"), project, { recursive: true });
  const install = await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", inject("tarball")], project);
  expect(install.code, install.stderr).toBe(0);
  // The consumer's own type packages, as its package.json would list them (linked, not downloaded again).
  for (const types of ["@types/node", "@cloudflare/workers-types"]) {
    mkdirSync(join(project, "node_modules", types, ".."), { recursive: true });
    symlinkSync(join(repo, "node_modules", types), join(project, "node_modules", types));
  }
  const dev = (config: string, vars: Record<string, string>) =>
    startDev(config, { cwd: project, vars, registry: join(project, ".registry"), persist: join(project, ".wrangler-state", config) });
  [coordinator, ownWorker] = await Promise.all([
    dev("wrangler.coordinator.toml", { DATABASE_URL: databaseUrl, EDGEPOOL_ADMIN_TOKEN: ADMIN_TOKEN }),
    dev("wrangler.toml", { DATABASE_URL: databaseUrl }),
  ]);
  // Bound to the coordinator above through the dev registry, as to the deployed "edgepool" Worker.
  boundWorker = await dev("wrangler.app.toml", {});
});

afterAll(async () => {
  await Promise.all([coordinator?.stop(), ownWorker?.stop(), boundWorker?.stop()]);
  if (project) rmSync(project, { recursive: true, force: true });
  await sql.end();
});

describe("npm install edgepool (the packed tarball) in a fresh project", () => {
  it("installs only dist/, README, LICENSE, CHANGELOG and the runtime dependencies", () => {
    const installed = join(project, "node_modules/edgepool");
    expect(readdirSync(installed).sort()).toEqual(["CHANGELOG.md", "LICENSE", "README.md", "dist", "package.json"]);
    const { dependencies } = JSON.parse(readFileSync(join(installed, "package.json"), "utf8")) as { dependencies: Record<string, string> };
    expect(Object.keys(dependencies).sort()).toEqual(["pg-protocol", "pg-types"]);
    for (const name of Object.keys(dependencies)) expect(existsSync(join(project, "node_modules", name))).toBe(true);
  });

  const RUNTIMES = {
    node: [join(repo, "node_modules/.bin/node"), ["client.ts"]],
    deno: [join(repo, "node_modules/.bin/deno"), ["run", "--allow-net", "--allow-read", "--allow-env", "--allow-sys", "client.ts"]],
    bun: [join(repo, "node_modules/.bin/bun"), ["client.ts"]],
  } as const;

  for (const [runtime, [bin, args]] of Object.entries(RUNTIMES)) {
    it(`${runtime} imports edgepool from node_modules and runs queries through the coordinator Worker`, async () => {
      const tenant = `pkg-${runtime}-${crypto.randomUUID().slice(0, 8)}`;
      await admin("PUT", `/v1/tenants/${tenant}`, { connectionString: databaseUrl, maxConnections: 1 });
      const { token } = (await admin("POST", `/v1/tenants/${tenant}/tokens`, { ttlSeconds: 600 })) as { token: string };
      const result = await run(bin, [...args, coordinator.url, tenant, token], project);
      expect(result.code, `${result.stdout}${result.stderr}`).toBe(0);
      const steps = Object.fromEntries(result.stdout.trim().split("\n").map((line) => JSON.parse(line) as { step: string; value: unknown }).map((s) => [s.step, s.value]));
      expect(steps).toEqual({ "one-shot": { n: 42 }, transaction: 1, lease: true, "bad-token": { isPoolError: true, code: "UNAUTHORIZED" } });
      expect(await sql`select tag from package_probe where tag = ${`package-${tenant}`}`).toHaveLength(1);
    });
  }

  it("the installed `edgepool` command (package.json bin, what `npx edgepool` runs) proxies psql to the coordinator Worker", async () => {
    const tenant = `pkg-bin-${crypto.randomUUID().slice(0, 8)}`;
    await admin("PUT", `/v1/tenants/${tenant}`, { connectionString: databaseUrl, maxConnections: 1 });
    const { token } = (await admin("POST", `/v1/tenants/${tenant}/tokens`, { ttlSeconds: 600 })) as { token: string };
    const bin = join(project, "node_modules/.bin/edgepool");
    // Its `#!/usr/bin/env node` finds the Node 22 this test runs on (engines: node >= 22).
    const env = { PATH: `${dirname(process.execPath)}:${process.env.PATH}` };
    const help = await run(bin, ["proxy", "--help"], project, env);
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toContain("usage: edgepool proxy <coordinator-url>");
    const proxy = spawn(bin, ["proxy", coordinator.url, "--tenant", tenant, "--port", "0"], { cwd: project, env: { ...process.env, ...env, EDGEPOOL_TOKEN: token }, stdio: ["ignore", "pipe", "pipe"] });
    const exited = new Promise((resolve) => proxy.once("exit", resolve));
    try {
      let output = "";
      const port = await new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`edgepool proxy did not listen within 10 s:\n${output}`)), 10_000);
        proxy.stderr.on("data", (d) => {
          output += d;
          const match = /listening on [^\s]+:(\d+) /.exec(output);
          if (!match) return;
          clearTimeout(timer);
          resolve(Number(match[1]));
        });
        void exited.then((code) => reject(new Error(`edgepool proxy exited (${code}):\n${output}`)));
      });
      const psql = await run("psql", ["-X", "-At", "-h", "127.0.0.1", "-p", String(port), "-U", "edgepool", "-d", "postgres", "-c", "select 1"], project, { PGCONNECT_TIMEOUT: "10", PGPASSWORD: "" });
      expect(psql.code, psql.stderr).toBe(0);
      expect(psql.stdout.trim()).toBe("1");
    } finally {
      proxy.kill("SIGTERM");
      await exited;
    }
  });

  it("a Worker hosting the Durable Object itself (wrangler.toml) builds with wrangler deploy --dry-run and answers under wrangler dev", async () => {
    const build = await run(process.execPath, [join(repo, "node_modules/wrangler/bin/wrangler.js"), "deploy", "--dry-run", "--outdir", "out-own", "--config", "wrangler.toml"], project);
    expect(build.code, `${build.stdout}${build.stderr}`).toBe(0);
    expect(readFileSync(join(project, "out-own/index.js"), "utf8")).toMatch(/export\s*{[^}]*\bPoolCoordinator\b/);
    const response = await fetch(ownWorker.url);
    const body = (await response.json()) as { n: number; pid: number; rows: number };
    expect(response.status, JSON.stringify(body)).toBe(200);
    expect(body).toMatchObject({ n: 42, rows: 1 });
    const [backend] = await sql<{ application_name: string }[]>`select application_name from pg_stat_activity where pid = ${body.pid}`;
    expect(backend?.application_name).toMatch(/^edgepool/);
  });

  it("a Worker bound to the separate coordinator Worker (wrangler.app.toml, wrangler.coordinator.toml) builds and answers", async () => {
    for (const [config, outdir] of [["wrangler.app.toml", "out-app"], ["wrangler.coordinator.toml", "out-coordinator"]]) {
      const build = await run(process.execPath, [join(repo, "node_modules/wrangler/bin/wrangler.js"), "deploy", "--dry-run", "--outdir", outdir!, "--config", config!], project);
      expect(build.code, `${build.stdout}${build.stderr}`).toBe(0);
    }
    // The app bundles the client only: the pool and its sockets live in the coordinator Worker.
    expect(readFileSync(join(project, "out-app/app.js"), "utf8")).not.toContain("cloudflare:sockets");
    expect(readFileSync(join(project, "out-coordinator/coordinator.js"), "utf8")).toMatch(/export\s*{[^}]*\bPoolService\b/);
    const response = await fetch(boundWorker.url);
    const body = (await response.json()) as { n: number; pid: number; error: string };
    expect(response.status, JSON.stringify(body)).toBe(200);
    expect(body).toMatchObject({ n: 42, error: "22012" });
    const [backend] = await sql<{ application_name: string }[]>`select application_name from pg_stat_activity where pid = ${body.pid}`;
    expect(backend?.application_name).toMatch(/^edgepool/);
  });

  it("tsc type-checks the consumer's files under moduleResolution bundler and node16, with no library check skipped for Node", async () => {
    const tsc = join(repo, "node_modules/typescript/bin/tsc");
    const results = await Promise.all(["tsconfig.json", "tsconfig.node16.json", "tsconfig.worker.json"].map((config) => run(process.execPath, [tsc, "-p", config], project)));
    for (const result of results) expect(result.code, result.stdout).toBe(0);
  });

  it("README.md shows these wrangler.toml files, and the Worker hosting the Durable Object, as they are", () => {
    const docs = readFileSync(join(repo, "README.md"), "utf8");
    const consumer = (file: string) => readFileSync(join(repo, "test/package/consumer", file), "utf8");
    for (const config of ["wrangler.toml", "wrangler.coordinator.toml", "wrangler.app.toml"]) expect(docs).toContain(consumer(config).trim());
    // Without its first line, a comment that points at the docs.
    expect(docs).toContain(consumer("src/index.ts").split("\n").slice(1).join("\n").trim());
  });
});
