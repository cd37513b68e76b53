// A manual clock for simulations with many timers (bench/scale-sim.ts: 10,000 budget links). The
// unit tests' ManualClock scans every timer per firing; this one keeps them in a binary heap.
import type { Clock } from "../../worker/pool/clock.ts";

interface Timer {
  id: number;
  at: number;
  fn: () => void;
}

/** Lets every pending promise chain run (the microtask queue drains before setImmediate). */
export function settle(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve));
}

/**
 * A clock that moves only when told; due timers fire in time order (creation order on ties), and
 * after the timers of each instant the promises they started settle before time moves on.
 */
export class HeapClock implements Clock {
  private t: number;
  private nextId = 1;
  private readonly heap: Timer[] = [];
  /** Timers set and neither fired nor cleared, by id. */
  private readonly live = new Set<number>();
  /** Timers fired so far. */
  fired = 0;

  constructor(start = 1_000_000) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimer(fn: () => void, ms: number): unknown {
    const timer = { id: this.nextId++, at: this.t + Math.max(0, ms), fn };
    this.live.add(timer.id);
    this.push(timer);
    return timer.id;
  }

  clearTimer(timer: unknown): void {
    // Left in the heap, skipped when it comes up.
    this.live.delete(timer as number);
  }

  /** Timers set and not yet fired or cleared. */
  get pending(): number {
    return this.live.size;
  }

  async advance(ms: number): Promise<void> {
    await this.advanceTo(this.t + ms);
  }

  async advanceTo(target: number): Promise<void> {
    await settle();
    for (;;) {
      const top = this.heap[0];
      if (!top || top.at > target) break;
      const at = top.at;
      this.t = Math.max(this.t, at);
      // Every timer due at this instant, then their promises.
      while (this.heap.length && this.heap[0]!.at === at) {
        const timer = this.pop();
        if (!this.live.delete(timer.id)) continue;
        this.fired++;
        timer.fn();
      }
      await settle();
    }
    this.t = Math.max(this.t, target);
    await settle();
  }

  private less(a: Timer, b: Timer): boolean {
    return a.at < b.at || (a.at === b.at && a.id < b.id);
  }

  private push(timer: Timer): void {
    const h = this.heap;
    h.push(timer);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(h[i]!, h[parent]!)) break;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }

  private pop(): Timer {
    const h = this.heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.less(h[l]!, h[m]!)) m = l;
        if (r < h.length && this.less(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}
