import { connect } from "cloudflare:sockets";
import { DurableObject } from "cloudflare:workers";
import { PoolError } from "../src/errors.ts";
import type { Acquired, CallOptions, CoordinatorApi, Reply, WireMode } from "../src/protocol.ts";
import { fail } from "./admin.ts";
import { checkClientToken } from "./auth.ts";
import { bridge } from "./connect.ts";
import { directoryFor } from "./directory.ts";
import type { Env } from "./env.ts";
import { FrontDoor, type FrontStats } from "./front.ts";
import { LeaseTarget } from "./lease-target.ts";
import { refuse, refuseTo } from "./tunnel.ts";
import { systemClock, within } from "./pool/clock.ts";
import type { LogLine } from "./pool/events.ts";
import type { ActivitySample, TenantActivity } from "./activity.ts";
import { callOption, reply } from "./reply.ts";
import type { Connector } from "./server/socket.ts";
import { BudgetLink } from "./budget/link.ts";
import { shardOptions, type PoolOptions } from "./pool/options.ts";
import { HINT_HEADER, shardName, type HintedWire, type ShardHint } from "../src/shards.ts";
import { sumShards, type ShardedStats } from "./shards.ts";
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
  /** Which of the tenant's shards this object is; 0 (absent) for the tenant's own object, its config home. */
  shard?: number;
}

