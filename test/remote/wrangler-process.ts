// `wrangler dev` in a child process of its own (wrangler-dev-child.ts): its environment
// (NODE_EXTRA_CA_CERTS, which miniflare reads once when it loads) and its workerd processes
// (RSS from /proc) are the test's alone. It serves a copy of the sources: wrangler restarts
// workerd when a bundled file changes (even with watch off), and others edit this checkout.
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { freePort } from "../setup/embedded.ts";
import { groupChild } from "../setup/group-child.ts";

/** A running `wrangler dev` and the workerd process it started. */
export interface WranglerDev {
  url: string;
  /** The workerd process(es) running the Worker's code (not wrangler's proxy, which listens on `url`'s port). */
  runtimePids: number[];
  /** Everything wrangler printed so far (its log has the causes workerd reports). */
  output(): string;
  stop(): Promise<void>;
}

/**
 * Starts `wrangler dev` (unstable_dev, no file watching) for `main` with `config` on a loopback
 * port, in a child process with these vars and extra environment; resolves once `/healthz` answers.
 */
export async function startWranglerDev(options: { main: string; config: string; vars: Record<string, string>; env?: Record<string, string> }): Promise<WranglerDev> {
  const port = await freePort();
  // Under the checkout (gitignored .wrangler/), so that imports still find node_modules.
  mkdirSync(".wrangler", { recursive: true });
  const copy = mkdtempSync(join(".wrangler", "snapshot-"));
  for (const path of ["src", "worker", "test/fixtures", options.config]) cpSync(path, join(copy, path), { recursive: true });
  const args = [
    "test/remote/wrangler-dev-child.ts", join(copy, options.config), String(port), String(await freePort()),
    JSON.stringify({ main: join(copy, options.main), vars: options.vars }),
  ];
  const env: NodeJS.ProcessEnv = { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", NO_COLOR: "1", ...options.env };
  // Only what the caller passes may set it: a CA trusted by the vitest process must not leak in.
  if (!options.env?.NODE_EXTRA_CA_CERTS) delete env.NODE_EXTRA_CA_CERTS;
  // Its own process group, so that stop() ends wrangler and workerd together (by this pid only).
  const dev = groupChild("node_modules/.bin/node", args, { env });
  const stop = () => dev.stop().then(() => rmSync(copy, { recursive: true, force: true }));
  const url = `http://127.0.0.1:${port}`;
  await dev.until(() => fetch(`${url}/healthz`).then((r) => r.ok, () => false), `wrangler dev on ${url}`, 60_000).catch((error: unknown) => {
    rmSync(copy, { recursive: true, force: true });
    throw error;
  });
  const runtimePids = descendants(dev.child.pid!).filter((pid) => comm(pid) === "workerd" && !cmdline(pid).includes(`entry=127.0.0.1:${port} `));
  if (runtimePids.length === 0) {
    await stop();
    throw new Error(`no workerd process under wrangler dev (pid ${dev.child.pid})`);
  }
  return { url, runtimePids, output: dev.output, stop };
}

/** Resident set size of these processes together (VmRSS), in bytes; throws if one has exited. */
export function rss(pids: number[]): number {
  let bytes = 0;
  for (const pid of pids) {
    const status = (() => {
      try {
        return readFileSync(`/proc/${pid}/status`, "utf8");
      } catch {
        return "";
      }
    })();
    const kb = /^VmRSS:\s+(\d+) kB/m.exec(status)?.[1];
    if (kb === undefined) throw new Error(`workerd process ${pid} has exited`);
    bytes += Number(kb) * 1024;
  }
  return bytes;
}

function cmdline(pid: number): string {
  try {
    return `${readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ")} `;
  } catch {
    return "";
  }
}

function comm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "";
  }
}

function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // Field 4 of /proc/<pid>/stat, after the parenthesised command name.
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      parent.set(Number(entry), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {}
  }
  const found: number[] = [];
  const walk = (pid: number) => {
    for (const [child, ppid] of parent) if (ppid === pid) found.push(child), walk(child);
  };
  walk(root);
  return found;
}
