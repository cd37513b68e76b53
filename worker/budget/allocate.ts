/** One coordinator's (one pool's) standing in a budget, as the budget object keeps it. */
export interface Holding {
  /** The pool instance holding capacity: a coordinator restarted is a new holder; the old one's capacity expires. */
  holder: string;
  tenant: string;
  /** Which of the tenant's shards holds it (0: the tenant's own coordinator). */
  shard?: number;
  /** Server connections the holder reported holding (opening and closing ones count). */
  held: number;
  /** Connections it would hold if the budget allowed (its borrowers and floors, within its `maxConnections`). */
  wanted: number;
  /** What the budget granted it last: it opens no connection beyond. */
  granted: number;
  /** When this holding expires unless renewed (epoch ms). */
  expiresAt: number;
}

/** What a holder reports when it borrows, renews or gives back capacity. */
export interface BudgetReport {
  holder: string;
  tenant: string;
  /** Which of the tenant's shards reports (absent: 0); each shard's pool is a holder of its own. */
  shard?: number;
  held: number;
  wanted: number;
}

/** The budget's answer: the holder's grant and the numbers that explain it. */
export interface Grant {
  granted: number;
  maxConnections: number;
  /** The fair share now: the budget over the holders with demand. */
  share: number;
  /** Holders with demand, this one included when it has some. */
  holders: number;
  /** Connections counted against the budget by every holder, this one's new grant included. */
  used: number;
  leaseTtlMs: number;
}

/** What a holder counts against the budget: its grant, or what it still holds above it (it sheds those as they come back). */
export function occupied(h: Holding): number {
  return Math.max(h.granted, h.held);
}

/** Max-min fair targets: each holder gets its demand or an equal level, whichever is less; the rest goes to the bigger demands. */
export function fairTargets(maxConnections: number, wanted: readonly number[]): number[] {
  const order = wanted.map((w, i) => [w, i] as const).sort((a, b) => a[0] - b[0]);
  const targets = new Array<number>(wanted.length).fill(0);
  let remaining = maxConnections;
  for (let k = 0; k < order.length; k++) {
    const [w, i] = order[k]!;
    const left = order.length - k;
    // The remainder of an uneven split goes to the last (biggest) demands, one each.
    const give = Math.min(w, Math.floor(remaining / left) + (left <= remaining % left ? 1 : 0));
    targets[i] = give;
    remaining -= give;
  }
  return targets;
}

/**
 * The grant for one holder's report. Holders never count above the budget in
 * total: a holder gets at most what the others leave free. While another
 * holder with demand is below its fair target, this one gets no more than its
 * own target (and sheds what it holds above it as connections come back);
 * otherwise it may keep what it holds and grow to its demand.
 * `others` are the live holdings except the reporter's (expired ones removed).
 */
export function allocate(maxConnections: number, others: readonly Holding[], report: BudgetReport, now: number, leaseTtlMs: number): { holding: Holding; grant: Grant } {
  const all = [...others.map((h) => h.wanted), report.wanted];
  const targets = fairTargets(maxConnections, all);
  const mine = targets[targets.length - 1]!;
  const demanding = all.filter((w) => w > 0).length;
  const share = demanding > 0 ? Math.floor(maxConnections / demanding) : maxConnections;
  const othersUse = others.reduce((sum, h) => sum + occupied(h), 0);
  const free = Math.max(0, maxConnections - othersUse);
  const starving = others.some((h, i) => occupied(h) < Math.min(h.wanted, targets[i]!));
  const cap = starving ? mine : Math.max(report.wanted, report.held);
  const granted = Math.max(0, Math.min(cap, free));
  const holding: Holding = { ...report, granted, expiresAt: now + leaseTtlMs };
  return {
    holding,
    grant: { granted, maxConnections, share, holders: demanding, used: othersUse + occupied(holding), leaseTtlMs },
  };
}
