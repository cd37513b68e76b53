import type { LogLine } from "./pool/events.ts";
import type { FrontStats } from "./front.ts";

/** One sample of a tenant's pool for the dashboard's chart. */
export interface ActivitySample {
  /** ms since the epoch */
  at: number;
  idle: number;
  active: number;
  opening: number;
  waiting: number;
  clients: number;
}

/** One tenant seen live (`GET /v1/activity/:tenant`): counters, recent pool events and samples over the last minutes. */
export interface TenantActivity {
  tenant: string;
  stats: FrontStats;
  events: LogLine[];
  history: ActivitySample[];
}
