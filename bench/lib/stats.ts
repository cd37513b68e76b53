// Statistics: latency percentiles of a run's samples, and the median over a cell's runs.

export interface Latency {
  n: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentiles of precise samples (ms). */
export function exactLatency(samples: ArrayLike<number>): Latency {
  const sorted = Float64Array.from(samples).sort();
  const n = sorted.length;
  const at = (p: number) => (n ? sorted[Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))]! : NaN);
  let sum = 0;
  for (const v of sorted) sum += v;
  return { n, mean: n ? sum / n : NaN, p50: at(50), p90: at(90), p99: at(99), max: n ? sorted[n - 1]! : NaN };
}

/**
 * Percentiles from workerd's millisecond clock. A duration d read with a whole-millisecond clock
 * of random phase reads floor(d) or floor(d)+1, so the share of readings <= k estimates the true
 * distribution at k + 0.5; percentiles interpolate between those points (about ±0.5 ms). The mean
 * is unbiased as is.
 */
export function tickLatency(samples: ArrayLike<number>): Latency {
  const exact = exactLatency(samples);
  const n = exact.n;
  if (!n) return exact;
  const counts = new Map<number, number>();
  for (let i = 0; i < samples.length; i++) {
    const k = Math.max(0, Math.round(samples[i]!));
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  const keys = [...counts.keys()].sort((a, b) => a - b);
  const at = (p: number) => {
    const q = p / 100;
    let cum = 0;
    let prevX = 0;
    let prevF = 0;
    for (const k of keys) {
      const f = (cum += counts.get(k)!) / n;
      const x = k + 0.5;
      if (f >= q) return prevX + ((q - prevF) / (f - prevF)) * (x - prevX);
      prevX = x;
      prevF = f;
    }
    return prevX;
  };
  return { ...exact, p50: at(50), p90: at(90), p99: at(99) };
}

export function median(values: number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}
