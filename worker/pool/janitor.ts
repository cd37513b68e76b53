import type { CloseReason, Connection } from "./connection.ts";
import type { PoolOptions } from "./options.ts";

/** What the janitor reads: the pool's connections by state and the floors it must keep. */
export interface JanitorView<H> {
  readonly options: PoolOptions;
  readonly idle: Iterable<Connection<H>>;
  readonly leased: Iterable<Connection<H>>;
  /** Physical connections not already closing (opening ones count). */
  readonly kept: number;
  /** `minConnections` once the pool has reached it, else 0. */
  readonly floor: number;
  /** When the last max-lifetime retirement happened. */
  readonly lastLifetimeRetireAt: number;
}

/** A decision of the janitor: close this connection for this reason. */
export interface Close<H> {
  connection: Connection<H>;
  reason: CloseReason;
}

/** The janitor's answer: what to close now, and when something next falls due. */
export interface Sweep<H> {
  closes: Close<H>[];
  /** Leases whose borrower went silent for `leaseTimeoutMs`. */
  expired: Connection<H>[];
  nextAt: number | undefined;
}

/** Spacing between two max-lifetime retirements, so they never come all at once. */
export function lifetimeSpacingMs(options: PoolOptions): number {
  return options.maxConnections > 0 ? Math.floor(options.maxLifetimeMs / options.maxConnections) : 0;
}

/**
 * Maintenance as one ordered list of rules, as in PgBouncer's janitor:
 * broken → lease expired → max lifetime (spaced) → max uses → idle beyond the
 * floors. Each rule ends in a close with a fixed reason. Pure: the pool acts on
 * the answer.
 */
export function sweep<H>(view: JanitorView<H>, now: number): Sweep<H> {
  const { options } = view;
  const closes: Close<H>[] = [];
  const expired: Connection<H>[] = [];
  let nextAt: number | undefined;
  const due = (at: number) => {
    if (at > now && (nextAt === undefined || at < nextAt)) nextAt = at;
  };
  const idle = [...view.idle];
  const closing = new Set<Connection<H>>();
  const close = (connection: Connection<H>, reason: CloseReason) => {
    closing.add(connection);
    closes.push({ connection, reason });
  };

  for (const c of idle) if (c.broken) close(c, "broken");

  for (const c of view.leased) {
    const lease = c.lease;
    if (!lease || lease.inflight > 0) continue;
    const expiresAt = lease.lastActivityAt + options.leaseTimeoutMs;
    if (expiresAt <= now) expired.push(c);
    else due(expiresAt);
  }

  const spacing = lifetimeSpacingMs(options);
  let slot = view.lastLifetimeRetireAt + spacing;
  for (const c of idle.filter((c) => !closing.has(c) && c.retireAt !== Infinity).sort((a, b) => a.retireAt - b.retireAt)) {
    if (c.retireAt > now) {
      due(Math.max(c.retireAt, slot));
      break;
    }
    if (slot > now) {
      due(slot);
      break;
    }
    close(c, "max-lifetime");
    slot = now + spacing;
  }

  if (options.maxUses > 0) {
    for (const c of idle) if (!closing.has(c) && c.uses >= options.maxUses) close(c, "max-uses");
  }

  if (options.idleTimeoutMs > 0) {
    let kept = view.kept - closing.size;
    let idleCount = idle.length - closing.size;
    for (const c of idle.filter((c) => !closing.has(c)).sort((a, b) => a.idleSince - b.idleSince)) {
      if (kept <= view.floor || idleCount <= options.minIdle) break;
      const expiresAt = c.idleSince + options.idleTimeoutMs;
      if (expiresAt > now) {
        due(expiresAt);
        break;
      }
      close(c, "idle-timeout");
      kept--;
      idleCount--;
    }
  }

  return { closes, expired, nextAt };
}
