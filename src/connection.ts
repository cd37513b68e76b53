import { fromShape, PoolError } from "./errors.ts";
import type { CallOptions, LeaseApi, Reply } from "./protocol.ts";
import { decodeResult, encodeQuery } from "./codec.ts";
import type { Result } from "./result.ts";
import { checkQuery, statement } from "./sql.ts";

/** Unwraps a coordinator reply, rebuilding `PoolError` / `DatabaseError`. */
export function unwrap<T>(reply: Reply<T>): T {
  if (reply.ok) return reply.value;
  throw fromShape(reply.error);
}

/**
 * A leased connection (session mode): every query runs on the same server
 * session until `release()`. Session state is reset when it goes back.
 */
export class Connection {
  /** The lease's number on its coordinator. */
  readonly id: number;
  /** The server backend pid of the pinned connection. */
  readonly pid: number;
  readonly tenant: string;
  readonly #lease: LeaseApi;
  readonly #call: CallOptions | undefined;
  readonly #giveBack: () => unknown;
  #released = false;

  /** `giveBack` returns the lease to its coordinator (it depends on the transport); `release()` calls it once. */
  constructor(tenant: string, id: number, pid: number, lease: LeaseApi, call: CallOptions | undefined, giveBack: () => unknown) {
    this.tenant = tenant;
    this.id = id;
    this.pid = pid;
    this.#lease = lease;
    this.#call = call;
    this.#giveBack = giveBack;
  }

  /** Tagged-template query; interpolated values are always bound parameters. */
  async sql<Row = Record<string, unknown>>(strings: TemplateStringsArray, ...values: unknown[]): Promise<Result<Row>> {
    const { text, params } = statement(this.tenant, strings, values);
    return this.query<Row>(text, params);
  }

  /** Runs `text` with `$1..$n` parameters on this lease's connection. */
  async query<Row = Record<string, unknown>>(text: string, params: unknown[] = []): Promise<Result<Row>> {
    if (this.#released) throw new PoolError("LEASE_RELEASED", this.tenant, `tenant "${this.tenant}" lease ${this.id} was already released`);
    checkQuery(this.tenant, text, params);
    const bytes = encodeQuery(text, params);
    let reply: Reply<Uint8Array>;
    try {
      reply = await this.#lease.run(bytes, this.#call);
    } catch (error) {
      throw lost(this.tenant, this.id, error);
    }
    return decodeResult<Row>(unwrap(reply), this.tenant);
  }

  /** Runs `fn` inside BEGIN/COMMIT on this connection; ROLLBACK if it throws. */
  async begin<T>(fn: (tx: Connection) => Promise<T>): Promise<T> {
    await this.query("begin");
    try {
      const value = await fn(this);
      await this.query("commit");
      return value;
    } catch (error) {
      await this.query("rollback").catch(() => {});
      throw error;
    }
  }

  /**
   * Gives the connection back; idempotent. Sent, not awaited: the coordinator
   * rolls back and resets the session when the release reaches it, and the
   * caller does not wait a round trip for that.
   */
  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    // A failed release means the coordinator is gone: its sockets, and this lease, went with it.
    void Promise.resolve().then(this.#giveBack).catch(() => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }
}

/** A lease call that failed in transport: the coordinator restarted or went away. */
function lost(tenant: string, id: number, error: unknown): PoolError {
  const cause = error instanceof Error ? error.message : String(error);
  return new PoolError("LEASE_LOST", tenant, `tenant "${tenant}" lease ${id} was lost (${cause}); acquire a new connection and retry`);
}
