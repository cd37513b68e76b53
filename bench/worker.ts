// The bench Worker (`npm run bench` starts it with bench/wrangler.bench.toml): the coordinator
// Durable Object plus a load generator that runs INSIDE workerd, so the numbers measure the pool,
// not wrangler dev's HTTP proxy. One `POST /run` is one measured run: N concurrent async loops for
// a fixed time, each timing its own operations with workerd's clock; the samples go back as JSON.
//
// workerd's clock (Date.now() and performance.now() alike) moves in whole milliseconds, also
// locally. An operation that takes d ms therefore reads floor(d) or floor(d) + 1; bench/run.ts
// turns those readings into percentiles (±0.5 ms) and an exact mean.
import { DurableObject } from "cloudflare:workers";
import pg from "pg";
import postgres from "postgres";
import { createPool, getConnection, pgOptions, postgresOptions } from "../src/index.ts";
import type { Env as CoordinatorEnv } from "../worker/index.ts";

export { PoolCoordinator, PoolService } from "../worker/index.ts";

interface Env extends CoordinatorEnv {
  DATABASE_URL: string;
  BENCH_ECHO: DurableObjectNamespace<BenchEcho>;
  /** Two-process run only: BenchEcho in the coordinator's workerd (the cost of forwarding a call there). */
  BENCH_ECHO_REMOTE?: DurableObjectNamespace<BenchEcho>;
}

/**
 * What the Worker contenders do per operation (bench/lib/config.ts describes them); `oneshot` is
 * `builtin-loop`'s old name (v1's bench Worker knows only that one); the last four measure workerd
 * itself, for context (`pg-pipelined` is `pgjs-workerd`'s old name).
 */
export type WorkerContender =
  | "naive" | "pgjs-workerd" | "builtin-loop" | "builtin-req" | "pgjs-edgepool-loop" | "pgjs-edgepool-req" | "pg-edgepool-loop" | "pg-edgepool-req"
  | "oneshot" | "lease" | "rpc-noop" | "rpc-noop-remote" | "rpc-pg" | "pg-exclusive" | "pg-pipelined";
/** The two statements of the suite. */
export type QueryName = "select1" | "point";

/** One measured run, as `POST /run` takes it. */
export interface RunRequest {
  contender: WorkerContender;
  query: QueryName;
  concurrency: number;
  durationMs: number;
  warmupMs: number;
  /** The edgepool tenant (one coordinator per tenant). */
  tenant: string;
}

/** What a run returns. Times in milliseconds, read with workerd's whole-millisecond clock. */
export interface RunResult {
  /** Operations and queries of the warm-up (not timed; for CPU per query). */
  warmupOps: number;
  warmupQueries: number;
  ops: number;
  queries: number;
  errors: number;
  firstError?: string;
  elapsedMs: number;
  /** One per operation. */
  latencies: number[];
  /** Lease only: time to get the lease, and to give it back, per lease. */
  acquire?: number[];
  release?: number[];
}

// The point select's table is pgbench's accounts at scale 1. (Only handlers may be exported from
// a Worker module: workerd refuses a plain value among its exports.)
const ACCOUNTS = 100_000;
const POINT_SELECT = "select abalance from pgbench_accounts where aid = $1";

/**
 * Durable Objects with none of edgepool's code: `ping` does nothing (what one Workers RPC round trip to a
 * Durable Object costs); `pg` runs the query on the one postgres.js connection the object owns (the floor
 * for a one-shot query: an RPC whose handler uses a socket).
 */
export class BenchEcho extends DurableObject<Env> {
  #sql: postgres.Sql | undefined;

  async ping(value: number): Promise<{ ok: true; value: number }> {
    return { ok: true, value };
  }

  async pg(text: string, params: unknown[]): Promise<{ ok: true; value: { rows: unknown[]; count: number; command: string } }> {
    this.#sql ??= postgres(this.env.DATABASE_URL, {
      max: 1, prepare: false, idle_timeout: 0, max_lifetime: 0, onnotice: () => {},
      // Its own name: the object keeps this connection, and the bench waits for `bench:context` ones to close between probes.
      connection: { application_name: "bench:rpc-pg" },
    });
    const result = await this.#sql.unsafe(text, params as never[]);
    return { ok: true, value: { rows: [...result], count: result.count, command: result.command } };
  }
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    try {
      if (request.method === "POST" && url.pathname === "/setup") {
        const { tenants, options } = (await request.json()) as { tenants: string[]; options: Record<string, unknown> };
        for (const tenant of tenants) {
          const stub = env.EDGEPOOL.get(env.EDGEPOOL.idFromName(tenant));
          const reply = await stub.configure(tenant, { connectionString: env.DATABASE_URL, options });
          if (!reply.ok) throw new Error(reply.error.message);
        }
        return Response.json({ ok: true });
      }
      if (request.method === "POST" && url.pathname === "/run") {
        return Response.json(await run(env, (await request.json()) as RunRequest));
      }
      if (url.pathname === "/stats") {
        const db = createPool(env.EDGEPOOL, { tenant: url.searchParams.get("tenant") ?? "default" });
        return Response.json(await db.stats());
      }
      return new Response("not found\n", { status: 404 });
    } catch (error) {
      return Response.json({ error: error instanceof Error ? `${error.name}: ${error.message}` : String(error) }, { status: 500 });
    }
  },
} satisfies ExportedHandler<Env>;

