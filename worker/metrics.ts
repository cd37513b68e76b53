import type { DirectoryEntry } from "./directory.ts";
import type { FrontStats } from "./front.ts";
import { CLOSE_REASONS } from "./pool/connection.ts";
import { VERDICTS } from "./pool/metrics.ts";

/** Prometheus' text exposition format, version 0.0.4. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

type Kind = "gauge" | "counter" | "histogram";

/** One metric family: its samples, each with the tenant and any further labels. */
interface Family {
  name: string;
  kind: Kind;
  help: string;
  /** Read from the tenant's config only: exposed before its first report too. */
  config?: boolean;
  samples: (entry: DirectoryEntry, stats: FrontStats) => [labels: Record<string, string>, value: number][];
}

const one = (value: number): [Record<string, string>, number][] => [[{}, value]];

/**
 * Every family `/metrics` exposes, per tenant, from the directory's latest
 * report. Names follow Prometheus' conventions; docs/observability.md maps
 * them to PgBouncer's and HikariCP's.
 */
const FAMILIES: Family[] = [
  {
    name: "edgepool_connections", kind: "gauge", help: "Server connections by state (idle, active: leased or validating, opening, closing).",
    samples: (_, s) => [[{ state: "idle" }, s.idle], [{ state: "active" }, s.leased], [{ state: "opening" }, s.opening], [{ state: "closing" }, s.closing]],
  },
  { name: "edgepool_connections_max", kind: "gauge", help: "maxConnections: the hard cap of server connections.", config: true, samples: (e) => one(e.options.maxConnections) },
  { name: "edgepool_connections_min", kind: "gauge", help: "minConnections.", config: true, samples: (e) => one(e.options.minConnections) },
  { name: "edgepool_client_sessions", kind: "gauge", help: "Open client sessions (drivers, built-in one-shots and leases).", samples: (_, s) => one(s.clients) },
  { name: "edgepool_client_sessions_active", kind: "gauge", help: "Client sessions holding a server connection.", samples: (_, s) => one(s.clientsActive) },
  { name: "edgepool_client_sessions_waiting", kind: "gauge", help: "Client sessions waiting for a server connection.", samples: (_, s) => one(s.clientsWaiting) },
  { name: "edgepool_waiters", kind: "gauge", help: "Borrowers in the pool's wait queue.", samples: (_, s) => one(s.waiting) },
  { name: "edgepool_wait_oldest_seconds", kind: "gauge", help: "Age of the oldest waiter when reported.", samples: (_, s) => one(s.waiting > 0 ? s.maxWaitMs / 1000 : 0) },
  { name: "edgepool_peak_demand", kind: "gauge", help: "Highest concurrent demand (leased + pipelined + waiting) seen by the pool.", samples: (_, s) => one(s.peakDemand) },
  {
    name: "edgepool_sizing_suggested_max_connections", kind: "gauge", help: "maxConnections the sizing rule suggests.",
    samples: (_, s) => one(s.sizing.suggestedMaxConnections),
  },
  {
    name: "edgepool_sizing_suggested_shards", kind: "gauge", help: "shards the sizing rule suggests (more than now when one coordinator's thread is the limit).",
    // A report from before the thread was measured has no suggestion: the current count.
    samples: (e, s) => one(s.sizing.suggestedShards ?? e.options.shards ?? 1),
  },
  {
    name: "edgepool_sizing_verdict", kind: "gauge", help: "1 for the pool's current sizing verdict, 0 for the others.",
    samples: (_, s) => VERDICTS.map((v) => [{ verdict: v }, s.sizing.verdict === v ? 1 : 0]),
  },
  {
    name: "edgepool_coordinator_busy_ratio", kind: "gauge",
    help: "Share of its coordinator's thread the tenant used in the busiest second of the last 5 minutes (of its most loaded shard): the larger of the probed busy time and calls per second over the ~1000/s one Durable Object serves.",
    samples: (_, s) => one(s.coordinator?.busyRatio ?? 0),
  },
  {
    name: "edgepool_coordinator_calls_per_second", kind: "gauge", help: "Calls into the tenant's coordinators (one-shots, lease batches, acquires, driver sessions and their batches) in the busiest second of the last 5 minutes, summed over shards.",
    samples: (_, s) => one(s.coordinator?.callsPerSecond ?? 0),
  },
  { name: "edgepool_acquires_total", kind: "counter", help: "Connections handed to borrowers (pipelined one-shots included).", samples: (_, s) => one(s.acquired) },
  { name: "edgepool_releases_total", kind: "counter", help: "Connections given back by borrowers.", samples: (_, s) => one(s.released) },
  { name: "edgepool_acquire_timeouts_total", kind: "counter", help: "Acquires that failed with ACQUIRE_TIMEOUT.", samples: (_, s) => one(s.timeouts) },
  { name: "edgepool_wait_queue_full_total", kind: "counter", help: "Acquires refused with WAIT_QUEUE_FULL.", samples: (_, s) => one(s.waitQueueFull) },
  { name: "edgepool_connections_created_total", kind: "counter", help: "Server connections opened.", samples: (_, s) => one(s.created) },
  { name: "edgepool_connect_failures_total", kind: "counter", help: "Connection attempts that failed (CONNECT_FAILED).", samples: (_, s) => one(s.connectFailures) },
  {
    name: "edgepool_connections_closed_total", kind: "counter", help: "Server connections closed, by reason.",
    samples: (_, s) => CLOSE_REASONS.map((reason) => [{ reason }, s.closed[reason] ?? 0]),
  },
  { name: "edgepool_leases_expired_total", kind: "counter", help: "Leases reclaimed after leaseTimeoutMs without activity.", samples: (_, s) => one(s.leasesExpired) },
  { name: "edgepool_leases_lost_total", kind: "counter", help: "Leases whose connection died under them (LEASE_LOST).", samples: (_, s) => one(s.leasesLost) },
  { name: "edgepool_pipelined_total", kind: "counter", help: "One-shot queries pipelined on a busy connection at max.", samples: (_, s) => one(s.pipelined) },
  { name: "edgepool_prepared_hits_total", kind: "counter", help: "Client Parses answered without a round trip (statement already on the server connection).", samples: (_, s) => one(s.prepared.hits) },
  { name: "edgepool_prepared_parses_total", kind: "counter", help: "Statements sent to a server connection.", samples: (_, s) => one(s.prepared.parses) },
  { name: "edgepool_prepared_reprepares_total", kind: "counter", help: "Parses injected because the serving connection lacked the statement.", samples: (_, s) => one(s.prepared.reprepares) },
  { name: "edgepool_prepared_evictions_total", kind: "counter", help: "Statements closed to stay within maxPreparedStatements.", samples: (_, s) => one(s.prepared.evictions) },
];

