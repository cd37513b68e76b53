import { randomBytes } from "node:crypto";
// `npm run dev`: Postgres (embedded, or DATABASE_URL) + `wrangler dev` running the example Worker
// (served on the port) with the coordinator Worker from ./wrangler.toml beside it.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

if (Number(process.versions.node.split(".")[0]) < 22) {
  console.error(`dev: Node ${process.version} is too old; run \`npm run dev\` (uses Node 22 from node_modules/.bin).`);
  process.exit(1);
}

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const host = "127.0.0.1";
// In multi-config `wrangler dev`, --var/--env-file only reach the first (served) Worker; the
// coordinator reads .dev.vars next to its own wrangler.toml. We write it and remove it on exit.
const devVars = join(root, ".dev.vars");
// The session's admin token, for curl: a file only we can read, never printed.
const tokenFile = join(root, ".edgepool-admin-token");
const MARKER = "# written by scripts/dev.mjs; removed when it exits\n";

if (existsSync(devVars) && !readFileSync(devVars, "utf8").startsWith(MARKER)) {
  console.error("dev: .dev.vars exists and was not written by this script; move it away first " +
    "(DATABASE_URL and EDGEPOOL_* from the environment are passed on).");
  process.exit(1);
}

let pg;
let persistDir;
let wrangler;
let exiting = false;

async function shutdown(code) {
  if (exiting) return;
  exiting = true;
  if (wrangler && wrangler.exitCode === null && wrangler.signalCode === null) {
    const exited = new Promise((resolve) => wrangler.once("exit", resolve));
    process.kill(-wrangler.pid, "SIGINT");
    const timer = setTimeout(() => process.kill(-wrangler.pid, "SIGKILL"), 5_000);
    await exited;
    clearTimeout(timer);
  }
  rmSync(devVars, { force: true });
  rmSync(tokenFile, { force: true });
  if (persistDir) rmSync(persistDir, { recursive: true, force: true });
  await pg?.stop();
  process.exit(code);
}
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(signal, () => void shutdown(0));

try {
  let databaseUrl = process.env.DATABASE_URL;
  if (!databaseUrl) {
    const { startEmbeddedPostgres } = await import("../test/setup/embedded.ts");
    pg = await startEmbeddedPostgres();
    databaseUrl = pg.url;
    // The database is thrown away on exit, so is the Durable Objects' local state.
    persistDir = mkdtempSync(join(tmpdir(), "edgepool-dev-state-"));
    console.log(`dev: embedded Postgres at ${databaseUrl.replace(/:[^:@/]+@/, ":***@")}`);
  }
  // A throwaway admin token for the admin API and client tokens, unless one is given.
  const vars = { DATABASE_URL: databaseUrl, EDGEPOOL_ADMIN_TOKEN: `dev-${randomBytes(12).toString("hex")}` };
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith("EDGEPOOL_") && v !== undefined) vars[k] = v;
  writeFileSync(devVars, MARKER + Object.entries(vars).map(([k, v]) => `${k}=${JSON.stringify(v)}\n`).join(""), { mode: 0o600 });
  writeFileSync(tokenFile, vars.EDGEPOOL_ADMIN_TOKEN, { mode: 0o600 });

  const port = process.env.PORT ? Number(process.env.PORT) : await portOr(8787);
  const wranglerBin = join(dirname(createRequire(import.meta.url).resolve("wrangler/package.json")), "bin", "wrangler.js");
  const args = [
    wranglerBin, "dev",
    "-c", "examples/worker/wrangler.toml", // first = the Worker served on the port
    "-c", "wrangler.toml",
    "--ip", host, "--port", String(port),
    "--show-interactive-dev-session=false",
    ...(persistDir ? ["--persist-to", persistDir] : []),
  ];
  wrangler = spawn(process.execPath, args, {
    cwd: root,
    stdio: ["ignore", "inherit", "inherit"],
    detached: true, // own process group, so workerd goes down with it
    env: {
      ...process.env,
      WRANGLER_SEND_METRICS: "false",
      CLOUDFLARE_CF_FETCH_ENABLED: process.env.CLOUDFLARE_CF_FETCH_ENABLED ?? "false",
    },
  });
  wrangler.once("exit", (code, signal) => {
    if (!exiting) {
      console.error(`dev: wrangler exited (${signal ?? code})`);
      void shutdown(code || 1);
    }
  });

  const url = `http://${host}:${port}/`;
  const status = await firstAnswer(url, 120_000);
  if (!exiting) {
    console.log(`\nedgepool example ready: ${url}${status >= 400 ? `  (GET / answered ${status})` : ""}`);
    console.log(`  try ${url}visit (a lease and a transaction), ${url}postgres and ${url}pg (the drivers through the pool), ${url}stats, ${url}service`);
    console.log(`  admin API (proxied by the example): ${url}v1/tenants/default`);
    console.log(`  dashboard: ${url}dashboard (paste the admin token once; it stays in that tab)`);
    console.log(`  metrics (Prometheus): ${url}metrics, e.g. curl -H "Authorization: Bearer $(cat .edgepool-admin-token)" ${url}metrics`);
    console.log(`  the session's admin token is in ${tokenFile} (removed on exit):`);
    console.log(`  curl -H "Authorization: Bearer $(cat .edgepool-admin-token)" ${url}v1/tenants/default\n`);
  }
} catch (error) {
  console.error("dev:", error);
  await shutdown(1);
}

/** `preferred` if it is free on `host`, otherwise any free port. */
function portOr(preferred) {
  return new Promise((resolve) => {
    const tryListen = (port) => {
      const server = createServer();
      server.once("error", () => tryListen(0));
      server.listen(port, host, () => {
        const { port: got } = server.address();
        server.close(() => resolve(got));
      });
    };
    tryListen(preferred);
  });
}

async function firstAnswer(url, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!exiting) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
      await res.arrayBuffer();
      return res.status;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`no answer from ${url} after ${timeoutMs} ms`, { cause: error });
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}
