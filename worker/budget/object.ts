import { DurableObject } from "cloudflare:workers";
import { PoolError } from "../../src/errors.ts";
import type { Reply } from "../../src/protocol.ts";
import { reply } from "../reply.ts";
import { allocate, occupied, type BudgetReport, type Grant, type Holding } from "./allocate.ts";
import { checkBudgetName, resolveBudget, type BudgetConfig } from "./config.ts";

/** A budget as the admin API shows it, with its live holdings. */
export interface BudgetView extends BudgetConfig {
  budget: string;
  /** Connections counted against the budget now (grants, or what a holder still holds above its grant). */
  used: number;
  holders: { tenant: string; shard: number; held: number; wanted: number; granted: number; expiresInMs: number }[];
}

interface Stored {
  budget: string;
  config: BudgetConfig;
}

/**
 * A connection budget for one database server (one Durable Object per budget
 * name, SQLite storage): its settings and every coordinator's grant. Grants
 * are kept in storage, so a reset of this object forgets none; a grant not
 * renewed within `leaseTtlMs` expires.
 */
export class Budget extends DurableObject {
  private stored: Stored | undefined;
  private readonly holdings = new Map<string, Holding>();

  constructor(ctx: DurableObjectState, env: unknown) {
    super(ctx, env as never);
    this.stored = ctx.storage.kv.get<Stored>("budget");
    for (const [key, value] of ctx.storage.kv.list<Holding>({ prefix: "holding:" })) this.holdings.set(key.slice("holding:".length), value);
  }

  /** Sets (or replaces) the budget's settings; grants above a lowered budget shrink as their holders renew. */
  async configure(budget: string, input: unknown): Promise<Reply<BudgetView>> {
    return reply("", async () => {
      checkBudgetName(budget);
      this.stored = { budget, config: resolveBudget(input) };
      this.ctx.storage.kv.put("budget", this.stored);
      return this.view();
    });
  }

  /** The budget's settings and live holdings. */
  async describe(budget: string): Promise<Reply<BudgetView>> {
    return reply("", async () => {
      this.config(budget);
      return this.view();
    });
  }

  /** Deletes the budget: its holders get no more grants (they shed to nothing as their leases end). */
  async remove(budget: string): Promise<Reply<{ budget: string; used: number }>> {
    return reply("", async () => {
      this.config(budget);
      const { used } = this.view();
      this.stored = undefined;
      this.ctx.storage.kv.delete("budget");
      for (const holder of this.holdings.keys()) this.ctx.storage.kv.delete(`holding:${holder}`);
      this.holdings.clear();
      return { budget, used };
    });
  }

  /** A coordinator borrows, renews or gives back capacity: it reports what it holds and wants, and gets its grant. */
  async lease(budget: string, report: BudgetReport): Promise<Reply<Grant>> {
    return reply(String(report?.tenant ?? ""), async () => {
      const { maxConnections, leaseTtlMs } = this.config(budget);
      const now = Date.now();
      this.expire(now);
      const others = [...this.holdings.values()].filter((h) => h.holder !== report.holder);
      const { holding, grant } = allocate(maxConnections, others, checkReport(report), now, leaseTtlMs);
      if (holding.held === 0 && holding.wanted === 0) {
        this.holdings.delete(holding.holder);
        this.ctx.storage.kv.delete(`holding:${holding.holder}`);
      } else {
        this.holdings.set(holding.holder, holding);
        this.ctx.storage.kv.put(`holding:${holding.holder}`, holding);
      }
      return grant;
    });
  }

  private config(budget: string): BudgetConfig {
    checkBudgetName(budget);
    if (!this.stored) throw new PoolError("UNKNOWN_TENANT", "", `budget "${budget}" does not exist (PUT /v1/budgets/${budget} creates it)`);
    return this.stored.config;
  }

  /** Drops holdings whose lease ran out: their coordinator vanished (reset, evicted) or lost its way here. */
  private expire(now: number): void {
    for (const [holder, h] of this.holdings) {
      if (h.expiresAt > now) continue;
      this.holdings.delete(holder);
      this.ctx.storage.kv.delete(`holding:${holder}`);
    }
  }

  private view(): BudgetView {
    const now = Date.now();
    this.expire(now);
    const holdings = [...this.holdings.values()];
    return {
      budget: this.stored!.budget,
      ...this.stored!.config,
      used: holdings.reduce((sum, h) => sum + occupied(h), 0),
      holders: holdings.map((h) => ({ tenant: h.tenant, shard: h.shard ?? 0, held: h.held, wanted: h.wanted, granted: h.granted, expiresInMs: h.expiresAt - now })),
    };
  }
}

function checkReport(report: BudgetReport): BudgetReport {
  const count = (n: unknown) => typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
  if (typeof report !== "object" || report === null || typeof report.holder !== "string" || typeof report.tenant !== "string" || !count(report.held) || !count(report.wanted) || !(report.shard === undefined || count(report.shard))) {
    throw new PoolError("BAD_REQUEST", "", "a budget report needs holder, tenant, held and wanted (and shard, if any, an integer >= 0)");
  }
  const checked: BudgetReport = { holder: report.holder, tenant: report.tenant, held: report.held, wanted: report.wanted };
  if (report.shard) checked.shard = report.shard;
  return checked;
}
