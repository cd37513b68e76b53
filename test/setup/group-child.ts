// A child process in a process group of its own (wrangler dev and the workerd processes it starts),
// so that stop() ends them all together, by this child's pid only.
import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";

/** A running process group: its leader, what it printed, and how to stop it. */
export interface GroupChild {
  child: ChildProcess;
  /** Everything it printed so far, stdout and stderr together. */
  output(): string;
  /** SIGTERM to the group, SIGKILL after 5 s; resolves when the leader exited. Idempotent. */
  stop(): Promise<void>;
  /** Polls `ready` every 200 ms until it answers true; throws (after stopping the group) if the leader exits first or `timeoutMs` passes. */
  until(ready: () => Promise<boolean>, what: string, timeoutMs: number): Promise<void>;
}

/** Starts `bin args` detached, in its own process group; a test process that exits before stop() takes the group with it. */
export function groupChild(bin: string, args: readonly string[], options: Pick<SpawnOptions, "cwd" | "env">): GroupChild {
  const child = spawn(bin, [...args], { ...options, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const signal = (name: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, name);
    } catch {}
  };
  const orphaned = () => signal("SIGKILL");
  process.once("exit", orphaned);
  child.once("exit", () => process.off("exit", orphaned));
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      signal("SIGTERM");
      const killed = setTimeout(() => signal("SIGKILL"), 5_000);
      await exited;
      clearTimeout(killed);
    })());
  const until = async (ready: () => Promise<boolean>, what: string, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`${what} exited (${child.exitCode}):\n${output}`);
      if (await ready()) return;
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`${what} was not ready within ${timeoutMs / 1000} s:\n${output}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  };
  return { child, output: () => output, stop, until };
}
