import type { CloseReason } from "./connection.ts";

/**
 * One thing that happened in a tenant's pool, as its structured log line and
 * the dashboard's event list show it. `event` names it; the other field names
 * are stable. No field ever holds a password, token or connection string:
 * `target` is `host:port`, `cause` is the driver's message with the password
 * scrubbed.
 */
export type PoolEvent =
  | { event: "connect-failed"; tenant: string; target: string; cause: string; code?: string; attempt: number; retryInMs: number }
  | { event: "connection-opened"; tenant: string; connection: number; total: number }
  | { event: "connection-closed"; tenant: string; connection: number; reason: CloseReason; ageMs: number; uses: number; total: number }
  | { event: "acquire-timeout"; tenant: string; timeoutMs: number; total: number; leased: number; idle: number; opening: number; waiting: number }
  | { event: "wait-queue-full"; tenant: string; waiting: number; maxWaiters: number }
  | { event: "lease-expired"; tenant: string; lease: number; connection: number; leaseTimeoutMs: number }
  | { event: "budget-lapsed"; tenant: string; leasesLost: number; cause: string };

/** Events the pool's host adds: the coordinator started (or restarted after an eviction), a tenant's config changed, its alarm was lost. */
export type HostEvent =
  | { event: "coordinator-start"; tenant: string; maxConnections: number; minConnections: number; initialConnections: number }
  | { event: "tenant-configured"; tenant: string; maxConnections: number }
  | { event: "alarm-late"; tenant: string; lateMs: number };

/** A log line: an event with its time and level. */
export type LogLine = (PoolEvent | HostEvent) & { time: string; level: "info" | "warn" };

/** Events an operator should look at; the rest are `info`. */
const WARN = new Set<string>(["connect-failed", "acquire-timeout", "wait-queue-full", "lease-expired", "budget-lapsed", "alarm-late"]);

/** The log line of an event at `now` (ms since the epoch); a `broken` close is a warning too. */
export function logLine(event: PoolEvent | HostEvent, now: number): LogLine {
  const warn = WARN.has(event.event) || (event.event === "connection-closed" && event.reason === "broken");
  return { ...event, level: warn ? "warn" : "info", time: new Date(now).toISOString() };
}
