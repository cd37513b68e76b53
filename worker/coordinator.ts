import { DurableObject } from "cloudflare:workers";
import { PoolError } from "../src/errors.ts";
import type { Acquired, CallOptions, CoordinatorApi, Reply } from "../src/protocol.ts";
import type { QueryResult } from "../src/result.ts";
import { pgDriver, type PgHandle } from "./driver.ts";
import type { Env } from "./env.ts";
import { systemClock } from "./pool/clock.ts";
import type { Lease } from "./pool/connection.ts";
import { LeaseTarget } from "./lease-target.ts";
import { Pool, type PoolStats } from "./pool/pool.ts";
import { changesSession, checkQuery, execute } from "./query.ts";
import { RemoteApi, serveRemote } from "./remote.ts";
import { callOption, queryLimits, reply } from "./reply.ts";
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

/**
 * The Durable Object that owns one tenant's database sockets. A thin shell:
 * it builds the pool from the tenant's config, answers RPC, and runs the
 * janitor from its alarm.
 */
export class PoolCoordinator extends DurableObject<Env> implements CoordinatorApi {
  private tenant: string | undefined;
  private config: TenantConfig | undefined;
  private pool: Pool<PgHandle> | undefined;

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
      const old = this.pool;
      this.start(tenant, config);
      void old?.drain();
      return view(tenant, config);
    });
  }

  /** This tenant's configuration with the password masked. */
  async describe(tenant: string): Promise<Reply<TenantView>> {
    return reply(String(tenant), async () => {
      this.poolFor(tenant);
      if (!this.config) throw new PoolError("UNKNOWN_TENANT", tenant, `tenant "${tenant}" was deleted`);
      return view(tenant, this.config);
    });
  }

  /**
   * Deletes this tenant: its config is forgotten, its pool takes no new leases
   * (`POOL_CLOSED`), existing leases finish, then its sockets close.
   */
  async remove(tenant: string): Promise<Reply<{ tenant: string; leased: number }>> {
    return reply(String(tenant), async () => {
      const pool = this.poolFor(tenant);
      this.ctx.storage.kv.delete("tenant");
      this.config = undefined;
      const { leased } = pool.stats();
      void pool.drain();
      return { tenant, leased };
    });
  }

  /**
   * The remote (Cap'n Web) endpoint: HTTP batch for one-shot queries, a
   * WebSocket session for leases. The coordinator Worker has checked the token
   * and names the tenant in `X-Edgepool-Tenant`.
   */
  override async fetch(request: Request): Promise<Response> {
    return serveRemote(request, new RemoteApi(this, request.headers.get("X-Edgepool-Tenant") ?? ""));
  }

  /** A one-shot query in transaction mode: any free connection, given back at once. */
  async query(tenant: string, text: string, params?: unknown[], options?: CallOptions): Promise<Reply<QueryResult>> {
    return reply(String(tenant), async () => {
      checkQuery(tenant, text, params);
      let reset = changesSession(text);
      // A statement that leaves no session state may be pipelined on a busy connection.
      const [pool, lease] = await this.borrow(tenant, options, !reset);
      const limits = queryLimits(pool, options);
      try {
        return await pool.use(lease, (handle) => execute(handle, text, params, limits));
      } catch (error) {
        reset = true;
        throw error;
      } finally {
        pool.release(lease, { reset });
      }
    });
  }

  /** A lease (session mode): one connection pinned until `release()` or until the caller's stub is disposed. */
  async acquire(tenant: string, options?: CallOptions): Promise<Reply<Acquired>> {
    return reply(String(tenant), async () => {
      const [pool, lease] = await this.borrow(tenant, options);
      return { id: lease.id, pid: lease.connection.handle!.pid, lease: new LeaseTarget(pool, lease) };
    });
  }

  /** The tenant pool's live counters and sizing verdict. */
  async stats(tenant: string): Promise<Reply<PoolStats>> {
    return reply(String(tenant), async () => this.poolFor(tenant).stats());
  }

  /** The janitor: runs what is due and sets the alarm to the next deadline (via the pool's `schedule`). */
  override async alarm(): Promise<void> {
    this.pool?.sweep();
  }

  /** Acquires from the tenant's pool; a waiter caught by a config change moves to the new pool instead of failing. */
  private async borrow(tenant: string, options: CallOptions | undefined, shared = false): Promise<[Pool<PgHandle>, Lease<PgHandle>]> {
    const timeoutMs = callOption(tenant, options, "acquireTimeoutMs");
    for (;;) {
      const pool = this.poolFor(tenant);
      try {
        return [pool, await pool.acquire({ timeoutMs, shared })];
      } catch (error) {
        const replaced = error instanceof PoolError && error.code === "POOL_CLOSED" && this.pool !== pool && this.config !== undefined;
        if (!replaced) throw error;
      }
    }
  }

  private poolFor(tenant: string): Pool<PgHandle> {
    this.checkRoute(checkTenant(tenant));
    if (this.pool) return this.pool;
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

  private start(tenant: string, config: TenantConfig): Pool<PgHandle> {
    this.tenant = tenant;
    this.config = config;
    const pool: Pool<PgHandle> = new Pool({
      tenant,
      options: config.options,
      clock: systemClock,
      driver: pgDriver({ connectionString: config.connectionString, tenant, options: config.options, onBroken: (handle) => pool.markBroken(handle) }),
      schedule: (at) => {
        if (at !== undefined && this.pool === pool) this.ctx.storage.setAlarm(at).catch(() => {});
      },
    });
    this.pool = pool;
    return pool;
  }
}
