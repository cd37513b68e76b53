import { oneShotLost, PoolError } from "./errors.ts";
import { showValue } from "./show.ts";
import { Connection, unwrap } from "./connection.ts";
import { decodeResult, encodeQuery } from "./codec.ts";
import type { Acquired, CallOptions, CoordinatorApi, LeaseApi, Reply, ShardWireTarget, WireTarget } from "./protocol.ts";
import { remoteCoordinator } from "./remote.ts";
import type { Result } from "./result.ts";
import { checkQuery, statement } from "./sql.ts";
import { notDelivered, routed, routerFor, shardName, type ShardRouter } from "./shards.ts";

/** Something with `idFromName`/`get`: a Durable Object namespace binding. */
interface NamespaceLike {
  idFromName(name: string): unknown;
  get(id: never): unknown;
}

/**
 * Where the pool lives: the `PoolCoordinator` Durable Object namespace, a
 * service binding to the coordinator Worker's `PoolService` entrypoint, or the
 * coordinator Worker's https URL (remote clients, with a `token`).
 */
export type PoolTarget = NamespaceLike | CoordinatorApi | ServiceLike | string;

/** A service binding to the coordinator Worker's `PoolService` (it also answers `fetch`). */
interface ServiceLike {
  fetch(input: Request | string, init?: RequestInit): Promise<Response>;
}

/** Client options. */
export interface ClientOptions {
  /** The tenant whose pool to use; `default` is the single-tenant deployment's. */
  tenant?: string;
  /** How long to wait for a free connection, overriding the pool's `acquireTimeoutMs`. */
  acquireTimeoutMs?: number;
  /** Cancels a query on the server after this long (`QUERY_TIMEOUT`), overriding the pool's `queryTimeoutMs`. */
  queryTimeoutMs?: number;
  /** A client token for this tenant (remote URL targets only; from `POST /v1/tenants/:tenant/tokens`). */
  token?: string;
}

const CLIENT_KEYS = new Set(["tenant", "acquireTimeoutMs", "queryTimeoutMs", "token"]);

/** A tenant pool as edge code sees it. */
export interface PoolClient {
  readonly tenant: string;
  /** One-shot query (transaction mode); interpolated values are bound parameters. */
  sql<Row = Record<string, unknown>>(strings: TemplateStringsArray, ...values: unknown[]): Promise<Result<Row>>;
  /** One-shot query with `$1..$n` parameters. */
  query<Row = Record<string, unknown>>(text: string, params?: unknown[]): Promise<Result<Row>>;
  /** Leases a connection and runs `fn` inside BEGIN/COMMIT (ROLLBACK on throw). */
  begin<T>(fn: (tx: Connection) => Promise<T>): Promise<T>;
  /** Leases a connection (session mode). */
  getConnection(options?: Omit<ClientOptions, "tenant">): Promise<Connection>;
  /** The pool's live counters and sizing verdict. */
  stats(): Promise<Record<string, unknown>>;
  /**
   * Ends this client (as postgres.js `sql.end()` / pg `pool.end()`): waits for
   * its one-shots in flight, then closes the sessions a remote client keeps
   * open, so a Node, Deno or Bun script exits at once. Later calls fail with
   * `POOL_CLOSED`; leases already taken end with their own `release()`. The
   * tenant's pool itself is untouched.
   */
  end(): Promise<void>;
}

/** Creates a client for one tenant's pool. */
export function createPool(target: PoolTarget, options: ClientOptions = {}): PoolClient {
  const resolved = resolve(target, options);
  const { tenant, call, coordinator } = resolved;
  let ended = false;
  const inflight = new Set<Promise<unknown>>();
  const open = () => {
    if (ended) throw new PoolError("POOL_CLOSED", tenant, `tenant "${tenant}": this client was ended (end()); create a new one with createPool`);
  };
  const oneShot = async <Row>(text: string, params: unknown[]): Promise<Result<Row>> => {
    const bytes = encodeQuery(text, params);
    // A one-shot may have run when its call broke, so only an undelivered call goes to another shard.
    const reply = await session(resolved, (c) => c.run(tenant, bytes, call), notDelivered, true);
    return decodeResult<Row>(unwrap(reply.answer), tenant);
  };
  // Async, so that a refused query rejects its promise rather than throwing where it is called.
  const run = async <Row>(text: string, params: unknown[] = []): Promise<Result<Row>> => {
    open();
    checkQuery(tenant, text, params);
    const running = oneShot<Row>(text, params);
    inflight.add(running);
    try {
      return await running;
    } finally {
      inflight.delete(running);
    }
  };
  const client: PoolClient = {
    tenant,
    async sql(strings, ...values) {
      const { text, params } = statement(tenant, strings, values);
      return run(text, params);
    },
    query: run,
    async begin(fn) {
      const conn = await client.getConnection();
      try {
        return await conn.begin(fn);
      } finally {
        await conn.release();
      }
    },
    // Overrides are checked like any options; the lease comes over this client's stub.
    getConnection: async (more = {}) => {
      open();
      return acquire({ ...resolved, call: resolve(target, { ...options, ...more, tenant }).call });
    },
    async stats() {
      return unwrap(await rpc(tenant, () => coordinator().stats(tenant))) as Record<string, unknown>;
    },
    async end() {
      ended = true;
      await Promise.allSettled(inflight);
      resolved.end?.();
    },
  };
  return client;
}

