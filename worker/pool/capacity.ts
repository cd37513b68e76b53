/**
 * A source of capacity outside the pool (a connection budget shared with
 * other pools on the same database server). Injected into the pool core: the
 * pool opens no connection beyond `limit()`, sheds idle ones above it, and
 * reports what it holds and wants after every change.
 */
export interface Capacity {
  /** Server connections this pool may hold now (opening and closing ones count). */
  limit(): number;
  /** The pool's connections after a change: `held` now, `wanted` to serve its borrowers and floors (within `maxConnections`). */
  report(held: number, wanted: number): void;
  /** Called once by the pool: `changed` is to be called when `limit()` may have changed. */
  attach(changed: () => void): void;
  /** Why the pool cannot grow, with the numbers, for `ACQUIRE_TIMEOUT` messages. */
  describe(): string;
  /**
   * The grant lapsed (the source could not be reached in time and may give
   * the capacity to others): connections above `limit()` close now, leased
   * ones too (their borrowers get `LEASE_LOST`), not when they come back.
   */
  lapsed?(): boolean;
}
