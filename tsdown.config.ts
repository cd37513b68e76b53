import { defineConfig } from "tsdown";

/**
 * The published build: ESM and bundled `.d.ts` in dist/ for each entry point in
 * package.json `exports`. Dependencies stay imports (npm installs them); the
 * runtime's own modules (`cloudflare:*`, `node:*`) are never bundled. Tests,
 * `npm run dev` and wrangler.toml keep running on the sources.
 *
 * One build serves every runtime (Workers with nodejs_compat, Node >= 22, Deno, Bun): the client
 * uses only what all of them provide, so package.json has no runtime-specific export conditions.
 *
 * The second config is the `edgepool` command (package.json `bin`, `edgepool proxy`): Node only,
 * no types, its `#!/usr/bin/env node` line kept (tsdown cleans dist/ once, before both builds).
 */
export default defineConfig([{
  entry: { index: "src/index.ts", worker: "worker/index.ts" },
  format: "esm",
  // Workers, Deno, Bun and Node 22 all run ES2022; `neutral` leaves `node:*` to the runtime.
  platform: "neutral",
  target: "es2022",
  outDir: "dist",
  clean: true,
  dts: { tsconfig: "tsconfig.build.json" },
  tsconfig: "tsconfig.build.json",
  deps: { neverBundle: [/^cloudflare:/, /^node:/] },
  sourcemap: false,
  fixedExtension: false,
  report: false,
}, {
  entry: { edgepool: "bin/edgepool.ts" },
  format: "esm",
  platform: "node",
  target: "node22",
  outDir: "dist",
  clean: false,
  dts: false,
  tsconfig: "tsconfig.build.json",
  deps: { neverBundle: [/^cloudflare:/, /^node:/] },
  sourcemap: false,
  fixedExtension: false,
  report: false,
}]);
