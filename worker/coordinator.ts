import { connect } from "cloudflare:sockets";
import { DurableObject } from "cloudflare:workers";
import { PoolError } from "../src/errors.ts";
import type { Acquired, CallOptions, CoordinatorApi, Reply, WireMode } from "../src/protocol.ts";
import { tokenSecret, verifyToken } from "./auth.ts";
import { bridge } from "./connect.ts";
import type { Env } from "./env.ts";
import { FrontDoor, type FrontStats } from "./front.ts";
import { LeaseTarget } from "./lease-target.ts";
import { refuse } from "./tunnel.ts";
import { systemClock } from "./pool/clock.ts";
import type { LogLine } from "./pool/events.ts";
import { callOption, reply } from "./reply.ts";
import type { Connector } from "./server/socket.ts";
import { checkTenant, configFromEnv, DEFAULT_TENANT, maskPassword, resolveConfig, type TenantConfig } from "./tenant.ts";

/** A tenant's configuration as the admin API shows it: never the password. */
export interface TenantView {
  tenant: string;
  connectionString: string;
  options: TenantConfig["options"];
}

function view(tenant: string, config: TenantConfig): TenantView {
  return { tenant, connectionString: maskPassword(config.connectionString), options: config.options };
}

interface StoredTenant {
  tenant: string;
  config: TenantConfig;
}

/** The headers the coordinator Worker forwards a tunnel's checked per-session options in. */
export const SESSION_OPTION_HEADERS: readonly (readonly [keyof CallOptions, string])[] = [
  ["acquireTimeoutMs", "X-Edgepool-Acquire-Timeout-Ms"],
  ["queryTimeoutMs", "X-Edgepool-Query-Timeout-Ms"],
];

/** Frontend bytes one built-in batch may carry (RPC carries 32 MiB). */
const MAX_BATCH_BYTES = 30 * 1024 * 1024;

/** `cloudflare:sockets` as the server connections' connector. */
const sockets: Connector = (address, options) => connect(address, options);

/**
 * The Durable Object that owns one tenant's database sockets. A thin shell:
 * it keeps the tenant's config, builds its front door (wire sessions over the
 * pool), answers RPC, and runs the janitor from its alarm.
 */