interface Samples {
  latencies: number[];
  acquire: number[];
  release: number[];
}

/** One operation; records its timings into `into` when given; returns how many queries it ran. */
type Operation = (into?: Samples) => Promise<number>;

/** The statement and its parameters, as the edgepool client sends them for the `db.sql` templates below. */
function statement(query: QueryName): [string, number[]] {
  return query === "point" ? [POINT_SELECT, [1 + Math.floor(Math.random() * ACCOUNTS)]] : ["select 1", []];
}

/** postgres.js inside workerd without the pool, for context: the socket's share of a query's cost. */
function contextOperation(env: Env, req: RunRequest): { op: Operation; close?: () => Promise<void> } {
  if (req.contender === "rpc-noop" || req.contender === "rpc-noop-remote" || req.contender === "rpc-pg") {
    const namespace = req.contender === "rpc-noop-remote" ? (env.BENCH_ECHO_REMOTE ?? env.BENCH_ECHO) : env.BENCH_ECHO;
    const stub = namespace.get(namespace.idFromName(req.contender));
    return {
      op: async (into) => {
        const [text, params] = statement(req.query);
        const t0 = Date.now();
        if (req.contender === "rpc-pg") await stub.pg(text, params);
        else await stub.ping(1);
        into?.latencies.push(Date.now() - t0);
        return 1;
      },
    };
  }
  const options = { prepare: false, idle_timeout: 0, max_lifetime: 0, onnotice: () => {}, connection: { application_name: "bench:context" } } as const;
  // 10 connections, each running one query at a time, handed out first come first served: the pool's discipline without RPC.
  const connections = Array.from({ length: 10 }, () => postgres(env.DATABASE_URL, { ...options, max: 1 }));
  const free = [...connections];
  const waiting: ((sql: postgres.Sql) => void)[] = [];
  return {
    op: async (into) => {
      const [text, params] = statement(req.query);
      const t0 = Date.now();
      const sql = free.pop() ?? (await new Promise<postgres.Sql>((resolve) => waiting.push(resolve)));
      try {
        await sql.unsafe(text, params);
      } finally {
        const next = waiting.shift();
        if (next) next(sql);
        else free.push(sql);
      }
      into?.latencies.push(Date.now() - t0);
      return 1;
    },
    close: async () => {
      await Promise.all(connections.map((sql) => sql.end({ timeout: 1 })));
    },
  };
}

/** One client loop's operation, and what closes what it kept open. */
interface LoopOperation {
  op: Operation;
  close?: () => Promise<void>;
}

