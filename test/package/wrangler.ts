// `wrangler dev` (the repository's wrangler) on a consumer project's config, in a process group of
// its own so that stop() ends wrangler and its workerd processes together, by this pid only.
import { spawn } from "node:child_process";
import { join } from "node:path";
import { freePort } from "../setup/embedded.ts";

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
  const child = spawn(process.execPath, args, { cwd: options.cwd, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      try {
        process.kill(-child.pid!, "SIGTERM");
      } catch {}
      const kill = setTimeout(() => {
        try {
          process.kill(-child.pid!, "SIGKILL");
        } catch {}
      }, 5_000);
      await exited;
      clearTimeout(kill);
    })());
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`wrangler dev --config ${config} exited (${child.exitCode}):\n${output}`);
    // Any answer will do: the Worker is being served.
    if (await fetch(url).then(() => true, () => false)) return { url, output: () => output, stop };
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`wrangler dev --config ${config} did not answer on ${url} within 90 s:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