/** Leases a connection from a tenant's pool, waiting at most `acquireTimeoutMs`. */
export async function getConnection(target: PoolTarget, options: ClientOptions = {}): Promise<Connection> {
  return acquire(resolve(target, options));
}

async function acquire(resolved: Resolved): Promise<Connection> {
  const { tenant, call, direct } = resolved;
  // Nothing of the caller's ran before a lease is granted, so any failed acquire may go to another shard.
  let shard = 0;
  const { answer, leave } = await session(resolved, (c, s) => ((shard = s), c.acquire(tenant, call)), () => true, false);
  let value: Acquired;
  try {
    value = unwrap(answer);
  } catch (error) {
    leave();
    throw error;
  }
  const { id, pid, lease, close } = value;
  const give = giveBack(lease, close, direct);
  // A lease call that breaks means its shard went away: new sessions avoid it at once.
  const watched: LeaseApi = {
    run: (bytes, options) => lease.run(bytes, options).catch((error: unknown) => {
      resolved.broken(shard);
      throw error;
    }),
    release: () => lease.release(),
  };
  // The lease counts on its shard (for this client's choices) until it goes back.
  return new Connection(tenant, id, pid, watched, call, () => (leave(), give()));
}

/**
 * A session (one-shot or lease) on one of the tenant's shards: with a
 * Durable Object namespace the client picks the shard (power of two choices,
 * `routed`); through a service binding or a URL the coordinator Worker does.
 * A one-shot's count on its shard ends with its answer.
 */
async function session<T>(resolved: Resolved, call: (c: CoordinatorApi, shard: number) => Promise<Reply<T>>, retryOnThrow: (error: unknown) => boolean, oneShot: boolean): Promise<{ answer: Reply<T>; leave: () => void }> {
  const { tenant, router } = resolved;
  // A one-shot whose call broke may have run: LEASE_LOST says so, never a silent retry.
  const broke = oneShot ? oneShotLost : undefined;
  if (!router) return { answer: await rpc(tenant, () => call(resolved.coordinator(), 0), broke), leave: () => {} };
  const routedSession = await rpc(tenant, async () => {
    const done = await routed(router, resolved.stubOf, call, retryOnThrow, resolved.broken);
    return { ok: true as const, value: done };
  }, broke);
  const done = unwrap(routedSession);
  if (oneShot) done.leave();
  return done;
}

/**
 * How a lease goes back. The Durable Object's own stub: disposing it runs the
 * lease's disposer in the coordinator, no round trip. Through a service
 * binding the disposal reaches the coordinator only when the entrypoint's
 * call ends, so `release()` is called first. A remote lease ends with its
 * WebSocket session.
 */
function giveBack(lease: LeaseApi, close: (() => void) | undefined, direct: boolean): () => unknown {
  // An RPC stub answers any property name, so only the disposer is looked up on it.
  const dispose = () => (lease as Partial<Disposable>)[Symbol.dispose]?.();
  if (close) return close;
  if (direct) return dispose;
  return () => lease.release().finally(dispose);
}

/** What a target resolves to: the tenant, the per-call options, the coordinator, and whether it is the Durable Object itself. */
interface Resolved {
  tenant: string;
  call: CallOptions;
  coordinator: () => CoordinatorApi;
  direct: boolean;
  /** With a Durable Object namespace: the tenant's shards as this isolate knows them, and each shard's stub. */
  router?: ShardRouter;
  stubOf: (shard: number) => CoordinatorApi;
  /** A call to this shard broke: its stub is dropped (a stub of a reset object keeps failing) and the router avoids it for a while. */
  broken: (shard: number) => void;
  /** Closes what the transport keeps open (a remote client's sessions). */
  end?: () => void;
}

