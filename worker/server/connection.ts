import type { Backend, Receiver } from "../wire/backend.ts";
import type { ServerConfig } from "./config.ts";
import { parseCommandComplete, query, readInt32 } from "../wire/messages.ts";
import { BackendType, CancelRequest, CopyFail, DataRow, ParameterStatus, ServerError, Terminate } from "./messages.ts";
import type { Connector } from "./socket.ts";
import { openSocket, startup, type Startup, type StartupOptions } from "./startup.ts";

/** One statement's outcome from `query()`: its command tag (`SELECT 1`, `DISCARD ALL`) and text values. */
export interface QueryResult {
  command: string;
  rows: (string | null)[][];
}

/** How to open a server connection and whom to tell when it dies. */
export interface ServerConnectionOptions extends StartupOptions {
  /** Fires once when the connection ends by itself (server restart, `pg_terminate_backend`, a protocol error), never after `close()`. */
  onClose?: (cause: Error) => void;
}

/** How long `close()` waits for Terminate to be written before closing the socket anyway. */
const TERMINATE_WAIT_MS = 1_000;

/** How long a cancel waits for the server to hang up before closing its socket anyway. */
const CANCEL_WAIT_MS = 5_000;

/**
 * One physical connection to Postgres on a raw socket. A read loop frames
 * backend messages and hands each, as a view of the bytes read, to the
 * attached `Receiver`; the pool's own statements go through `query()`.
 */
export class ServerConnection implements Backend {
  /** Opens a socket, negotiates TLS per `sslmode`, logs in, and starts the read loop. */
  static async open(connector: Connector, config: ServerConfig, options: ServerConnectionOptions = {}): Promise<ServerConnection> {
    return new ServerConnection(await startup(connector, config, options), connector, config, options.onClose);
  }

  readonly pid: number;
  readonly parameters: Map<string, string>;
  transactionStatus: "I" | "T" | "E";
  /**
   * Incremented whenever every prepared statement on the server may have been
   * dropped (a reset running DISCARD ALL / DEALLOCATE ALL): a statement cache
   * from an older epoch is void.
   */
  statementEpoch = 0;
  /** Whether the socket runs TLS. */
  readonly tls: boolean;

  private readonly socket: Startup["socket"];
  private readonly reader: Startup["reader"];
  private readonly writer: Startup["writer"];
  private readonly secretKey: Uint8Array;
  private readonly connector: Connector;
  private readonly config: ServerConfig;
  private readonly onClose: ((cause: Error) => void) | undefined;
  private receiver: Receiver | undefined;
  /** The pool's own statements in flight, answered in order (one ReadyForQuery each). */
  private readonly queries: SimpleQuery[] = [];
  /** Receivers that got messages since the last flush. */
  private touched: Receiver[] = [];
  /** A message begun in an earlier read: its bytes so far (allocated to its full size once the header is known). */
  private partial: Uint8Array | undefined;
  private partialFilled = 0;
  private closing = false;
  private endedBy: Error | undefined;

  constructor(start: Startup, connector: Connector, config: ServerConfig, onClose?: (cause: Error) => void) {
    this.socket = start.socket;
    this.reader = start.reader;
    this.writer = start.writer;
    this.tls = start.tls;
    this.pid = start.pid;
    this.secretKey = start.secretKey;
    this.parameters = start.parameters;
    this.transactionStatus = start.transactionStatus;
    this.connector = connector;
    this.config = config;
    this.onClose = onClose;
    void this.run(start.rest);
  }

  /** Whether the connection ended (closed by the pool, or broken). */
  get closed(): boolean {
    return this.endedBy !== undefined;
  }

  write(bytes: Uint8Array): Promise<void> {
    if (this.endedBy) return Promise.reject(this.endedBy);
    // The stream queues writes in call order.
    return this.writer.write(bytes);
  }

  receive(receiver: Receiver | undefined): void {
    if (receiver && this.queries.length > 0) throw new Error("INTERNAL: a receiver was attached while the pool's own statement runs");
    this.receiver = receiver;
    if (receiver && this.endedBy) {
      const cause = this.endedBy;
      queueMicrotask(() => receiver.closed(cause));
    }
  }

