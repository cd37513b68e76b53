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

/**
 * One tenant's shards as a client sees them: the shard count learnt from the
 * last answer (1 until one came), each shard's last load hint and the
 * sessions this client has in flight on it.
 */
export class ShardRouter {
  shards = 1;
  private readonly hints = new Map<number, { load: number; at: number }>();
  private readonly inflight = new Map<number, number>();

  private readonly random: () => number;
  private readonly now: () => number;

  // Plain fields, not parameter properties: Node runs src/ by stripping types, which cannot rewrite those.
  constructor(random: () => number = Math.random, now: () => number = Date.now) {
    this.random = random;
    this.now = now;
  }

  /** Power of two choices: two distinct random shards (other than `avoid`), the less loaded one; a tie goes to the first draw. */
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
    if (typeof load === "number" && Number.isFinite(load)) this.hints.set(shard, { load, at: this.now() });
  }

  /** A call to `shard` broke (reset, unreachable): new sessions avoid it for a hint's lifetime, then try it again. */
  fail(shard: number): void {
    if (this.shards > 1) this.hints.set(shard, { load: BROKEN_LOAD, at: this.now() });
  }

  /** Counts a session on `shard` until the returned function is called. */
  enter(shard: number): () => void {
    this.inflight.set(shard, (this.inflight.get(shard) ?? 0) + 1);
    let left = false;
    return () => {
      if (left) return;
      left = true;
      this.inflight.set(shard, (this.inflight.get(shard) ?? 1) - 1);
    };
  }

  private score(shard: number): number {
    const hint = this.hints.get(shard);
    const load = hint && this.now() - hint.at <= HINT_TTL_MS ? hint.load : 0;
    return load + (this.inflight.get(shard) ?? 0);
  }
}

/** Routers per target (a namespace or service binding) and tenant, kept for the isolate: what one request learnt, the next one uses. */
const routers = new WeakMap<object, Map<string, ShardRouter>>();

/** The router of `tenant` behind `target`. */
export function routerFor(target: object, tenant: string): ShardRouter {
  let byTenant = routers.get(target);
  if (!byTenant) routers.set(target, (byTenant = new Map()));
  let router = byTenant.get(tenant);
  if (!router) byTenant.set(tenant, (router = new ShardRouter()));
  return router;
}

/** Answers after which a session that sent nothing yet tries another shard: the shard is not (or no longer) configured, or its queue is full. */
const REROUTE = new Set(["UNKNOWN_TENANT", "POOL_CLOSED", "WAIT_QUEUE_FULL"]);

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
    const leave = router.enter(shard);
    let answer: R;
    try {
      answer = await call(stubOf(shard), shard);
    } catch (error) {
      leave();
      router.fail(shard);
      broken?.(shard);
      if (attempt > 0 || router.shards <= 1 || !retryOnThrow(error)) throw error;
      shard = router.pick(shard);
      continue;
    }
    router.learn(shard, answer.hint);
    const code = (answer.error as { code?: unknown } | undefined)?.code;
    if (!answer.ok && attempt === 0 && router.shards > 1 && REROUTE.has(String(code))) {
      leave();
      shard = router.pick(shard);
      continue;
    }
    return { answer, leave };
  }
}
