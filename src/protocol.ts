import type { ErrorShape } from "./errors.ts";
import type { QueryResult } from "./result.ts";

/** Every coordinator answer: errors travel as values because RPC drops custom error properties. */
export type Reply<T> = { ok: true; value: T } | { ok: false; error: ErrorShape };

/** Per-call options a borrower may send. */
export interface CallOptions {
  /** Overrides the pool's `acquireTimeoutMs` for this call. */
  acquireTimeoutMs?: number;
  /** Overrides the pool's `queryTimeoutMs` for this call. */
  queryTimeoutMs?: number;
}

/** A lease as the coordinator serves it (an RPC target on the coordinator's side). */
export interface LeaseApi {
  query(text: string, params?: unknown[], options?: CallOptions): Promise<Reply<QueryResult>>;
  release(): Promise<Reply<null>>;
}

/** A granted lease: its number, the server backend's pid, the lease itself, and (remote only) how to end its transport. */
export interface Acquired {
  id: number;
  pid: number;
  lease: LeaseApi;
  close?: () => void;
}

/** What a coordinator (Durable Object or the coordinator Worker's entrypoint) answers over RPC. */
export interface CoordinatorApi {
  query(tenant: string, text: string, params?: unknown[], options?: CallOptions): Promise<Reply<QueryResult>>;
  acquire(tenant: string, options?: CallOptions): Promise<Reply<Acquired>>;
  stats(tenant: string): Promise<Reply<unknown>>;
}

/** How a driver's client session borrows server connections (design §4). */
export type WireMode = "transaction" | "session";

/**
 * What a coordinator (or a remote tunnel) offers drivers: one client session per
 * call, speaking the Postgres wire protocol. `inbound` carries the client's
 * bytes (startup first); the returned stream carries the coordinator's answers
 * and ends when the session ends.
 */
export interface WireTarget {
  connect(tenant: string, options: { mode: WireMode }, inbound: ReadableStream<Uint8Array>): Promise<ReadableStream<Uint8Array>>;
}
