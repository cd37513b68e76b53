/** Time source and timers, injected so the pool core runs under a manual clock in tests. */
export interface Clock {
  now(): number;
  setTimer(fn: () => void, ms: number): unknown;
  clearTimer(timer: unknown): void;
}

/** `work`, or a rejection once `ms` have passed on `clock` (an `Error(late)`, or what `late()` makes); a late answer is then ignored. */
export function within<T>(clock: Clock, work: Promise<T>, ms: number, late: string | (() => Error)): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = clock.setTimer(() => reject(typeof late === "string" ? new Error(late) : late()), ms);
    work.then(
      (value) => (clock.clearTimer(timer), resolve(value)),
      (error: unknown) => (clock.clearTimer(timer), reject(error)),
    );
  });
}

/** The real clock. In workerd `Date.now()` advances with I/O, which is what timeouts need. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer: (fn, ms) => setTimeout(fn, ms),
  clearTimer: (timer) => clearTimeout(timer as ReturnType<typeof setTimeout>),
};
