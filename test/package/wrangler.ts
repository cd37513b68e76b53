// `wrangler dev` (the repository's wrangler) on a consumer project's config, in a process group of
// its own so that stop() ends wrangler and its workerd processes together, by this pid only.
import { join } from "node:path";
import { freePort } from "../setup/embedded.ts";
import { groupChild } from "../setup/group-child.ts";

/** A running `wrangler dev`. */
export interface Dev {
  url: string;
  /** What wrangler printed so far (workerd's own errors land here). */
  output(): string;
  stop(): Promise<void>;
}

const WRANGLER = join(process.cwd(), "node_modules/wrangler/bin/wrangler.js");

/** Environment for every wrangler run: no network beyond loopback. */
export const WRANGLER_ENV = { WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", NO_COLOR: "1" };

/** Starts `wrangler dev --config <config>` with these vars; resolves once the Worker answers at all. */
export async function startDev(config: string, options: { cwd: string; vars: Record<string, string>; registry: string; persist: string }): Promise<Dev> {
  const port = await freePort();
  const args = [
    WRANGLER, "dev", "--config", config, "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(await freePort()),
    "--persist-to", options.persist, "--show-interactive-dev-session=false", "--log-level", "warn",
    ...Object.entries(options.vars).flatMap(([key, value]) => ["--var", `${key}:${value}`]),
  ];
  // A private dev registry: the consumer Workers find each other in it, and nothing else on the machine.
  const env = { ...process.env, ...WRANGLER_ENV, WRANGLER_REGISTRY_PATH: options.registry };
  const dev = groupChild(process.execPath, args, { cwd: options.cwd, env });
  const url = `http://127.0.0.1:${port}`;
  // Any answer will do: the Worker is being served.
  await dev.until(() => fetch(url).then(() => true, () => false), `wrangler dev --config ${config} on ${url}`, 90_000);
  return { url, output: dev.output, stop: dev.stop };
}
