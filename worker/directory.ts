import { DurableObject } from "cloudflare:workers";
import type { TenantView } from "./coordinator.ts";
import type { Env } from "./env.ts";
import type { FrontStats } from "./front.ts";

/**
 * Directory shards: each tenant reports to one, chosen by a hash of its name,
 * so that reports spread over several objects (one object serves about 1,000
 * requests/s). Fixed: changing it would strand every tenant's entry.
 */
export const DIRECTORY_SHARDS = 8;

/** One tenant as the directory knows it: its config (password masked) and its latest reported counters. */
export interface DirectoryEntry {
  tenant: string;
  connectionString: string;
  options: TenantView["options"];
  /** The latest counters the coordinator reported; `null` until its first report. */
  stats: FrontStats | null;
  /** When the config was last set (ISO). */
  configuredAt: string;
  /** When `stats` was taken (ISO), or `null`. */
  reportedAt: string | null;
}

interface Row extends Record<string, SqlStorageValue> {
  tenant: string;
  config: string;
  stats: string | null;
  configured_at: number;
  reported_at: number | null;
}

/**
 * The tenant directory: one shard of the list of tenants with their configs
 * and latest counters, in the object's SQLite storage. Coordinators write to
 * it (on configure and delete, and from their alarm when their counters
 * changed); `GET /v1/tenants` and `/metrics` read only the directory, never a
 * coordinator.
 */
export class TenantDirectory extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`create table if not exists tenants (
      tenant text primary key, config text not null, stats text, configured_at integer not null, reported_at integer
    )`);
  }

  /** A tenant was configured: its (masked) config replaces the old one; its counters stay until the next report. */
  register(view: TenantView, at: number): void {
    this.sql.exec(
      `insert into tenants (tenant, config, configured_at) values (?, ?, ?)
       on conflict (tenant) do update set config = excluded.config, configured_at = excluded.configured_at`,
      view.tenant, JSON.stringify(config(view)), at,
    );
  }

  /** A tenant was deleted. */
  unregister(tenant: string): void {
    this.sql.exec("delete from tenants where tenant = ?", tenant);
  }

  /** A coordinator's counters at `at`; also repairs a missed `register` (the view comes along). */
  report(view: TenantView, stats: FrontStats, at: number): void {
    this.sql.exec(
      `insert into tenants (tenant, config, stats, configured_at, reported_at) values (?, ?, ?, ?, ?)
       on conflict (tenant) do update set config = excluded.config, stats = excluded.stats, reported_at = excluded.reported_at`,
      view.tenant, JSON.stringify(config(view)), JSON.stringify(stats), at, at,
    );
  }

  /** Up to `limit` tenants whose name sorts after `after`, in name order. */
  list(after: string, limit: number): DirectoryEntry[] {
    const rows = this.sql.exec<Row>("select * from tenants where tenant > ? order by tenant limit ?", after, limit).toArray();
    return rows.map(entry);
  }
}

function config(view: TenantView): Pick<TenantView, "connectionString" | "options"> {
  return { connectionString: view.connectionString, options: view.options };
}

function entry(row: Row): DirectoryEntry {
  const { connectionString, options } = JSON.parse(row.config) as TenantView;
  return {
    tenant: row.tenant,
    connectionString,
    options,
    stats: row.stats === null ? null : (JSON.parse(row.stats) as FrontStats),
    configuredAt: new Date(row.configured_at).toISOString(),
    reportedAt: row.reported_at === null ? null : new Date(row.reported_at).toISOString(),
  };
}

/** The directory shard a tenant reports to (FNV-1a of its name), or undefined without the `EDGEPOOL_DIRECTORY` binding. */
export function directoryFor(env: Env, tenant: string): DurableObjectStub<TenantDirectory> | undefined {
  const namespace = env.EDGEPOOL_DIRECTORY;
  if (!namespace) return undefined;
  let hash = 0x811c9dc5;
  for (let i = 0; i < tenant.length; i++) hash = Math.imul(hash ^ tenant.charCodeAt(i), 0x01000193);
  return namespace.get(namespace.idFromName(`shard-${(hash >>> 0) % DIRECTORY_SHARDS}`));
}

/** Every directory shard. */
export function directoryShards(namespace: DurableObjectNamespace<TenantDirectory>): DurableObjectStub<TenantDirectory>[] {
  return Array.from({ length: DIRECTORY_SHARDS }, (_, i) => namespace.get(namespace.idFromName(`shard-${i}`)));
}

/**
 * One page of the directory across its shards, in name order: each shard's
 * next `limit` names after `after`, merged. `cursor` is the page's last name
 * when more may follow, else `null`.
 */
export async function listTenants(namespace: DurableObjectNamespace<TenantDirectory>, after: string, limit: number): Promise<{ tenants: DirectoryEntry[]; cursor: string | null }> {
  // One more than the page from each shard: a shard holding more than a page says that more follow.
  const pages = await Promise.all(directoryShards(namespace).map((shard) => shard.list(after, limit + 1)));
  const merged = pages.flat().sort((a, b) => (a.tenant < b.tenant ? -1 : a.tenant > b.tenant ? 1 : 0));
  const tenants = merged.slice(0, limit);
  const more = merged.length > limit;
  return { tenants, cursor: more ? tenants[tenants.length - 1]!.tenant : null };
}