/** Checks client options where they enter and picks the transport for the target. */
function resolve(target: PoolTarget, options: ClientOptions): Resolved {
  const tenant = options.tenant ?? "default";
  for (const key of Object.keys(options)) {
    if (!CLIENT_KEYS.has(key)) throw new PoolError("INVALID_OPTION", tenant, `option "${key}" is not a client option (known: ${[...CLIENT_KEYS].join(", ")})`);
  }
  if (typeof tenant !== "string") throw new PoolError("INVALID_OPTION", String(tenant), `option "tenant" must be a string`);
  const call: CallOptions = {};
  if (options.acquireTimeoutMs !== undefined) call.acquireTimeoutMs = options.acquireTimeoutMs;
  if (options.queryTimeoutMs !== undefined) call.queryTimeoutMs = options.queryTimeoutMs;
  if (typeof target !== "string") {
    // One stub per client, made on first use: a stub per call costs a lookup and a new RPC session each time.
    const stubs = new Map<number, CoordinatorApi>();
    const stubOf = (shard: number) => {
      let stub = stubs.get(shard);
      if (!stub) stubs.set(shard, (stub = isNamespace(target) ? shardStub(target, tenant, shard) : (target as CoordinatorApi)));
      return stub;
    };
    const router = isNamespace(target) ? routerFor(target, tenant) : undefined;
    const broken = (shard: number) => {
      stubs.delete(shard);
      router?.fail(shard);
    };
    return { tenant, call, coordinator: () => stubOf(0), direct: isNamespace(target), router, stubOf, broken };
  }
  checkRemoteTarget(target, tenant, options.token);
  const remote = remoteCoordinator(target, tenant, options.token);
  return { tenant, call, coordinator: () => remote, direct: false, stubOf: () => remote, broken: () => {}, end: () => remote.end() };
}

/** A remote target: the coordinator's http(s) URL and a client token (what `createPool`, `connect` and the driver options check alike). */
export function checkRemoteTarget(target: string, tenant: string, token: unknown): asserts token is string {
  if (!/^https?:\/\//.test(target) || !URL.canParse(target)) {
    throw new PoolError("INVALID_OPTION", tenant, `target ${showValue("target", target)} must be the coordinator's http(s) URL`);
  }
  if (typeof token !== "string" || token === "") {
    throw new PoolError("INVALID_OPTION", tenant, `option "token" is required for a remote target (POST /v1/tenants/${tenant}/tokens issues one)`);
  }
}

function isNamespace(target: Exclude<PoolTarget, string>): target is NamespaceLike {
  // A service binding answers every property name (it is an RPC stub), so test for `fetch` first:
  // a Durable Object namespace has none.
  const t = target as Partial<NamespaceLike> & { fetch?: unknown };
  return typeof t.fetch !== "function" && typeof t.idFromName === "function" && typeof t.get === "function";
}

/** The stub of one shard of a tenant behind a Durable Object namespace (`tenant`, `tenant#1`, ...). */
function shardStub(target: NamespaceLike, tenant: string, shard: number): CoordinatorApi & ShardWireTarget {
  return target.get(target.idFromName(shardName(tenant, shard)) as never) as CoordinatorApi & ShardWireTarget;
}

/**
 * A driver session's coordinator: with a namespace, a shard picked by power
 * of two choices on what this isolate learnt (the answer says how to end its
 * count), and another shard once if the session's call is not taken.
 */
export function wireShards(target: PoolTarget | WireTarget, tenant: string): { router: ShardRouter; stubOf: (shard: number) => ShardWireTarget } | undefined {
  if (typeof target === "string" || !isNamespace(target as Exclude<PoolTarget, string>)) return undefined;
  const namespace = target as NamespaceLike;
  return { router: routerFor(namespace, tenant), stubOf: (shard) => shardStub(namespace, tenant, shard) };
}

/** A call that failed in transport (not with a reply) becomes an `INTERNAL` error naming the cause. */
async function rpc<T>(tenant: string, call: () => Promise<Reply<T>>, broke?: (tenant: string, cause: string) => PoolError): Promise<Reply<T>> {
  try {
    return await call();
  } catch (error) {
    if (error instanceof PoolError) throw error;
    const cause = error instanceof Error ? error.message : String(error);
    throw broke?.(tenant, cause) ?? new PoolError("INTERNAL", tenant, `tenant "${tenant}" coordinator call failed: ${cause}`);
  }
}

