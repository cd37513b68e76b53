import { oneShotLost, PoolError } from "./errors.ts";
import type { Tunnel } from "./socket.ts";

/** `run` was given a batch after the session closed: nothing was sent, so it may go on another session. */
export class SessionClosed extends PoolError {}

const SYNC = 0x53; // S
const QUERY = 0x51; // Q
const READY_FOR_QUERY = 0x5a; // Z
const BACKEND_KEY_DATA = 0x4b; // K
const ERROR_RESPONSE = 0x45; // E

/** What a session is for: `oneShot` sessions close when a batch leaves a transaction open (a one-shot in a Worker ends its session). */
export interface SessionOptions {
  tenant: string;
  oneShot: boolean;
  /** Closes the session after this long without a batch (absent: never). */
  idleMs?: number;
}

/**
 * One client session of the built-in client over the remote tunnel (design §2):
 * the startup exchange once (sent with the first batch), then batches as
 * `encodeQuery` makes them, one at a time in order, each answered with the
 * coordinator's bytes up to the ReadyForQuery of its last Sync or Query.
 */
export class TunnelSession {
  readonly tenant: string;
  /** The transaction status of the last ReadyForQuery. */
  status: "I" | "T" | "E" = "I";
  /** The coordinator's own key for this session (BackendKeyData's process id; never the server's). */
  key = 0;
  /** Batches queued or running. */
  pending = 0;
  closed = false;

  readonly #oneShot: boolean;
  readonly #idleMs: number | undefined;
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #tunnel: Promise<Tunnel>;
  #writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #startup: Uint8Array | undefined;
  /** Bytes read past the last whole message. */
  #rest: Uint8Array = new Uint8Array(0);
  #chain: Promise<unknown> = Promise.resolve();
  /** The answer that ended the session with an error (a FATAL ErrorResponse): later batches get it again. */
  #endedWith: Uint8Array | undefined;

  /** `tunnel` is the session's socket as `openTunnel` opens it (a refused one yields the refusal as a FATAL ErrorResponse). */
  constructor(tunnel: Promise<Tunnel>, options: SessionOptions) {
    this.tenant = options.tenant;
    this.#oneShot = options.oneShot;
    this.#idleMs = options.idleMs;
    this.#tunnel = tunnel;
    this.#startup = startupMessage(options.tenant);
  }