  /**
   * Runs the pool's own statements (simple Query protocol, text values): one
   * result per statement. Rejects with the server's error (`code` = SQLSTATE,
   * `severity`). Only while no receiver is attached.
   */
  query(text: string): Promise<QueryResult[]> {
    if (this.receiver) return Promise.reject(new Error("INTERNAL: query() while a receiver is attached"));
    if (this.endedBy) return Promise.reject(this.endedBy);
    return new Promise((resolve, reject) => {
      this.queries.push(new SimpleQuery(resolve, reject, (bytes) => void this.write(bytes).catch(() => {})));
      this.write(query(text)).catch((error) => this.end(error));
    });
  }

  async cancel(): Promise<void> {
    const open = await openSocket(this.connector, this.config);
    try {
      await open.writer.write(CancelRequest(this.pid, this.secretKey));
      // The server hangs up once it has acted on the request (libpq waits for that too).
      let timer: ReturnType<typeof setTimeout> | undefined;
      const hungUp = (async () => {
        while (!(await open.reader.read()).done);
      })().catch(() => {});
      await Promise.race([hungUp, new Promise((resolve) => (timer = setTimeout(resolve, CANCEL_WAIT_MS)))]);
      clearTimeout(timer);
    } finally {
      await open.socket.close().catch(() => {});
    }
  }

  /** Sends Terminate and closes the socket; `onClose` does not fire. */
  async close(): Promise<void> {
    if (this.endedBy || this.closing) return;
    this.closing = true;
    // A server that stopped reading must not hold the close: Terminate is a courtesy.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.writer.write(Terminate()).catch(() => {}), new Promise((resolve) => (timer = setTimeout(resolve, TERMINATE_WAIT_MS)))]);
    clearTimeout(timer);
    await this.socket.close().catch(() => {});
    this.end(new Error("the connection was closed by the pool"));
  }

  private async run(rest: Uint8Array): Promise<void> {
    try {
      if (rest.length > 0) {
        this.consume(rest);
        await this.flush();
      }
      for (;;) {
        const { value, done } = await this.reader.read();
        if (done) throw new Error("the server closed the connection");
        this.consume(value);
        // Awaited only when a receiver holds the next read back: a settled await still costs a microtask turn per read.
        const flushed = this.flush();
        if (flushed) await flushed;
      }
    } catch (error) {
      this.end(error instanceof Error ? error : new Error(String(error)));
    }
  }

  /** Frames one read's bytes: whole messages are views of `chunk`; only a message split across reads is copied. */
  private consume(chunk: Uint8Array): void {
    let at = 0;
    if (this.partial) at = this.fillPartial(chunk);
    while (at < chunk.length && !this.partial) {
      const left = chunk.length - at;
      if (left < 5) {
        this.partial = new Uint8Array(5);
        this.partial.set(chunk.subarray(at));
        this.partialFilled = left;
        return;
      }
      const size = 1 + readInt32(chunk, at + 1);
      if (size < 5) throw new Error(`the server sent a malformed message (type ${chunk[at]}, length ${size - 1})`);
      if (size > left) {
        this.partial = new Uint8Array(size);
        this.partial.set(chunk.subarray(at));
        this.partialFilled = left;
        return;
      }
      this.dispatch(chunk[at]!, chunk.subarray(at, at + size));
      at += size;
    }
  }

  /** Copies the start of `chunk` into the message in progress; returns how many bytes it took. */
  private fillPartial(chunk: Uint8Array): number {
    let at = 0;
    let partial = this.partial!;
    if (this.partialFilled < 5) {
      // Only the header was there: complete it, then size the buffer.
      const take = Math.min(5 - this.partialFilled, chunk.length);
      partial.set(chunk.subarray(0, take), this.partialFilled);
      this.partialFilled += take;
      at = take;
      if (this.partialFilled < 5) return at;
      const size = 1 + readInt32(partial, 1);
      if (size < 5) throw new Error(`the server sent a malformed message (type ${partial[0]}, length ${size - 1})`);
      const sized = new Uint8Array(size);
      sized.set(partial);
      this.partial = partial = sized;
    }
    const take = Math.min(partial.length - this.partialFilled, chunk.length - at);
    partial.set(chunk.subarray(at, at + take), this.partialFilled);
    this.partialFilled += take;
    at += take;
    if (this.partialFilled === partial.length) {
      this.partial = undefined;
      this.dispatch(partial[0]!, partial);
    }
    return at;
  }

