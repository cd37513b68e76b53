/**
 * Shards of a tenant (tenant option `shards`): each is its own coordinator
 * Durable Object, named `tenant` (shard 0, the tenant's config home) or
 * `tenant#i`. Clients pick one per session by power of two choices on the
 * load hints the coordinators return with their answers.
 */

/** What a coordinator says about itself with each `run`/`acquire` answer: its tenant's shard count and its own load. */
export interface ShardHint {
  shards: number;
  /** Sessions holding or waiting for a connection of this shard (leased + waiting). */
  load: number;
}

/** The header a shard's answer to a tunnel's upgrade carries its hint in (JSON). */
export const HINT_HEADER = "X-Edgepool-Hint";

/** A shard's answer to `wire` asked with `hint: true`: the session's stream and the shard's hint. */
export interface HintedWire {
  stream: ReadableStream<Uint8Array>;
  hint?: ShardHint;
}

/** A `wire` answer as stream and hint: a coordinator from before hints answers the bare stream. */
export function hintedWire(answer: ReadableStream<Uint8Array> | HintedWire): HintedWire {
  return answer instanceof ReadableStream ? { stream: answer } : answer;
}

/** The Durable Object name of a tenant's shard: the tenant itself for shard 0, `tenant#i` for the others. */
export function shardName(tenant: string, shard: number): string {
  return shard === 0 ? tenant : `${tenant}#${shard}`;
}

/** A hint older than this is not trusted: the shard counts as of unknown load. */
const HINT_TTL_MS = 2_000;

/** The load a broken shard counts as while its mark lasts: any answering shard is chosen first. */
const BROKEN_LOAD = 1_000_000;

/** Most shards a client believes in (the option's upper bound). */
const MAX_SHARDS = 64;

/** Weight of the newest answer time in the typical one (an exponentially weighted geometric mean, so one stuck answer does not swamp it). */
const TYPICAL_WEIGHT = 0.1;

/** A session of this client on one shard, from when it was sent until it leaves. */
export interface ShardVisit {
  /** The shard answered the session's call: it is no longer pending, and how long that took counts towards the typical answer time. */
  answered(): void;
  /** The session ended: it no longer counts on the shard. Calling it again does nothing. */
  leave(): void;
}

/** What this client knows of one shard. */
interface ShardView {
  /** The last load hint and when it came. */
  hint: { load: number; at: number } | undefined;
  /** Counts the hints: a session sent before the last one is in its load. */
  epoch: number;
  /** This client's sessions on the shard. */
  sessions: number;
  /** Those of them sent since the last hint (not in its load). */
  unseen: number;
  /** Sessions sent and not answered yet, oldest first (a Set keeps insertion order). */
  pending: Set<{ at: number }>;
  /** When the shard last answered this client. */
  answeredAt: number;
}

/**
 * One tenant's shards as a client sees them: the shard count learnt from the
 * last answer (1 until one came), each shard's last load hint, this client's
 * sessions on it, and how long the shard has left them unanswered.
 */
export class ShardRouter {
  shards = 1;
  private readonly views = new Map<number, ShardView>();
  /** The typical answer time of any shard to this client, in log ms (undefined until an answer came). */
  private logTypicalMs: number | undefined;

  private readonly random: () => number;
  private readonly now: () => number;

  // Plain fields, not parameter properties: Node runs src/ by stripping types, which cannot rewrite those.
  constructor(random: () => number = Math.random, now: () => number = Date.now) {
    this.random = random;
    this.now = now;
  }

  /** Power of two choices: two distinct random shards (other than `avoid`), the lower `score`; a tie goes to the first draw. */
  pick(avoid?: number): number {
    // The common case (one shard) costs nothing.
    if (this.shards === 1) return 0;
    const candidates = Array.from({ length: this.shards }, (_, i) => i).filter((i) => i !== avoid);
    if (candidates.length === 0) return 0;
    if (candidates.length === 1) return candidates[0]!;
    const i = Math.floor(this.random() * candidates.length);
    const j = (i + 1 + Math.floor(this.random() * (candidates.length - 1))) % candidates.length;
    const a = candidates[i]!;
    const b = candidates[j]!;
    return this.score(b) < this.score(a) ? b : a;
  }

  /** Notes an answer's hint from `shard`. */
  learn(shard: number, hint: unknown): void {
    if (typeof hint !== "object" || hint === null) return;
    const { shards, load } = hint as Partial<ShardHint>;
    if (typeof shards === "number" && Number.isSafeInteger(shards) && shards >= 1 && shards <= MAX_SHARDS) this.shards = shards;
    if (typeof load === "number" && Number.isFinite(load)) this.hinted(shard, load);
  }

  /** A call to `shard` broke (reset, unreachable): new sessions avoid it for a hint's lifetime, then try it again. */
  fail(shard: number): void {
    if (this.shards > 1) this.hinted(shard, BROKEN_LOAD);
  }

