/** Where a physical connection is in its life; the pool keeps one set per state. */
export type ConnectionState = "opening" | "idle" | "validating" | "leased" | "returning" | "closing" | "closed";

/** Why a connection was closed; used alike in stats, logs and errors. */
export type CloseReason =
  | "idle-timeout"
  | "max-idle"
  | "max-lifetime"
  | "max-uses"
  | "lease-expired"
  | "broken"
  | "shutdown";

/** Every close reason, in the order stats list them. */
export const CLOSE_REASONS: readonly CloseReason[] = [
  "idle-timeout", "max-idle", "max-lifetime", "max-uses", "lease-expired", "broken", "shutdown",
];

/** The transitions `move()` accepts; anything else is a bug and throws `INTERNAL`. */
export const TRANSITIONS: Readonly<Record<ConnectionState, readonly ConnectionState[]>> = {
  opening: ["idle", "closing", "closed"],
  idle: ["validating", "leased", "closing"],
  validating: ["leased", "idle", "closing"],
  leased: ["returning", "idle", "closing"],
  returning: ["idle", "closing"],
  closing: ["closed"],
  closed: [],
};

/** One physical database connection and the facts the janitor's rules read. */
export interface Connection<H> {
  readonly id: number;
  /** Assigned only by the pool's `move()`. */
  state: ConnectionState;
  handle: H | undefined;
  createdAt: number;
  /** When max-lifetime retires it (lifetime minus jitter); `Infinity` without a lifetime. */
  retireAt: number;
  /** Leases and one-shot queries served. */
  uses: number;
  idleSince: number;
  /** Not handed out before this time (`reuseCooldownMs`). */
  availableAt: number;
  /** The server or the socket failed; close instead of reuse. */
  broken: boolean;
  lease: Lease<H> | undefined;
}

/** A lease's life: active until released or reclaimed by the janitor. */
export type LeaseState = "active" | "released" | "expired" | "lost";

/** One borrower's hold on one connection. */
export class Lease<H> {
  state: LeaseState = "active";
  /** Queries running now; a lease is not reclaimed while one runs. */
  inflight = 0;
  lastActivityAt: number;
  /** Borrowers holding it: more than one while one-shot queries are pipelined on its connection. */
  holders = 1;
  /** A holder asked for a reset; it runs when the last one gives the lease back. */
  resetOnRelease = false;

  constructor(
    readonly id: number,
    readonly connection: Connection<H>,
    readonly acquiredAt: number,
    /** How long the borrower waited in the queue. */
    readonly waitedMs: number,
    /** Taken for one independent statement: other one-shot queries may be pipelined on it. A session lease never shares. */
    readonly shared = false,
  ) {
    this.lastActivityAt = acquiredAt;
  }
}