  private dispatch(type: number, frame: Uint8Array): void {
    switch (type) {
      case BackendType.ReadyForQuery:
        this.ReadyForQuery(frame);
        break;
      case BackendType.ParameterStatus:
        this.ParameterStatus(frame);
        break;
    }
    const receiver = this.receiver;
    if (receiver) {
      if (this.touched[this.touched.length - 1] !== receiver) this.touched.push(receiver);
      receiver.message(type, frame);
    } else if (this.queries.length > 0) {
      if (this.queries[0]!.message(type, frame)) this.queries.shift();
    } else {
      this.unattended(type, frame);
    }
  }

  private ReadyForQuery(frame: Uint8Array): void {
    this.transactionStatus = String.fromCharCode(frame[5]!) as "I" | "T" | "E";
  }

  private ParameterStatus(frame: Uint8Array): void {
    const [name, value] = ParameterStatus(frame);
    this.parameters.set(name, value);
  }

  /** A message nobody asked for: harmless ones are absorbed, anything else means the connection is unusable. */
  private unattended(type: number, frame: Uint8Array): void {
    switch (type) {
      case BackendType.ParameterStatus:
      case BackendType.NoticeResponse:
      case BackendType.NotificationResponse:
        return;
      case BackendType.ErrorResponse:
        throw ServerError.from(frame);
      default:
        throw new Error(`the server sent an unexpected message (type ${String.fromCharCode(type)}) with no session attached`);
    }
  }

  /** Tells the receivers of this read that it is over, one after the other; a promise while one holds the next read back. */
  private flush(): Promise<void> | undefined {
    if (this.touched.length === 0) return undefined;
    const touched = this.touched;
    this.touched = [];
    return this.flushFrom(touched, 0);
  }

  private flushFrom(touched: Receiver[], from: number): Promise<void> | undefined {
    for (let i = from; i < touched.length; i++) {
      const pending = touched[i]!.flush();
      // The receiver's own failure is its session's business, not this connection's.
      if (pending) return pending.then(() => this.flushFrom(touched, i + 1), () => this.flushFrom(touched, i + 1));
    }
    return undefined;
  }

  /** The connection is over: the socket goes, whoever waits hears why, `onClose` fires unless the pool closed it. */
  private end(cause: Error): void {
    if (this.endedBy) return;
    this.endedBy = cause;
    void this.socket.close().catch(() => {});
    try {
      this.receiver?.closed(cause);
    } finally {
      for (const query of this.queries.splice(0)) query.fail(cause);
      if (!this.closing) this.onClose?.(cause);
    }
  }
}

/** Collects the results of one simple Query up to its ReadyForQuery. */
class SimpleQuery {
  private readonly results: QueryResult[] = [];
  private rows: (string | null)[][] = [];
  private error: ServerError | undefined;

  constructor(
    private readonly resolve: (results: QueryResult[]) => void,
    private readonly reject: (error: Error) => void,
    private readonly write: (bytes: Uint8Array) => void,
  ) {}

  /** Takes one message; true once the query is over. */
  message(type: number, frame: Uint8Array): boolean {
    switch (type) {
      case BackendType.DataRow:
        this.rows.push(DataRow(frame));
        break;
      case BackendType.CommandComplete:
        this.results.push({ command: parseCommandComplete(frame), rows: this.rows });
        this.rows = [];
        break;
      case BackendType.EmptyQueryResponse:
        this.results.push({ command: "", rows: [] });
        break;
      case BackendType.ErrorResponse:
        this.error ??= ServerError.from(frame);
        break;
      case BackendType.CopyInResponse:
        this.write(CopyFail("COPY FROM STDIN is not supported in the pool's own statements"));
        break;
      case BackendType.ReadyForQuery:
        if (this.error) this.reject(this.error);
        else this.resolve(this.results);
        return true;
    }
    return false;
  }

  /** The connection ended first: the server's own error if it sent one (FATAL before hanging up). */
  fail(cause: Error): void {
    this.reject(this.error ?? cause);
  }
}
