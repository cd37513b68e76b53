import type { ErrorShape } from "./errors.ts";
import type { HintedWire, ShardHint } from "./shards.ts";

/**
 * Every coordinator answer: errors travel as values because RPC drops custom
 * error properties. `run` and `acquire` answers carry the shard's load hint.
 */
export type Reply<T> = ({ ok: true; value: T } | { ok: false; error: ErrorShape }) & { hint?: ShardHint };

/** Per-call options a borrower may send. */
export interface CallOptions {
  /** Overrides the pool's `acquireTimeoutMs` for this call. */
  acquireTimeoutMs?: number;
  /** Overrides the pool's `queryTimeoutMs` for this call. */
  queryTimeoutMs?: number;
}

/** A lease as the coordinator serves it (an RPC target on the coordinator's side): a session-mode session, one batch per `run`. */
export interface LeaseApi {
  /** One batch of frontend protocol bytes; the answer is the backend's bytes up to its last ReadyForQuery. */
  run(bytes: Uint8Array, options?: CallOptions): Promise<Reply<Uint8Array>>;
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
  /** A one-shot: one batch of frontend protocol bytes in transaction mode, no startup; the backend's bytes up to its last ReadyForQuery. */
  run(tenant: string, bytes: Uint8Array, options?: CallOptions): Promise<Reply<Uint8Array>>;
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
  wire(tenant: string, options: { mode: WireMode }, inbound: ReadableStream<Uint8Array>): Promise<ReadableStream<Uint8Array>>;
}

/** One shard's coordinator as a driver session's router calls it: asked with `hint: true`, it answers the stream with its load hint. */
export interface ShardWireTarget {
  wire(tenant: string, options: { mode: WireMode; hint: true }, inbound: ReadableStream<Uint8Array>): Promise<ReadableStream<Uint8Array> | HintedWire>;
}