/** What a shard that left its tenant's layout keeps: whose it was and how many shards the tenant has now. */
interface RetiredShard {
  tenant: string;
  shards: number;
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
  /** Which of the tenant's shards this object serves (`tenant#i` for i > 0). */
  private shard = 0;
  /** Set once a smaller `shards` removed this shard: the tenant's shard count now (it takes no new sessions). */
  private retiredTo: number | undefined;
  private front: FrontDoor | undefined;
  private nextLeaseId = 1;
  /** When the janitor wants to run next, as the pool last said. */
  private janitorAt: number | undefined;
  /** When the counters are due to go to the directory; set while they may have changed since the last report. */
  private reportAt: number | undefined;
  /** The alarm this object set and that has not fired yet. */
  private alarmAt: number | undefined;
  /** Past this time that alarm counts as lost and is set again (see `arm`). */
  private alarmLostAt = Infinity;
  /** Set while `alarm()` runs: the alarm is set once, when it ends. */
  private alarming = false;
  private lastReportAt = 0;
  /** The counters last reported, as JSON: an unchanged pool is not reported again. */
  private reported = "";
  private readonly reportIntervalMs: number;
  /** Connections and waiters over the last minutes, one sample a second at most (the dashboard's chart). */
  private readonly history: ActivitySample[] = [];

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.reportIntervalMs = reportInterval(env.EDGEPOOL_REPORT_INTERVAL_MS);
    const stored = ctx.storage.kv.get<StoredTenant>("tenant");
    // Opening initialConnections when the coordinator starts, not on the first borrower.
    this.shard = stored?.shard ?? 0;
    if (stored) this.start(stored.tenant, stored.config);
    const retired = stored ? undefined : ctx.storage.kv.get<RetiredShard>("retired");
    if (retired) {
      this.tenant = retired.tenant;
      this.retiredTo = retired.shards;
    }
  }

  /** Sets (or replaces) this tenant's database and pool options; the old pool drains gracefully. */
  async configure(tenant: string, input: { connectionString?: unknown; options?: unknown }): Promise<Reply<TenantView>> {
    return reply(String(tenant), async () => {
      this.checkRoute(checkTenant(tenant));
      if (this.shard !== 0) throw new PoolError("BAD_REQUEST", tenant, `this object is shard ${this.shard} of tenant "${tenant}"; configure the tenant itself`);
      const config = resolveConfig(tenant, input ?? {});
      const before = this.config?.options.shards ?? 1;
      const shards = config.options.shards ?? 1;
      // New shards first: answers announce a shard count only once every shard it counts takes sessions.
      await this.layout(tenant, config, before, shards, "added");
      this.ctx.storage.kv.put("tenant", { tenant, config } satisfies StoredTenant);
      this.start(tenant, config);
      await this.layout(tenant, config, before, shards, "kept");
      // Listed at once; if the directory cannot be reached, the next report (which carries the config) registers it.
      await directoryFor(this.env, tenant)?.register(view(tenant, config), Date.now()).catch(() => this.changed());
      return view(tenant, config);
    });
  }

  /**
   * Shard 0 configures its sibling shards `tenant#1..` with the tenant's
   * config (each runs on its share): the `added` ones (beyond `before`)
   * before shard 0 takes the new config, the `kept` ones after it; then it
   * retires the shards a smaller `shards` left over (they finish the sessions
   * they have and take no new ones).
   */
  private async layout(tenant: string, config: TenantConfig, before: number, shards: number, which: "added" | "kept"): Promise<void> {
    const placed = config.options.locationHint;
    const calls: Promise<Reply<unknown>>[] = [];
    const from = which === "added" ? before : 1;
    const to = which === "added" ? shards : Math.min(before, shards);
    for (let i = from; i < to; i++) calls.push(this.sibling(tenant, i, placed).configureShard(tenant, config, i));
    if (which === "kept") for (let i = shards; i < before; i++) calls.push(this.sibling(tenant, i, placed).retire(tenant, i, shards));
    const answers = await Promise.all(calls);
    const failed = answers.find((a) => !a.ok);
    if (failed && !failed.ok) throw new PoolError("INTERNAL", tenant, `tenant "${tenant}": a shard could not be configured: ${failed.error.message}`);
  }

  /** The stub of shard `i` of this tenant, placed by the tenant's `locationHint`. */
  private sibling(tenant: string, shard: number, locationHint = this.config?.options.locationHint): DurableObjectStub<PoolCoordinator> {
    const namespace = this.env.EDGEPOOL;
    return namespace.get(namespace.idFromName(shardName(tenant, shard)), locationHint ? { locationHint } : undefined);
  }

  /** Makes this object shard `shard` (> 0) of `tenant`, with the tenant's config; called by shard 0. */
  async configureShard(tenant: string, input: TenantConfig, shard: number): Promise<Reply<TenantView>> {
    return reply(String(tenant), async () => {
      this.checkRoute(checkTenant(tenant));
      if (!Number.isSafeInteger(shard) || shard < 1) throw new PoolError("BAD_REQUEST", tenant, `shard ${String(shard)} must be an integer >= 1`);
      const config = resolveConfig(tenant, input ?? {});
      if (shard >= (config.options.shards ?? 1)) throw new PoolError("BAD_REQUEST", tenant, `shard ${shard} is beyond shards = ${config.options.shards ?? 1}`);
      this.shard = shard;
      this.retiredTo = undefined;
      this.ctx.storage.kv.delete("retired");
      this.ctx.storage.kv.put("tenant", { tenant, config, shard } satisfies StoredTenant);
      this.start(tenant, config);
      return view(tenant, config);
    });
  }

  /**
   * Shard 0 removed this shard (its tenant has `shards` now): it forgets the
   * config and takes no new sessions — one-shots and leases are refused with
   * a hint of the new count (the client goes to another shard), a driver's
   * new session is handed to a shard that stays — while the sessions it has
   * finish here; its connections close after the last one ended.
   */
  async retire(tenant: string, shard: number, shards: number): Promise<Reply<{ tenant: string; clients: number }>> {
    return reply(String(tenant), async () => {
      this.checkRoute(checkTenant(tenant));
      if (!Number.isSafeInteger(shard) || !Number.isSafeInteger(shards) || shards < 1 || shard < shards) {
        throw new PoolError("BAD_REQUEST", tenant, `shard ${String(shard)} is not beyond shards = ${String(shards)}`);
      }
      this.tenant = tenant;
      this.shard = shard;
      this.retiredTo = shards;
      this.config = undefined;
      this.ctx.storage.kv.delete("tenant");
      this.ctx.storage.kv.put("retired", { tenant, shards } satisfies RetiredShard);
      const clients = this.front?.stats().clients ?? 0;
      this.front?.retire();
      return { tenant, clients };
    });
  }

  /** A retired shard refuses new sessions with `POOL_CLOSED` (their answer carries the tenant's shard count now). */
  private taking(tenant: string): void {
    if (this.retiredTo === undefined) return;
    this.checkRoute(checkTenant(tenant));
    throw new PoolError("POOL_CLOSED", tenant, `tenant "${tenant}" shard ${this.shard} was removed (shards = ${this.retiredTo}): it takes no new sessions`);
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
      const shards = this.shard === 0 ? (this.config?.options.shards ?? 1) : 1;
      this.ctx.storage.kv.delete("tenant");
      this.config = undefined;
      this.reportAt = undefined;
      if (this.shard === 0) await directoryFor(this.env, tenant)?.unregister(tenant);
      await Promise.all(Array.from({ length: shards - 1 }, (_, i) => this.sibling(tenant, i + 1).remove(tenant)));
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
   * as a client token. A session this shard cannot take is refused before
   * the upgrade (`UNKNOWN_TENANT`, `POOL_CLOSED`: the Worker may try another
   * shard); the upgrade carries this shard's hint (`HINT_HEADER`).
   */
  override async fetch(request: Request): Promise<Response> {
    const tenant = request.headers.get("X-Edgepool-Tenant") ?? "";
    const mode = request.headers.get("X-Edgepool-Mode") as WireMode;
    const options: CallOptions = {};
    for (const [key, header] of SESSION_OPTION_HEADERS) {
      const value = request.headers.get(header);
      if (value !== null) options[key] = Number(value);
    }
    let hint: ShardHint;
    try {
      this.taking(tenant);
      hint = this.sessionHint(tenant);
    } catch (error) {
      // A retired shard's refusal carries the tenant's shard count now, so the route picks among the shards that stay.
      const refused = fail(error, tenant);
      if (this.retiredTo !== undefined) refused.headers.set(HINT_HEADER, JSON.stringify({ shards: this.retiredTo, load: 0 } satisfies ShardHint));
      return refused;
    }
    const [client, server] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
    server.accept();
    bridge(server, {
      tenant,
      mode,
      open: (inbound, out) => {
        try {
          this.frontFor(tenant).connectTo(mode, inbound, out, options);
        } catch (error) {
          refuseTo(inbound, out, error, tenant);
        }
      },
      checkPassword: request.headers.get("X-Edgepool-Auth") === "password"
        ? (password) => checkClientToken(this.env, tenant, password)
        : undefined,
    });
    const headers = new Headers({ [HINT_HEADER]: JSON.stringify(hint) });
    if (request.headers.get("Sec-WebSocket-Protocol") === "edgepool") headers.set("Sec-WebSocket-Protocol", "edgepool");
    return new Response(null, { status: 101, webSocket: client, headers });
  }

  /** This shard's hint in an answer that opens a client session (an upgrade, a driver's `wire`): that session counts, about to borrow. Throws what refuses the session. */
  private sessionHint(tenant: string): ShardHint {
    const front = this.frontFor(tenant);
    if (!this.config) throw new PoolError("POOL_CLOSED", tenant, `tenant "${tenant}" was deleted: it takes no new sessions`);
    return { shards: this.config.options.shards ?? 1, load: front.load() + 1 };
  }

  /**
   * A driver's client session (postgres.js, pg): `inbound` carries its
   * protocol bytes, startup first; the answer streams back. The session ends
   * with the caller's request (its streams break) or when the driver ends it.
   * Asked with `hint: true` (a client that picks shards), the answer is the
   * stream with this shard's hint; a refused session's stream comes alone.
   */
  async wire(tenant: string, options: { mode?: WireMode; hint?: boolean } | undefined, inbound: ReadableStream<Uint8Array>): Promise<ReadableStream<Uint8Array> | HintedWire> {
    try {
      const mode = options?.mode ?? "transaction";
      if (mode !== "transaction" && mode !== "session") {
        throw new PoolError("INVALID_OPTION", String(tenant), `option "mode" = ${JSON.stringify(mode)} must be "transaction" or "session"`);
      }
      // A driver's session cannot be sent back: a retired shard hands it to a shard that stays (whose answer, hint included, goes back as is).
      if (this.retiredTo !== undefined) {
        this.checkRoute(checkTenant(tenant));
        return await this.sibling(tenant, Math.floor(Math.random() * this.retiredTo)).wire(tenant, options, inbound);
      }
      if (options?.hint !== true) return this.frontFor(tenant).connect(mode, inbound);
      const hint = this.sessionHint(tenant);
      return { stream: this.front!.connect(mode, inbound), hint };
    } catch (error) {
      return refuse(inbound, error, String(tenant));
    }
  }

  /** A built-in one-shot: one batch of frontend bytes in transaction mode, answered up to its last ReadyForQuery. */
  async run(tenant: string, bytes: Uint8Array, options?: CallOptions): Promise<Reply<Uint8Array>> {
    return this.hinted(reply(String(tenant), async () => {
      this.taking(tenant);
      const front = this.frontFor(tenant);
      checkBatch(tenant, bytes);
      const runner = front.batches("transaction", { acquireTimeoutMs: callOption(tenant, options, "acquireTimeoutMs") });
      try {
        return await front.run(runner, bytes, { queryTimeoutMs: callOption(tenant, options, "queryTimeoutMs") });
      } finally {
        void runner.endWhenDone();
      }
    }));
  }

  /** A built-in lease (session mode): one connection pinned until `release()` or until the caller's stub is disposed. */
  async acquire(tenant: string, options?: CallOptions): Promise<Reply<Acquired>> {
    return this.hinted(reply(String(tenant), async () => {
      this.taking(tenant);
      const front = this.frontFor(tenant);
      const { runner, pid } = await front.lease({ acquireTimeoutMs: callOption(tenant, options, "acquireTimeoutMs") });
      const id = this.nextLeaseId++;
      return { id, pid, lease: new LeaseTarget(front, runner, id) };
    }));
  }

  /** An answer with this shard's load hint: clients learn the shard count and pick the less loaded of two shards. */
  private async hinted<T>(answer: Promise<Reply<T>>): Promise<Reply<T>> {
    const value = await answer;
    const shards = this.config ? (this.config.options.shards ?? 1) : this.retiredTo;
    if (shards === undefined) return value;
    const hint: ShardHint = { shards, load: this.front?.load() ?? 0 };
    return { ...value, hint };
  }

  /**
   * The tenant pool's live counters, its client sessions and its sizing
   * verdict. Shard 0 of a sharded tenant answers the sums over all shards,
   * with each shard's own counters under `shards`.
   */
  async stats(tenant: string): Promise<Reply<ShardedStats>> {
    return reply(String(tenant), async () => {
      const own = this.frontFor(tenant).stats();
      const shards = this.shard === 0 ? (this.config?.options.shards ?? 1) : 1;
      if (shards <= 1) return own;
      const others = await Promise.all(Array.from({ length: shards - 1 }, async (_, i) => {
        const answer = await this.sibling(tenant, i + 1).shardStats(tenant);
        if (!answer.ok) throw new PoolError("INTERNAL", tenant, `tenant "${tenant}" shard ${i + 1}: ${answer.error.message}`);
        return { ...(answer.value as FrontStats), shard: i + 1 };
      }));
      return sumShards([{ ...own, shard: 0 }, ...others]);
    });
  }

  /** One shard's own counters (what shard 0 sums). */
  async shardStats(tenant: string): Promise<Reply<FrontStats>> {
    return reply(String(tenant), async () => this.frontFor(tenant).stats());
  }

  /** The janitor: runs what is due and sets the alarm to the next deadline (via the pool's `schedule`). */
  override async alarm(): Promise<void> {
    this.alarmAt = undefined;
    this.alarmLostAt = Infinity;
    this.alarming = true;
    try {
      this.front?.sweep();
      if (this.reportAt !== undefined && Date.now() >= this.reportAt) await this.report();
    } finally {
      this.alarming = false;
      this.arm();
    }
  }

  /**
   * For the dashboard's view of one tenant: the live counters, the last
   * pool events and the samples of connections and waiters kept here.
   */
  async activity(tenant: string): Promise<Reply<TenantActivity>> {
    return reply(String(tenant), async () => {
      const front = this.frontFor(tenant);
      if (!this.config) throw new PoolError("UNKNOWN_TENANT", tenant, `tenant "${tenant}" was deleted`);
      const stats = front.stats();
      this.sample(stats);
      return { tenant, stats, events: front.events(), history: [...this.history] };
    });
  }

  private frontFor(tenant: string): FrontDoor {
    this.checkRoute(checkTenant(tenant));
    if (this.front) {
      this.changed();
      return this.front;
    }
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
    config = { ...config, options: shardOptions(config.options, this.shard) };
    if (this.front) {
      this.front.configure(config);
      return this.front;
    }
    this.front = new FrontDoor({
      tenant,
      shard: this.shard,
      clock: systemClock,
      connector: sockets,
      schedule: (at) => {
        this.janitorAt = at;
        this.arm();
      },
      log: (line) => this.logged(line),
      capacity: (options) => this.budgetLink(options),
    }, config);
    return this.front;
  }

  /** The budget link of a new pool (option `budget`): each pool instance (each shard's, each config's) is its own holder, so a restarted coordinator's old grant expires rather than being taken over. */
  private budgetLink(options: PoolOptions): BudgetLink | undefined {
    const budget = options.budget;
    if (budget === undefined) return undefined;
    const namespace = this.env.EDGEPOOL_BUDGETS;
    const tenant = this.tenant ?? "";
    return new BudgetLink({
      budget,
      tenant,
      shard: this.shard,
      holder: `${shardName(tenant, this.shard)}:${crypto.randomUUID()}`,
      clock: systemClock,
      call: async (report) => {
        if (!namespace) throw new Error("the Worker has no EDGEPOOL_BUDGETS binding");
        const answer = await namespace.get(namespace.idFromName(budget)).lease(budget, report);
        if (!answer.ok) throw new Error(answer.error.message);
        return answer.value;
      },
    });
  }

  private logged(line: LogLine): void {
    printLine(line);
    this.changed();
  }

  /**
   * The alarm at the earlier of the janitor's and the report's time; set
   * again only when that moves earlier, or it fired, or it is
   * `ALARM_LOST_MS` late: an alarm that never comes would otherwise stop the
   * janitor and the reports for good (it is a storage write, so a late one
   * is set again once per `ALARM_LOST_MS` at most).
   */
  private arm(): void {
    if (this.alarming) return;
    const at = Math.min(this.janitorAt ?? Infinity, this.reportAt ?? Infinity);
    if (at === Infinity || (this.alarmAt !== undefined && this.alarmAt <= at && Date.now() < this.alarmLostAt)) return;
    const lost = this.alarmAt !== undefined && Date.now() >= this.alarmLostAt ? this.alarmAt : undefined;
    this.alarmAt = at;
    this.alarmLostAt = Math.max(at, Date.now()) + ALARM_LOST_MS;
    this.ctx.storage.setAlarm(at).catch(() => {});
    if (lost !== undefined && this.tenant !== undefined) this.front?.note({ event: "alarm-late", tenant: this.tenant, lateMs: Date.now() - lost });
  }

  /**
   * The counters may have changed: a report is due at most `reportIntervalMs`
   * after the last one. Cheap on the hot path (a clock read and two comparisons).
   */
  private changed(): void {
    // Every call checks for a lost alarm (see arm()), with or without a directory.
    if (Date.now() >= this.alarmLostAt) this.arm();
    // The directory lists tenants: shard 0 reports for its tenant, the other shards do not overwrite it.
    if (this.reportAt !== undefined || !this.env.EDGEPOOL_DIRECTORY || this.shard !== 0) return;
    this.reportAt = Math.max(Date.now(), this.lastReportAt + this.reportIntervalMs);
    this.arm();
  }

  /**
   * Sends the counters to the directory if they changed since the last
   * report; while the pool is busy (sessions, leases, waiters, connections
   * opening or closing) the next report stays due one interval later.
   */
  private async report(): Promise<void> {
    this.reportAt = undefined;
    const { front, config, tenant } = this;
    if (!front || !config || tenant === undefined) return;
    const now = Date.now();
    const stats = front.stats();
    this.sample(stats);
    const json = JSON.stringify({ ...stats, maxWaitMs: stats.waiting > 0 ? stats.maxWaitMs : 0 });
    let failed = false;
    if (json !== this.reported) {
      try {
        // Bounded: the janitor's next run waits for this alarm to end.
        const directory = directoryFor(this.env, tenant);
        if (directory) await within(systemClock, directory.report(view(tenant, config), stats, now), REPORT_TIMEOUT_MS, `the directory did not answer within ${REPORT_TIMEOUT_MS} ms`);
        this.reported = json;
        this.lastReportAt = now;
      } catch {
        failed = true;
      }
    }
    const busy = stats.clients > 0 || stats.leased > 0 || stats.waiting > 0 || stats.opening > 0 || stats.closing > 0;
    if ((busy || failed) && this.config) this.reportAt = now + this.reportIntervalMs;
  }

  /** Keeps a sample of connections and waiters, one a second at most, for the last 10 minutes. */
  private sample(stats: FrontStats): void {
    const now = Date.now();
    const last = this.history[this.history.length - 1];
    if (last && now - last.at < 1_000) return;
    this.history.push({ at: now, idle: stats.idle, active: stats.leased, opening: stats.opening, waiting: stats.waiting, clients: stats.clients });
    while (this.history.length > 0 && now - this.history[0]!.at > HISTORY_MS) this.history.shift();
  }
}

/** How late an alarm may be before it counts as lost and is set again (production delays some by up to a minute). */
export const ALARM_LOST_MS = 10_000;
/** How long a report to the directory may take before it counts as failed (and is retried one interval later). */
const REPORT_TIMEOUT_MS = 5_000;

/** How long the dashboard's samples of a tenant are kept. */
const HISTORY_MS = 10 * 60_000;

/** `EDGEPOOL_REPORT_INTERVAL_MS`: 5000 unless set to an integer from 100 to 300000. */
function reportInterval(raw: unknown): number {
  const ms = typeof raw === "string" && /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
  return ms >= 100 && ms <= 300_000 ? ms : 5_000;
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
