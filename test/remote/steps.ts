// A client script in a child process (Node, Deno, Bun) that prints one JSON line per step:
// `{ "step": "...", "value": ... }`. Tests wait for steps by name.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";

/** A running step client: its process, its exit, the steps printed so far, and a wait for one step. */
export interface StepClient {
  child: ChildProcess;
  exited: Promise<number | null>;
  steps: Map<string, unknown>;
  stderr(): string;
  step(name: string): Promise<unknown>;
}

/** Starts `bin args` with `env`; lines that are not step JSON go to `stderr()` with the process's stderr. */
export function stepClient(bin: string, args: readonly string[], env: NodeJS.ProcessEnv): StepClient {
  const child: ChildProcess = spawn(bin, [...args], { stdio: ["ignore", "pipe", "pipe"], env });
  const steps = new Map<string, unknown>();
  const waiting = new Map<string, (value: unknown) => void>();
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d));
  createInterface({ input: child.stdout! }).on("line", (line) => {
    try {
      const { step, value } = JSON.parse(line);
      steps.set(step, value);
      waiting.get(step)?.(value);
    } catch {
      stderr += `${line}\n`;
    }
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
  return {
    child,
    exited,
    steps,
    stderr: () => stderr,
    step: (name) => (steps.has(name) ? Promise.resolve(steps.get(name)) : new Promise((resolve) => waiting.set(name, resolve))),
  };
}

/**
 * Kills the client with SIGKILL and answers how many ms later the server shows backend `pid`
 * idle again (its transaction rolled back, the connection returned); -1 if not within 5 s.
 */
export async function killAndTimeIdle(run: StepClient, backendState: (pid: number) => Promise<string | undefined>, pid: number): Promise<number> {
  const killedAt = Date.now();
  run.child.kill("SIGKILL");
  await run.exited;
  while (Date.now() - killedAt < 5_000) {
    if ((await backendState(pid)) === "idle") return Date.now() - killedAt;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return -1;
}