  /** Runs one batch after those before it; resolves with its answer (an error answer included: `decodeResult` throws it). */
  run(batch: Uint8Array): Promise<Uint8Array> {
    this.pending++;
    clearTimeout(this.#idleTimer);
    const result = this.#chain.then(() => this.#runNow(batch)).finally(() => {
      if (--this.pending > 0 || this.#idleMs === undefined || this.closed) return;
      this.#idleTimer = setTimeout(() => {
        if (this.pending === 0) this.close();
      }, this.#idleMs);
    });
    this.#chain = result.catch(() => undefined);
    return result;
  }

  /** Closes the socket: the coordinator rolls back an open transaction and returns (and, in session mode, resets) the connection. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.#idleTimer);
    void this.#tunnel.then((tunnel) => {
      this.#reader?.cancel().catch(() => {});
      if (!this.#reader) tunnel.readable.cancel().catch(() => {});
      (this.#writer ?? tunnel.writable.getWriter()).close().catch(() => {});
    }, () => {});
  }

  async #runNow(batch: Uint8Array): Promise<Uint8Array> {
    // A one-shot queued behind the batch whose FATAL answer ended an established session was never sent: it goes on
    // another session. A FATAL answer to the startup (no BackendKeyData yet: CONNECT_FAILED, UNAUTHORIZED …) is every batch's.
    if (this.#endedWith && (!this.#oneShot || this.key === 0)) return this.#endedWith;
    if (this.closed) throw this.#unsent();
    const tunnel = await this.#tunnel;
    this.#writer ??= tunnel.writable.getWriter();
    this.#reader ??= tunnel.readable.getReader();
    let expected = answers(batch);
    let bytes = batch;
    if (this.#startup) {
      bytes = concat([this.#startup, batch]);
      this.#startup = undefined;
      expected++;
    }
    let unsent = false;
    try {
      await this.#writer.write(bytes);
    } catch {
      // The socket closed: what the coordinator sent before (a FATAL error) is read as the answer.
      this.closed = true;
      unsent = true;
    }
    const answer = await this.#read(expected, unsent);
    if (this.#oneShot && this.status !== "I") this.close();
    return answer;
  }

  /** Reads whole messages until `expected` ReadyForQuery messages came; an end before that closes the session (`unsent`: the batch never left). */
  async #read(expected: number, unsent: boolean): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    let ready = 0;
    let failed = false;
    let data: Uint8Array = this.#rest;
    for (;;) {
      let at = 0;
      while (ready < expected && at + 5 <= data.length) {
        const length = new DataView(data.buffer, data.byteOffset + at + 1, 4).getInt32(0);
        if (at + 1 + length > data.length) break;
        const type = data[at]!;
        if (type === READY_FOR_QUERY) {
          ready++;
          this.status = String.fromCharCode(data[at + 5]!) as "I" | "T" | "E";
        } else if (type === BACKEND_KEY_DATA) {
          this.key = new DataView(data.buffer, data.byteOffset + at + 5, 4).getInt32(0);
        } else if (type === ERROR_RESPONSE) {
          failed = true;
        }
        parts.push(data.subarray(at, at + 1 + length));
        at += 1 + length;
      }
      data = data.subarray(at);
      if (ready >= expected) {
        this.#rest = data;
        return concat(parts);
      }
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await this.#reader!.read();
      } catch {
        chunk = { done: true, value: undefined };
      }
      if (chunk.done) {
        this.closed = true;
        // The coordinator said why it ended the session (a FATAL error, a refused upgrade): that is the answer.
        if (failed) return (this.#endedWith = concat(parts));
        // An idle one-shot session the coordinator closed (a deploy, a reset): the batch never left, so it may go on a fresh one.
        if (unsent && this.#oneShot) throw this.#unsent();
        throw this.#lost(new Error("the tunnel closed before the answer"));
      }
      data = data.length === 0 ? chunk.value : concat([data, chunk.value]);
    }
  }

  #unsent(): SessionClosed {
    return new SessionClosed("LEASE_LOST", this.tenant, `tenant "${this.tenant}": the session to the coordinator had closed; acquire a new connection and retry`);
  }

  #lost(error: unknown): PoolError {
    const cause = error instanceof Error ? error.message : String(error);
    // A one-shot's batch had been sent: it may have run.
    if (this.#oneShot) return oneShotLost(this.tenant, cause);
    return new PoolError("LEASE_LOST", this.tenant, `tenant "${this.tenant}": the session to the coordinator was lost (${cause}); retry on a new one`);
  }
}

/** The ReadyForQuery messages a batch is answered with: one per Sync and Query. */
function answers(batch: Uint8Array): number {
  const view = new DataView(batch.buffer, batch.byteOffset, batch.byteLength);
  let count = 0;
  for (let at = 0; at + 5 <= batch.length; at += 1 + view.getInt32(at + 1)) {
    if (batch[at] === SYNC || batch[at] === QUERY) count++;
  }
  return count;
}

/** StartupMessage (protocol 3.0); the coordinator answers it and ignores the names, the tunnel's token is the credential. */
function startupMessage(tenant: string): Uint8Array {
  // edgepool_builtin: this client Parses in every batch that Binds (the coordinator then keeps fewer of its statement names).
  const body = new TextEncoder().encode(`user\0edgepool\0database\0${tenant}\0application_name\0edgepool\0edgepool_builtin\x001\0\0`);
  const out = new Uint8Array(8 + body.length);
  const view = new DataView(out.buffer);
  view.setInt32(0, out.length);
  view.setInt32(4, 196608);
  out.set(body, 8);
  return out;
}

function concat(chunks: Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}
