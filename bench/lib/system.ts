// The bench's own process and the processes it starts: logging, the cleanup registry, stopping
// children, the machine's facts, and what /proc says about a process (RSS, CPU). Nothing here
// runs at import: bench/run.ts and bench/profile.ts run their main through runToEnd().
import { spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";

let logName = "bench";
/** Names the script in its log lines and cleanup errors: `bench: ...` unless it says otherwise. */
export function logAs(name: string): void {
  logName = name;
}
export const log = (message: string) => console.log(`${logName}: ${message}`);
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// Cleanup: everything started is registered here and stopped in reverse order, whatever happens.

const cleanups: { name: string; run: () => Promise<void> | void }[] = [];
let cleaning: Promise<void> | undefined;
export function onCleanup(name: string, run: () => Promise<void> | void) {
  cleanups.push({ name, run });
}
/**
 * Runs the cleanup on every way out: a signal (exit 130), a rejection nobody handled (exit 1), and as
 * a last resort on exit, where nothing can be awaited, SIGKILL by pid. Says whether a signal came.
 */
function cleanupOnExit(): { interrupted: () => boolean } {
  let interrupted = false;
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(signal, () => {
      interrupted = true;
      console.error(`\n${logName}: ${signal}, stopping everything it started`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  process.on("unhandledRejection", (error) => {
    console.error(`${logName}: unhandled rejection:`, error);
    void cleanup().finally(() => process.exit(1));
  });
  process.on("exit", () => {
    for (const pid of children) if (alive(pid)) process.kill(pid, "SIGKILL");
  });
  return { interrupted: () => interrupted };
}

/** Runs `main` with the cleanup on every way out, then exits: 0, 1 if it failed, 130 on a signal. */
export async function runToEnd(main: () => Promise<void>): Promise<never> {
  const exits = cleanupOnExit();
  try {
    await main();
  } catch (error) {
    // After a signal the run fails as its servers go away: that is not news.
    if (!exits.interrupted()) console.error(`${logName}: failed:`, error);
    process.exitCode = 1;
  } finally {
    await cleanup();
  }
  // Nothing of ours is left running; do not wait for stray handles of the libraries.
  process.exit(process.exitCode ?? 0);
}
export function cleanup(): Promise<void> {
  return (cleaning ??= (async () => {
    for (const { name, run } of cleanups.reverse()) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        await Promise.race([run(), new Promise((_, reject) => (timer = setTimeout(() => reject(new Error("timed out after 15 s")), 15_000)))]);
      } catch (error) {
        console.error(`${logName}: cleanup of ${name} failed: ${(error as Error).message}`);
      } finally {
        clearTimeout(timer);
      }
    }
  })());
}
/** Pids of what the bench started (pgbouncer, pgbench, workerd): on exit, run.ts SIGKILLs any still alive. */
export const children = new Set<number>();

// ---------------------------------------------------------------------------------------------
// Machine facts

export type Machine = ReturnType<typeof machine>;

export function machine(root: string) {
  const cpus = os.cpus();
  const version = (pkg: string) => {
    try {
      return JSON.parse(readFileSync(join(root, "node_modules", pkg, "package.json"), "utf8")).version as string;
    } catch {
      return "?";
    }
  };
  return {
    cores: cpus.length,
    cpu: cpus[0]?.model.trim() ?? "?",
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    os: `${os.type()} ${os.release()} (${os.arch()})`,
    node: process.version,
    postgresJs: version("postgres"),
    wrangler: version("wrangler"),
    // wrangler runs its own copy of workerd
    workerd: existsSync(join(root, "node_modules/wrangler/node_modules/workerd")) ? version("wrangler/node_modules/workerd") : version("workerd"),
    pgbench: tool("pgbench", ["--version"]),
    pgbouncer: findPgbouncer() ? tool(findPgbouncer()!, ["--version"]).split("\n")[0] : "not installed",
  };
}
export function tool(bin: string, args: string[]): string {
  const r = spawnSync(bin, args, { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : "not installed";
}
export function which(bin: string): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(":"), "/usr/sbin", "/usr/local/sbin", "/sbin"];
  for (const d of dirs) if (d && existsSync(join(d, bin))) return join(d, bin);
  return undefined;
}
export function findPgbouncer(): string | undefined {
  return which("pgbouncer");
}

// ---------------------------------------------------------------------------------------------
// Processes: workerd's pid (our child's child) and memory from /proc.

export function descendants(pid: number): { pid: number; comm: string }[] {
  const children = new Map<number, { pid: number; comm: string }[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      const comm = stat.slice(stat.indexOf("(") + 1, close);
      const ppid = Number(stat.slice(close + 2).split(" ")[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid)!.push({ pid: Number(entry), comm });
    } catch {
      // gone meanwhile
    }
  }
  const out: { pid: number; comm: string }[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      walk(c.pid);
    }
  };
  walk(pid);
  return out;
}

/** Resident memory of a process in MiB (VmRSS), or NaN. */
export function rssMiB(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return kb ? Number(kb) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** CPU time (user + system, all threads) a process has used so far, in ms; NaN if unknown. */
export function cpuMs(pid: number | undefined): number {
  return pid ? statCpuMs(`/proc/${pid}/stat`) : NaN;
}
/** CPU time per thread of a process, ms by thread id: a busy workerd's busiest thread is its JS thread. */
export function threadCpuMs(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    const ms = statCpuMs(`/proc/${pid}/task/${tid}/stat`);
    if (!Number.isNaN(ms)) out.set(Number(tid), ms);
  }
  return out;
}
/** utime + stime of a /proc stat file (a process's or a thread's), in ms; NaN if it is gone. */
function statCpuMs(path: string): number {
  const ticks = clockTicksPerSecond();
  try {
    const stat = readFileSync(path, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticks;
  } catch {
    return NaN;
  }
}
let clockTicks: number | undefined;
/** Clock ticks per second, the unit of /proc/<pid>/stat's times: asked of getconf once, when first needed. */
function clockTicksPerSecond(): number {
  return (clockTicks ??= Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100);
}
export function ownCpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function stopChild(child: ChildProcess, name: string): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || !child.pid) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => {
    console.error(`${logName}: ${name} ignored SIGTERM; SIGKILL`);
    child.kill("SIGKILL");
  }, 5_000);
  await exited;
  clearTimeout(timer);
}
