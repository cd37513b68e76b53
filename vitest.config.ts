import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

// Provided by test/setup/postgres.ts; read with inject("databaseUrl") in Node tests.
declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string;
  }
}

/** The admin token the integration tests' coordinator runs with (test/integration/helpers.ts has the same). */
const ADMIN_TOKEN = "test-admin-token-0123456789";

// wrangler (dev and the vitest plugin) must not reach for the network.
process.env.WRANGLER_SEND_METRICS ??= "false";
process.env.CLOUDFLARE_CF_FETCH_ENABLED ??= "false";

export default defineConfig({
  test: {
    globalSetup: ["./test/setup/postgres.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // postgres.js 3.4.x on workerd: once a connection was ended (by us, or by the server killing
    // the backend), the socket polyfill's pending read rejects ("This socket has been closed",
    // "Network connection lost.") after its listeners are gone. Harmless; ignore only those.
    // The coordinator prints one JSON line per pool event (structured logs); tests check them on purpose, not in the output.
    onConsoleLog: (log) => !log.startsWith('{"event":'),
    onUnhandledError: (error) =>
      !(/This socket has been closed|Network connection lost/.test(error.message ?? "") &&
        error.stack?.includes("postgres/cf/polyfills.js")),
    projects: [
      {
        extends: true,
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
          environment: "node",
        },
      },
      {
        extends: true,
        test: {
          name: "remote",
          // Remote clients (Node in-process, Node 22 and Deno processes) against `wrangler dev`.
          include: ["test/remote/**/*.test.ts"],
          environment: "node",
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        extends: true,
        test: {
          name: "package",
          // The packed tarball installed into fresh projects: Node 22, Deno, Bun, Workers, tsc.
          include: ["test/package/**/*.test.ts"],
          globalSetup: ["./test/package/pack.ts"],
          environment: "node",
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
      {
        extends: true,
        plugins: [
          cloudflareTest(({ inject }) => ({
            wrangler: { configPath: "./test/wrangler.test.toml" },
            miniflare: {
              bindings: {
                DATABASE_URL: inject("databaseUrl"),
                EDGEPOOL_ADMIN_TOKEN: ADMIN_TOKEN,
                LOAD_SECONDS: process.env.LOAD_SECONDS ?? "30",
              },
            },
          })),
        ],
        test: {
          name: "workers",
          include: ["test/integration/**/*.test.ts"],
          // One file at a time: they share one Postgres and count its connections.
          fileParallelism: false,
        },
      },
    ],
  },
});
