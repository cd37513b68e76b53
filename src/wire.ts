import type { Duplex } from "node:stream";
import { PoolError } from "./errors.ts";
import { checkRemoteTarget, wireShards, type PoolTarget } from "./pool.ts";
import type { WireMode, WireTarget } from "./protocol.ts";
import { hintedWire, routed } from "./shards.ts";
import { WireSocket } from "./socket.ts";
import { openTunnel } from "./websocket.ts";

/**
 * The driver front door (design §2): a socket tunnelled to a tenant's
 * coordinator, and option sets that make postgres.js and pg use it.
 */

/** Which tenant a driver session belongs to, and how it borrows server connections. */
export interface WireOptions {
  tenant: string;
  /** `transaction` (default): a server connection per transaction; `session`: one for the whole session (LISTEN, session state). */
  mode?: WireMode;
  /** A client token for this tenant: required when the target is the coordinator's URL (a WebSocket per session). */
  token?: string;
}

/** Bytes the client may queue towards the coordinator before `write()` returns false. */
const INBOUND_HIGH_WATER_BYTES = 64 * 1024;

/** Keys that would take a driver off the tunnel (or onto TLS it cannot do over it). */
const TUNNEL_KEYS: Record<"postgres" | "pg", ReadonlySet<string>> = {
  postgres: new Set(["socket", "host", "port", "path"]),
  pg: new Set(["stream", "host", "port", "connectionString"]),
};

/** The coordinator's pool options (design §3): set on the tenant, never per driver. */
const POOL_KEYS = new Set([
  "maxConnections", "minConnections", "initialConnections", "minIdle", "maxIdle", "acquireTimeoutMs",
  "maxWaiters", "idleTimeoutMs", "maxLifetimeMs", "maxUses", "reuseCooldownMs", "leaseTimeoutMs",
  "connectTimeoutMs", "maxConcurrentConnects", "resetQuery", "validateAfterIdleMs", "queryTimeoutMs",
  "maxPreparedStatements", "budget", "shards", "locationHint",
]);

/**
 * Opens one client session to `tenant`'s coordinator and returns it as a
 * Node-style socket (postgres.js' `socket`, pg's `stream`). Bytes written
 * before the coordinator answers are kept and sent in order.
 */
export function connect(target: PoolTarget | WireTarget, options: WireOptions): WireSocket {
  const { tenant, mode, token } = checkWire(target, options, (key) => `option "${key}" is not a connect() option (known: tenant, mode, token)`);
  return open(target, tenant, mode, token);
}

function open(target: PoolTarget | WireTarget, tenant: string, mode: WireMode, token: string | undefined): WireSocket {
  if (typeof target === "string") return new WireSocket(openTunnel(target, { tenant, mode, token }));
  const shards = wireShards(target, tenant);
  const inbound = () => new TransformStream<Uint8Array, Uint8Array>(undefined, new ByteLengthQueuingStrategy({ highWaterMark: INBOUND_HIGH_WATER_BYTES }));
  if (!shards) {
    const { readable, writable } = inbound();
    // Not a namespace: the PoolService binding (or a coordinator stub) takes the session as is.
    return new WireSocket((target as WireTarget).wire(tenant, { mode }, readable).then((stream) => ({ readable: stream, writable })));
  }
  // WireSocket writes nothing before the call answers, so a call that failed sent nothing: another shard may take the session.
  const opened = routed(shards.router, shards.stubOf, async (stub) => {
    const { readable, writable } = inbound();
    const { stream, hint } = hintedWire(await stub.wire(tenant, { mode, hint: true }, readable));
    return { ok: true, value: { readable: stream, writable }, hint };
  }, () => true);
  return new WireSocket(opened.then(({ answer, leave }) => (leave(), answer.value)));
}

/**
 * Options for `postgres(options)` whose every connection (cancels included) is
 * a session tunnelled to `tenant`. Defaults suit one instance per request;
 * the caller's own postgres.js options win, except those that would leave the
 * tunnel (`socket`, `host`, `port`, `path`, `ssl`), rejected with `INVALID_OPTION`.
 */