export class PoolCoordinator extends DurableObject<Env> implements CoordinatorApi {
  private tenant: string | undefined;
  private config: TenantConfig | undefined;
  private front: FrontDoor | undefined;
  private nextLeaseId = 1;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    const stored = ctx.storage.kv.get<StoredTenant>("tenant");
    // Opening initialConnections when the coordinator starts, not on the first borrower.
    if (stored) this.start(stored.tenant, stored.config);
  }

  /** Sets (or replaces) this tenant's database and pool options; the old pool drains gracefully. */
  async configure(tenant: string, input: { connectionString?: unknown; options?: unknown }): Promise<Reply<TenantView>> {
    return reply(String(tenant), async () => {
      this.checkRoute(checkTenant(tenant));
      const config = resolveConfig(tenant, input ?? {});
      this.ctx.storage.kv.put("tenant", { tenant, config } satisfies StoredTenant);
      this.start(tenant, config);
      return view(tenant, config);
    });
  }

  /** This tenant's configuration with the password masked. */
  async describe(tenant: string): Promise<Reply<TenantView>> {
    return reply(String(tenant), async () => {
      this.frontFor(tenant);
      if (!this.config) throw new PoolError("UNKNOWN_TENANT", tenant, `tenant "${tenant}" was deleted`);
      return view(tenant, this.config);
    });
  }

  /**
   * Deletes this tenant: its config is forgotten, its pool takes no new
   * sessions (`POOL_CLOSED`), existing ones finish, then its sockets close.
   */
  async remove(tenant: string): Promise<Reply<{ tenant: string; leased: number }>> {
    return reply(String(tenant), async () => {
      const front = this.frontFor(tenant);
      this.ctx.storage.kv.delete("tenant");
      this.config = undefined;
      const { leased } = front.stats();
      void front.drain();
      return { tenant, leased };
    });
  }

  /**
   * What the coordinator Worker forwards once it checked the token, the mode
   * and the session's options (`X-Edgepool-*` headers): a remote client's
   * WebSocket (`/connect`), accepted and bridged to a wire session. With
   * `X-Edgepool-Auth: password` the session first checks its startup password
   * as a client token.
   */
  override async fetch(request: Request): Promise<Response> {
    const tenant = request.headers.get("X-Edgepool-Tenant") ?? "";
    const mode = request.headers.get("X-Edgepool-Mode") as WireMode;
    const options: CallOptions = {};
    for (const [key, header] of SESSION_OPTION_HEADERS) {
      const value = request.headers.get(header);
      if (value !== null) options[key] = Number(value);
    }
    const [client, server] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
    server.accept();
    bridge(server, {
      tenant,
      mode,
      open: (inbound) => {
        try {
          return this.frontFor(tenant).connect(mode, inbound, options);
        } catch (error) {
          return refuse(inbound, error, tenant);
        }
      },
      checkPassword: request.headers.get("X-Edgepool-Auth") === "password"
        ? (password) => verifyToken(tokenSecret(this.env, tenant), password, tenant, Math.floor(Date.now() / 1000))
        : undefined,
    });
    const headers = request.headers.get("Sec-WebSocket-Protocol") === "edgepool" ? { "Sec-WebSocket-Protocol": "edgepool" } : undefined;
    return new Response(null, { status: 101, webSocket: client, headers });
  }

  /**
   * A driver's client session (postgres.js, pg): `inbound` carries its
   * protocol bytes, startup first; the answer streams back. The session ends
   * with the caller's request (its streams break) or when the driver ends it.
   */
  async wire(tenant: string, options: { mode?: WireMode } | undefined, inbound: ReadableStream<Uint8Array>): Promise<ReadableStream<Uint8Array>> {
    try {
      const mode = options?.mode ?? "transaction";
      if (mode !== "transaction" && mode !== "session") {
        throw new PoolError("INVALID_OPTION", String(tenant), `option "mode" = ${JSON.stringify(mode)} must be "transaction" or "session"`);
      }
      return this.frontFor(tenant).connect(mode, inbound);
    } catch (error) {
      return refuse(inbound, error, String(tenant));
    }
  }

  /** A built-in one-shot: one batch of frontend bytes in transaction mode, answered up to its last ReadyForQuery. */
  async run(tenant: string, bytes: Uint8Array, options?: CallOptions): Promise<Reply<Uint8Array>> {
    return reply(String(tenant), async () => {
      const front = this.frontFor(tenant);
      checkBatch(tenant, bytes);
      const runner = front.batches("transaction", { acquireTimeoutMs: callOption(tenant, options, "acquireTimeoutMs") });
      try {
        return await front.run(runner, bytes, { queryTimeoutMs: callOption(tenant, options, "queryTimeoutMs") });
      } finally {
        void runner.endWhenDone();
      }
    });
  }

  /** A built-in lease (session mode): one connection pinned until `release()` or until the caller's stub is disposed. */
  async acquire(tenant: string, options?: CallOptions): Promise<Reply<Acquired>> {
    return reply(String(tenant), async () => {
      const front = this.frontFor(tenant);
      const { runner, pid } = await front.lease({ acquireTimeoutMs: callOption(tenant, options, "acquireTimeoutMs") });
      const id = this.nextLeaseId++;
      return { id, pid, lease: new LeaseTarget(front, runner, id) };
    });
  }

  /** The tenant pool's live counters, its client sessions and its sizing verdict. */
  async stats(tenant: string): Promise<Reply<FrontStats>> {
    return reply(String(tenant), async () => this.frontFor(tenant).stats());
  }

  /** The janitor: runs what is due and sets the alarm to the next deadline (via the pool's `schedule`). */
  override async alarm(): Promise<void> {
    this.front?.sweep();
  }

  private frontFor(tenant: string): FrontDoor {
    this.checkRoute(checkTenant(tenant));
    if (this.front) return this.front;
    const config = tenant === DEFAULT_TENANT ? configFromEnv(this.env) : undefined;
    if (!config) {
      throw new PoolError("UNKNOWN_TENANT", tenant, tenant === DEFAULT_TENANT
        ? `tenant "${tenant}" has no database: set DATABASE_URL (wrangler secret put DATABASE_URL)`
        : `tenant "${tenant}" is not configured`);
    }
    return this.start(tenant, config);
  }

  private checkRoute(tenant: string): void {
    if (this.tenant !== undefined && this.tenant !== tenant) {
      throw new PoolError("BAD_REQUEST", tenant, `this coordinator serves tenant "${this.tenant}", not "${tenant}"`);
    }
  }

  private start(tenant: string, config: TenantConfig): FrontDoor {
    this.tenant = tenant;
    this.config = config;
    if (this.front) {
      this.front.configure(config);
      return this.front;
    }
    this.front = new FrontDoor({
      tenant,
      clock: systemClock,
      connector: sockets,
      schedule: (at) => {
        if (at !== undefined) this.ctx.storage.setAlarm(at).catch(() => {});
      },
      log: (line) => this.logged(line),
    }, config);
    return this.front;
  }

  private logged(line: LogLine): void {
    printLine(line);
  }
}

/** Prints a pool event as one JSON line (what `wrangler tail` and Workers Logs show); its fields never hold a secret. */
function printLine(line: LogLine): void {
  console.log(JSON.stringify(line));
}

/** Checks a built-in batch where it enters: bytes, within the RPC bound. */
function checkBatch(tenant: string, bytes: unknown): asserts bytes is Uint8Array {
  if (!(bytes instanceof Uint8Array)) throw new PoolError("BAD_REQUEST", tenant, `a batch must be bytes (Uint8Array), got ${bytes === null ? "null" : typeof bytes}`);
  if (bytes.length === 0) throw new PoolError("BAD_REQUEST", tenant, "a batch is empty");
  if (bytes.length > MAX_BATCH_BYTES) throw new PoolError("BAD_REQUEST", tenant, `a batch of ${bytes.length} bytes exceeds ${MAX_BATCH_BYTES}; pass large data with COPY through a driver`);
}
