// Runs in a process of its own (spawned by wrangler-process.ts): `wrangler dev` through
// unstable_dev with file watching off, so that other edits to the checkout cannot restart
// workerd mid-test, and with this process's environment (NODE_EXTRA_CA_CERTS is read by
// miniflare when it loads). Prints {"port": n} once serving; stops on SIGTERM.
import { unstable_dev } from "wrangler";

const [config, port, inspectorPort, vars] = process.argv.slice(2) as [string, string, string, string];
const { main } = JSON.parse(vars) as { main: string };
const worker = await unstable_dev(main, {
  config,
  ip: "127.0.0.1",
  port: Number(port),
  inspectorPort: Number(inspectorPort),
  persist: false,
  logLevel: (process.env.EDGEPOOL_WRANGLER_LOG_LEVEL ?? "info") as "info",
  vars: (JSON.parse(vars) as { vars: Record<string, string> }).vars,
  experimental: { disableExperimentalWarning: true, disableDevRegistry: true, watch: false },
});
console.log(JSON.stringify({ port: worker.port }));
process.once("SIGTERM", () => {
  void worker.stop().finally(() => process.exit(0));
});
