// Child processes for the remote tests: `edgepool proxy` (bin/edgepool.ts under Node 22) and the
// real Postgres tools (psql and pgbench from /usr/bin, pg_dump from /usr/lib/postgresql/15/bin), with an environment of their own.
import { spawn, type ChildProcess } from "node:child_process";

/** The test's environment without libpq's variables or a token: each child gets only what the test gives it. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^PG|^EDGEPOOL_/.test(key)) env[key] = value;
  }
  return { ...env, NO_COLOR: "1", ...extra };
}

/** A running `edgepool proxy`. */
export interface ProxyProcess {
  child: ChildProcess;
  port: number;
  /** What the proxy printed (stderr and stdout). */
  output(): string;
  /** Sends the signal and resolves with the exit code (SIGKILL after 5 s). */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `node bin/edgepool.ts proxy <url> --tenant <tenant> --port 0 ...args`; resolves once it listens. */
export async function startProxyCli(url: string, tenant: string, options: { token?: string; args?: string[] } = {}): Promise<ProxyProcess> {
  const env = cleanEnv(options.token ? { EDGEPOOL_TOKEN: options.token } : {});
  const child = spawn("node_modules/.bin/node", ["bin/edgepool.ts", "proxy", url, "--tenant", tenant, "--port", "0", ...(options.args ?? [])], { env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`edgepool proxy did not listen within 10 s:\n${output}`)), 10_000);
    const read = (d: Buffer) => {
      output += d;
      const match = /listening on [^\s]+:(\d+) /.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    };
    child.stdout!.on("data", read);
    child.stderr!.on("data", read);
    void exited.then((code) => reject(new Error(`edgepool proxy exited (${code}):\n${output}`)));
  });
  const stop = async (signal: NodeJS.Signals = "SIGTERM") => {
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
    child.kill(signal);
    const killed = setTimeout(() => child.kill("SIGKILL"), 5_000);
    const code = await exited;
    clearTimeout(killed);
    return code;
  };
  return { child, port, output: () => output, stop };
}

/** What a finished tool printed. */
export interface ToolRun {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a tool to its end (killed after `timeoutMs`), `input` on its stdin. */
export function runTool(command: string, args: string[], options: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {}): Promise<ToolRun> {
  const started = Date.now();
  const child = spawn(command, args, { env: cleanEnv(options.env), stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  child.stdin!.end(options.input ?? "");
  const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 60_000);
  return new Promise((resolve) => {
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** libpq connection arguments for a tool through the proxy on `port`. */
export function libpqArgs(port: number, database: string): string[] {
  return ["-h", "127.0.0.1", "-p", String(port), "-U", "edgepool", "-d", database];
}