/**
 * The directory's latest reports as Prometheus text: one family at a time,
 * one series per tenant (a tenant that has not reported yet has only its
 * limits), plus the acquire-wait histogram and the age of each report.
 */
export function exposition(entries: DirectoryEntry[], now = Date.now()): string {
  const out: string[] = [];
  const header = (name: string, kind: Kind, help: string) => out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${kind}`);
  header("edgepool_tenants", "gauge", "Tenants in the directory.");
  out.push(`edgepool_tenants ${entries.length}`);
  for (const family of FAMILIES) {
    header(family.name, family.kind, family.help);
    for (const entry of entries) {
      if (!entry.stats && !family.config) continue;
      for (const [labels, value] of family.samples(entry, entry.stats!)) out.push(`${family.name}${labelSet({ tenant: entry.tenant, ...labels })} ${value}`);
    }
  }
  header("edgepool_acquire_wait_seconds", "histogram", "Time borrowers waited for a connection, since the tenant's pool started.");
  for (const entry of entries) {
    const histogram = entry.stats?.acquireWaitHistogram;
    if (!histogram) continue;
    histogram.bucketsMs.forEach((ms, i) => {
      out.push(`edgepool_acquire_wait_seconds_bucket${labelSet({ tenant: entry.tenant, le: String(ms / 1000) })} ${histogram.counts[i]}`);
    });
    const count = histogram.counts[histogram.counts.length - 1]!;
    out.push(`edgepool_acquire_wait_seconds_bucket${labelSet({ tenant: entry.tenant, le: "+Inf" })} ${count}`);
    out.push(`edgepool_acquire_wait_seconds_sum${labelSet({ tenant: entry.tenant })} ${histogram.sumMs / 1000}`);
    out.push(`edgepool_acquire_wait_seconds_count${labelSet({ tenant: entry.tenant })} ${count}`);
  }
  header("edgepool_report_age_seconds", "gauge", "Seconds since the tenant's coordinator last reported (staleness of its series).");
  for (const entry of entries) {
    if (entry.reportedAt) out.push(`edgepool_report_age_seconds${labelSet({ tenant: entry.tenant })} ${Math.max(0, (now - Date.parse(entry.reportedAt)) / 1000)}`);
  }
  return `${out.join("\n")}\n`;
}

/** `{a="1",b="2"}` with values escaped as the format wants (backslash, quote, newline). */
function labelSet(labels: Record<string, string>): string {
  const pairs = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`);
  return `{${pairs.join(",")}}`;
}