  /** Counts a session on `shard`: pending until `answered`, on the shard until `leave`. */
  enter(shard: number): ShardVisit {
    const view = this.view(shard);
    const sent = { at: this.now() };
    const epoch = view.epoch;
    view.sessions++;
    view.unseen++;
    view.pending.add(sent);
    let left = false;
    return {
      answered: () => {
        if (!view.pending.delete(sent)) return;
        const now = this.now();
        view.answeredAt = now;
        const logMs = Math.log(Math.max(1, now - sent.at));
        this.logTypicalMs = this.logTypicalMs === undefined ? logMs : this.logTypicalMs + TYPICAL_WEIGHT * (logMs - this.logTypicalMs);
      },
      leave: () => {
        if (left) return;
        left = true;
        view.pending.delete(sent);
        view.sessions--;
        if (view.epoch === epoch) view.unseen--;
      },
    };
  }

  /**
   * A shard's expected wait in sessions ahead: its load (the hint's, plus
   * this client's sessions sent since; without a fresh hint, this client's
   * sessions on it) times how late it is answering.
   */
  private score(shard: number): number {
    const view = this.views.get(shard);
    if (!view) return 0;
    const now = this.now();
    const { hint } = view;
    // A hint counts this client's sessions that were on the shard when it was taken: only those sent since add to it.
    const load = hint && now - hint.at <= HINT_TTL_MS ? hint.load + view.unseen : view.sessions;
    return Math.max(load, view.pending.size) * this.lateness(view, now);
  }

  /**
   * How many typical answer times a shard has left this client's sessions
   * unanswered since it last answered, at least 1: a shard whose load no hint
   * shows yet (sessions sent before any answer) but that keeps them waiting
   * while the others answer counts as that much slower.
   */
  private lateness(view: ShardView, now: number): number {
    const oldest = view.pending.values().next().value;
    if (!oldest || this.logTypicalMs === undefined) return 1;
    return Math.max(1, (now - Math.max(oldest.at, view.answeredAt)) / Math.exp(this.logTypicalMs));
  }

  private hinted(shard: number, load: number): void {
    const view = this.view(shard);
    view.hint = { load, at: this.now() };
    view.epoch++;
    view.unseen = 0;
  }

  private view(shard: number): ShardView {
    let view = this.views.get(shard);
    if (!view) this.views.set(shard, (view = { hint: undefined, epoch: 0, sessions: 0, unseen: 0, pending: new Set(), answeredAt: 0 }));
    return view;
  }
}

/** Routers per target (a namespace or service binding) and tenant, kept for the isolate: what one request learnt, the next one uses. */
const routers = new WeakMap<object, Map<string, ShardRouter>>();
/** Tenants whose routers one target keeps; past it the oldest is forgotten (it only loses what it learnt). A route reached before any token check must not grow without bound. */
export const MAX_ROUTED_TENANTS = 10_000;

/** The router of `tenant` behind `target`. */
export function routerFor(target: object, tenant: string): ShardRouter {
  let byTenant = routers.get(target);
  if (!byTenant) routers.set(target, (byTenant = new Map()));
  let router = byTenant.get(tenant);
  if (!router) {
    if (byTenant.size >= MAX_ROUTED_TENANTS) byTenant.delete(byTenant.keys().next().value!);
    byTenant.set(tenant, (router = new ShardRouter()));
  }
  return router;
}

/** Answers after which a session that sent nothing yet tries another shard: the shard is not (or no longer) configured, or its queue is full (a coordinator refuses a one-shot with these as a failed call, not in its answer). */
export const REROUTE: ReadonlySet<string> = new Set(["UNKNOWN_TENANT", "POOL_CLOSED", "WAIT_QUEUE_FULL"]);

/** Whether a failed call certainly never reached the object (Cloudflare marks an overloaded object's refusals so). */
export function notDelivered(error: unknown): boolean {
  return typeof error === "object" && error !== null && (error as { overloaded?: unknown }).overloaded === true;
}

/**
 * One session on a shard picked by `router` (a broken call marks its shard
 * and is reported to `broken`, which drops the shard's stub: a stub of a
 * reset object keeps failing): answers the call's reply and
 * how to end the session's count on its shard. A refusal from a shard that
 * ran nothing (`REROUTE`) or a call `retryOnThrow` deems undelivered goes to
 * another shard, once; anything else is the caller's answer.
 */
export async function routed<R extends { ok: boolean; error?: unknown; hint?: unknown }, C>(
  router: ShardRouter,
  stubOf: (shard: number) => C,
  call: (stub: C, shard: number) => Promise<R>,
  retryOnThrow: (error: unknown) => boolean,
  broken?: (shard: number) => void,
): Promise<{ answer: R; leave: () => void }> {
  let shard = router.pick();
  for (let attempt = 0; ; attempt++) {
    const visit = router.enter(shard);
    let answer: R;
    try {
      answer = await call(stubOf(shard), shard);
    } catch (error) {
      visit.leave();
      router.fail(shard);
      broken?.(shard);
      if (attempt > 0 || router.shards <= 1 || !retryOnThrow(error)) throw error;
      shard = router.pick(shard);
      continue;
    }
    visit.answered();
    router.learn(shard, answer.hint);
    const code = (answer.error as { code?: unknown } | undefined)?.code;
    if (!answer.ok && attempt === 0 && router.shards > 1 && REROUTE.has(String(code))) {
      visit.leave();
      shard = router.pick(shard);
      continue;
    }
    return { answer, leave: visit.leave };
  }
}