/** Makes the operation of one client loop: called once per loop, so a `-loop` contender's client lives as long as its loop. */
function loopOperation(env: Env, req: RunRequest): () => LoopOperation {
  const { tenant } = req;
  const timed = (query: (text: string, params: number[]) => Promise<unknown>): Operation => async (into) => {
    const [text, params] = statement(req.query);
    const t0 = Date.now();
    await query(text, params);
    into?.latencies.push(Date.now() - t0);
    return 1;
  };
  switch (req.contender) {
    case "naive":
      return () => ({
        op: async (into) => {
          const [text, params] = statement(req.query);
          const t0 = Date.now();
          // A fresh connection per request: TCP + SCRAM every time, like a Worker without a pool.
          const sql = postgres(env.DATABASE_URL, {
            max: 1, prepare: false, idle_timeout: 0, max_lifetime: 0, onnotice: () => {},
            connection: { application_name: "bench:naive" },
          });
          try {
            await sql.unsafe(text, params);
            into?.latencies.push(Date.now() - t0);
          } finally {
            // Off the latency path (a Worker would close it in waitUntil), but inside the loop.
            await sql.end({ timeout: 0 }).catch(() => {});
          }
          return 1;
        },
      });
    case "pgjs-workerd":
    case "pg-pipelined": {
      // postgres.js itself in the bench Worker, one pool of 10 shared by the loops (it pipelines
      // when there are more queries than connections): no RPC, no coordinator. The in-workerd ceiling.
      const sql = postgres(env.DATABASE_URL, {
        max: 10, prepare: false, idle_timeout: 0, max_lifetime: 0, onnotice: () => {}, connection: { application_name: "bench:workerd" },
      });
      let loops = 0;
      return () => {
        loops++;
        return { op: timed((text, params) => sql.unsafe(text, params)), close: async () => void (--loops === 0 && (await sql.end({ timeout: 1 }))) };
      };
    }
    case "oneshot":
    case "builtin-loop":
      return () => {
        const db = createPool(env.EDGEPOOL, { tenant });
        return { op: timed((text, params) => db.query(text, params)) };
      };
    case "builtin-req":
      // What a Worker request does: a client, one query.
      return () => ({ op: timed((text, params) => createPool(env.EDGEPOOL, { tenant }).query(text, params)) });
    case "pgjs-edgepool-loop":
      return () => {
        const sql = postgres(postgresOptions(env.EDGEPOOL, { tenant }));
        return {
          op: timed((text, params) => (params.length ? sql`select abalance from pgbench_accounts where aid = ${params[0]!}` : sql`select 1`)),
          close: () => sql.end({ timeout: 1 }),
        };
      };
    case "pgjs-edgepool-req":
      return () => ({
        op: async (into) => {
          const [, params] = statement(req.query);
          const t0 = Date.now();
          const sql = postgres(postgresOptions(env.EDGEPOOL, { tenant }));
          try {
            await (params.length ? sql`select abalance from pgbench_accounts where aid = ${params[0]!}` : sql`select 1`);
            into?.latencies.push(Date.now() - t0);
          } finally {
            // After the answer (a Worker would end it in waitUntil), but inside the loop and its CPU.
            await sql.end();
          }
          return 1;
        },
      });
    case "pg-edgepool-loop":
      return () => {
        const client = new pg.Client(pgOptions(env.EDGEPOOL, { tenant }));
        const connected = client.connect();
        return {
          op: timed(async (text, params) => {
            await connected;
            return client.query(text, params);
          }),
          close: () => client.end(),
        };
      };
    case "pg-edgepool-req":
      return () => ({
        op: async (into) => {
          const [text, params] = statement(req.query);
          const t0 = Date.now();
          const client = new pg.Client(pgOptions(env.EDGEPOOL, { tenant }));
          try {
            await client.connect();
            await client.query(text, params);
            into?.latencies.push(Date.now() - t0);
          } finally {
            await client.end();
          }
          return 1;
        },
      });
    case "lease":
      return () => ({
        op: async (into) => {
          const t0 = Date.now();
          const conn = await getConnection(env.EDGEPOOL, { tenant });
          const t1 = Date.now();
          try {
            for (let i = 0; i < 3; i++) {
              if (req.query === "point") await conn.sql`select abalance from pgbench_accounts where aid = ${1 + Math.floor(Math.random() * ACCOUNTS)}`;
              else await conn.sql`select 1`;
            }
          } catch (error) {
            // A failed lease is given back, not leaked (the error still counts).
            await conn.release().catch(() => {});
            throw error;
          }
          const t2 = Date.now();
          await conn.release();
          const t3 = Date.now();
          if (into) {
            into.acquire.push(t1 - t0);
            into.release.push(t3 - t2);
            into.latencies.push(t3 - t0);
          }
          return 3;
        },
      });
    default: {
      const { op, close } = contextOperation(env, req);
      let loops = 0;
      return () => {
        loops++;
        return { op, close: async () => void (--loops === 0 && (await close?.())) };
      };
    }
  }
}

/** Runs one loop per operation in `ops` until `durationMs` has passed. */
async function loops(ops: LoopOperation[], durationMs: number, into?: Samples) {
  let ops_ = 0;
  let queries = 0;
  let errors = 0;
  let firstError: string | undefined;
  const started = Date.now();
  const deadline = started + durationMs;
  await Promise.all(ops.map(async ({ op }) => {
    while (Date.now() < deadline) {
      try {
        // Not `queries += await op()`: that reads `queries` before the await and loses the other loops' counts.
        const ran = await op(into);
        queries += ran;
        ops_++;
      } catch (error) {
        errors++;
        firstError ??= error instanceof Error ? `${error.name}: ${error.message}` : String(error);
        // An error storm must not spin: give the pool a moment.
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    }
  }));
  return { ops: ops_, queries, errors, firstError, elapsedMs: Date.now() - started };
}

async function run(env: Env, req: RunRequest): Promise<RunResult> {
  const { concurrency, durationMs, warmupMs } = req;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new Error(`bad concurrency ${concurrency}`);
  const make = loopOperation(env, req);
  const ops = Array.from({ length: concurrency }, make);
  try {
    const warmup = warmupMs > 0 ? await loops(ops, warmupMs) : { ops: 0, queries: 0 };
    const into: Samples = { latencies: [], acquire: [], release: [] };
    const result = await loops(ops, durationMs, into);
    return {
      ...result,
      warmupOps: warmup.ops,
      warmupQueries: warmup.queries,
      latencies: into.latencies,
      ...(req.contender === "lease" ? { acquire: into.acquire, release: into.release } : {}),
    };
  } finally {
    await Promise.all(ops.map(({ close }) => close?.().catch(() => {})));
  }
}