export function postgresOptions<T extends object = {}>(target: PoolTarget | WireTarget, options: WireOptions & T) {
  const { tenant, mode, token, rest } = checkDriver(target, options, "postgres");
  return {
    // One connection per request: the request is one executor of the pool (design §3's sizing), and postgres.js pipelines on it.
    max: 1,
    // A driver left idle this long gives its session back (and, in session mode, the server connection).
    idle_timeout: 10,
    // Rotating physical connections is the coordinator's job; the session to it need not.
    max_lifetime: 0,
    // The array-type lookup would cost a query per instance, that is per request; arrays arrive as their text form.
    fetch_types: false,
    // The coordinator answers the startup itself and ignores these; fixed so postgres.js never reads the environment for them.
    user: "edgepool",
    database: tenant,
    ...rest,
    socket: () => open(target, tenant, mode, token),
    ssl: false as const,
  } as Omit<T, keyof WireOptions> & {
    max: number; idle_timeout: number; max_lifetime: number; fetch_types: boolean; user: string; database: string;
    socket: () => WireSocket; ssl: false;
  };
}

/**
 * Config for `new pg.Pool(config)` or `new pg.Client(config)`: `stream` is a
 * function, so each pg connection opens its own session to `tenant`. The
 * caller's own pg options win, except those that would leave the tunnel
 * (`stream`, `host`, `port`, `connectionString`, `ssl`).
 */
export function pgOptions<T extends object = {}>(target: PoolTarget | WireTarget, options: WireOptions & T) {
  const { tenant, mode, token, rest } = checkDriver(target, options, "pg");
  return {
    // One connection per request, as for postgres.js (pg.Pool only; pg.Client ignores it).
    max: 1,
    idleTimeoutMillis: 10_000,
    user: "edgepool",
    database: tenant,
    ...rest,
    // pg 8.23 calls a function `stream` once per connection; typed as pg's Duplex, which WireSocket stands in for.
    stream: (() => open(target, tenant, mode, token)) as unknown as () => Duplex,
    ssl: false as const,
  } as Omit<T, keyof WireOptions> & {
    max: number; idleTimeoutMillis: number; user: string; database: string; stream: () => Duplex; ssl: false;
  };
}

function checkWire(target: PoolTarget | WireTarget, options: Partial<WireOptions> & object, unknownKey: (key: string) => string | undefined): { tenant: string; mode: WireMode; token: string | undefined; rest: Record<string, unknown> } {
  const { tenant, mode = "transaction", token, ...rest } = options as WireOptions & Record<string, unknown>;
  if (typeof tenant !== "string" || tenant === "") throw new PoolError("INVALID_OPTION", String(tenant ?? ""), `option "tenant" must be a non-empty string`);
  if (mode !== "transaction" && mode !== "session") throw new PoolError("INVALID_OPTION", tenant, `option "mode" must be "transaction" or "session"`);
  if (typeof target === "string") {
    checkRemoteTarget(target, tenant, token);
  } else if (token !== undefined) {
    throw new PoolError("INVALID_OPTION", tenant, `option "token" is for a remote (URL) target only: a binding is its own credential`);
  }
  for (const key of Object.keys(rest)) {
    const problem = unknownKey(key);
    if (problem) throw new PoolError("INVALID_OPTION", tenant, problem);
  }
  return { tenant, mode, token, rest };
}

function checkDriver(target: PoolTarget | WireTarget, options: WireOptions & object, driver: "postgres" | "pg") {
  const checked = checkWire(target, options, (key) => {
    if (POOL_KEYS.has(key)) return `option "${key}" is a pool option: set it on the tenant, not on a driver`;
    if (TUNNEL_KEYS[driver].has(key)) return `option "${key}" cannot be set: the ${driver} driver talks to tenant "${options.tenant}" through edgepool's socket`;
    return undefined;
  });
  if (checked.rest.ssl !== undefined && checked.rest.ssl !== false) {
    throw new PoolError("INVALID_OPTION", checked.tenant, `option "ssl" must be false or absent: the tunnel to the coordinator is not a TCP socket (the coordinator does TLS to the database)`);
  }
  return checked;
}
