import { PoolError } from "../../src/errors.ts";
import type { Lease } from "../pool/connection.ts";
import type { Clock } from "../pool/clock.ts";
import { writeBatch, type Backend, type Receiver } from "./backend.ts";
import type { CancelKey, CancelKeys } from "./cancel.ts";
import { asPoolError, toErrorResponse } from "./errors.ts";
import {
  parseFields,
  CANCEL_REQUEST, FrameReader, GSSENC_REQUEST, PROTOCOL_3_0, ProtocolViolation, SSL_REQUEST, STARTUP, Type,
  authenticationOk, backendKeyData, bindStatementSpan, closeComplete, closeStatement, commandComplete, describe,
  errorResponse, negotiateProtocolVersion, parameterStatus, parseCancelRequest, parseCommandComplete, parseComplete,
  parseParse, parseQuery, parseStartup, parseTarget, readyForQuery, replaceName, type Frame,
} from "./messages.ts";
import { Pipeline, type Rider } from "./pipeline.ts";
import type { PreparedStatements, ServerStatements, Statement } from "./prepared.ts";
import { SessionStatements } from "./prepared.ts";
import type { WireStats } from "./stats.ts";

/** The pool as a session uses it (`Pool<B>` fits). */
export interface SessionPool<B> {
  acquire(options: { timeoutMs?: number; shared?: boolean }): Promise<Lease<B>>;
  release(lease: Lease<B>, options: { reset?: boolean }): void;
  touch(lease: Lease<B>, inflight?: number): void;
  markBroken(handle: B): void;
  assertActive(lease: Lease<B>): void;
}

/** Transaction mode returns the server connection after each transaction; session mode holds it for the session. */
export type PoolMode = "transaction" | "session";

/** What a wire session is given by the coordinator (or the batch adapter). */
export interface WireSessionDeps<B extends Backend> {
  tenant: string;
  mode: PoolMode;
  pool: SessionPool<B>;
  /** Bytes to the client; a returned promise is backpressure: no more server bytes are read until it settles. */
  send(bytes: Uint8Array): void | Promise<void>;
  /** Closes the client transport (after a FATAL error, a Terminate or a CancelRequest). */
  close(): void;
  clock: Clock;
  /** The coordinator's registry; its `maxPreparedStatements` applies. */
  prepared: PreparedStatements;
  stats: WireStats;
  cancelKeys: CancelKeys;
  /** The server's ParameterStatus values for the startup answer (the coordinator caches them). */
  parameters(): ReadonlyMap<string, string> | Promise<ReadonlyMap<string, string>>;
  /** Whether the client starts with a startup exchange; false for the built-in client (the session starts ready). */
  startup: boolean;
  /** Overrides the pool's `acquireTimeoutMs` for this session's acquires. */
  acquireTimeoutMs?: number;
  /** Told once when the session ended (after its server connection went back): a retiring shard drains after its last session. */
  ended?: () => void;
  /**
   * Cancels the running query on the server once an answer (ReadyForQuery) is
   * owed this long, and turns its 57014 into `QUERY_TIMEOUT` (0 or absent: off).
   * Not for built-in batch sessions: `FrontDoor.run` times those.
   */
  queryTimeoutMs?: number;
  /**
   * A built-in one-shot session (each `receive` is one whole batch): a
   * self-contained batch may ride a busy server connection at max
   * (pipelining). Never for leases or drivers' sessions.
   */
  shared?: boolean;
}

/** What the coordinator expects back for one message it sent the server, in order. */
interface Expected {
  /** The frontend message type answered (Parse, Bind, Describe, Execute, Close, Sync, Query, FunctionCall); 0 for an answer of our own. */
  type: number;
  /** `forward` the server's answer, `swallow` it (a message we injected), or send `own` instead (nothing was sent). */
  action: "forward" | "swallow" | "own";
  own?: () => Uint8Array;
  /** A Parse: the statement to forget on the server if the Parse never completes. */
  statement?: Statement;
}

/** Statements after which a server connection's session state may differ: reset it before anyone else gets it. */
const CHANGES_SESSION = /(?:^|;)\s*(?:set|reset|prepare|deallocate|discard|listen|load)\b|\bcreate\s+(?:(?:global|local)\s+)?temp(?:orary)?\b|\bpg_(?:try_)?advisory_lock(?:_shared)?\s*\(|\bwith\s+hold\b|\bset_config\s*\(/i;
/** Statements that open or end a transaction, or run COPY: their server connection cannot carry other sessions' queries. */
const TRANSACTION_OR_COPY = /(?:^|;)\s*(?:begin|start|commit|end|rollback|abort|savepoint|release|prepare\s+transaction|copy)\b/i;
const LISTEN = /(?:^|;)\s*listen\b/i;
// `\s*(?:;\s*)?$`, not `\s*;?\s*$`: the latter backtracks quadratically on a long run of spaces (seconds of the shared thread).
const DEALLOCATE_NAME = /^\s*deallocate\s+(?:prepare\s+)?("?)([^";\s]+)\1\s*(?:;\s*)?$/i;
/** Command tags of statements that change session state, as bytes (compared in place: no decoding per query). */
const SESSION_TAGS = ["SET", "RESET", "PREPARE", "DEALLOCATE", "DISCARD", "LISTEN", "UNLISTEN", "LOAD"].map((tag) => new TextEncoder().encode(tag));

/** Whether a CommandComplete's tag is one of `SESSION_TAGS` (the whole tag, or its first word). */
function changesSession(frame: Uint8Array): boolean {
  tags: for (const tag of SESSION_TAGS) {
    if (frame.length < 6 + tag.length || frame[5] !== tag[0]) continue;
    for (let i = 1; i < tag.length; i++) if (frame[5 + i] !== tag[i]) continue tags;
    const after = frame[5 + tag.length];
    if (after === 0 || after === 0x20) return true;
  }
  return false;
}
/** The coordinator's own server-side statement names (`edgepool_<n>`): no client's to close. */
const REGISTRY_NAME = /^edgepool_\d+$/;
const DROPS_ALL = /^\s*(?:deallocate\s+(?:prepare\s+)?all|discard\s+all)\s*(?:;\s*)?$/i;
/** Statement names a built-in client's session keeps (as many as the client's own cache of Parse messages). */
const BUILT_IN_SESSION_STATEMENTS = 256;
/** The startup parameter by which the remote built-in client says it is one (the coordinator answers startups itself: no server sees it). */
export const BUILT_IN_CLIENT_PARAMETER = "edgepool_builtin";

/** A statement that cannot share a server connection with other sessions' queries (see `rides()`). */
function runsAlone(text: string): boolean {
  return TRANSACTION_OR_COPY.test(text) || CHANGES_SESSION.test(text);
}

const ANSWERED_BY = {
  ParseComplete: [Type.Parse],
  BindComplete: [Type.Bind],
  CloseComplete: [Type.Close],
  Describe: [Type.Describe],
  Execute: [Type.Execute],
  ReadyForQuery: [Type.Sync, Type.Query, Type.FunctionCall],
} as const;

/**
 * One client session's state machine (design §4): the startup exchange,
 * attaching a server connection per transaction (or per session), named
 * statements over the registry, COPY, cancel keys and pool errors as
 * ErrorResponses. Server messages are forwarded as the views they came in;
 * answers the coordinator makes itself are queued in order with the
 * server's.
 */
export class WireSession<B extends Backend> {
  readonly tenant: string;
  readonly mode: PoolMode;
  /** `startup` until the startup exchange is done, `ready` after, `closed` at the end. */
  phase: "startup" | "ready" | "closed";
  /** The attached server connection's lease, if any. */
  lease: Lease<B> | undefined;
  /** The attached server connection, if any. */
  backend: B | undefined;
  /** The client's cancel key (its BackendKeyData). */
  readonly key: CancelKey;
  /** The pool error that ended the session (sent to the client as a FATAL ErrorResponse), if one did. */
  endedBy: PoolError | undefined;

  private readonly deps: WireSessionDeps<B>;
  private readonly reader: FrameReader;
  private statements: SessionStatements;
  private server: ServerStatements | undefined;
  private receiver: Receiver | undefined;
  /** This session's place on a shared server connection (pipelining), when it rides one. */
  private rider: Rider | undefined;
  /** Answers expected from the server (or owed by us), in the order the client must get them. */
  private readonly expected: Expected[] = [];
  /** Frontend bytes for the server, written once per client chunk. */
  private writes: Uint8Array[] = [];
  /** Bytes for the client not yet handed to `send`. */
  private pieces: Uint8Array[] = [];
  private chain: Promise<void> = Promise.resolve();
  /** Parse/Bind/Describe/Execute/Close/Flush sent since the last Sync: the exchange holds the connection. */
  private exchangeOpen = false;
  /** COPY FROM STDIN (or COPY BOTH) runs: the client sends data. */
  private copying = false;
  /** The server reported an error since the last ReadyForQuery: it skips to the next Sync. */
  private failed = false;
  /** This attachment may have changed session state (or ended in error): reset before reuse. */
  private dirty = false;
  /** After an error of our own in an extended-protocol batch: drop client messages until Sync. */
  private skipping = false;
  /** Whether the lease is marked in flight with the pool. */
  private inflight = false;
  private status: "I" | "T" | "E" = "I";
  /** ReadyForQuery owed to the client: Sync, Query and FunctionCall received minus ReadyForQuery sent. */
  private owed = 0;
  /** ReadyForQuery messages among `pieces`: they count as answered once handed to `send`. */
  private readyInPieces = 0;
  private settled: (() => void)[] = [];
  /** The `queryTimeoutMs` timer, running while a ReadyForQuery is owed. */
  private queryTimer: unknown;
  /** The timer fired and the query was cancelled: its 57014 is answered as `QUERY_TIMEOUT`. */
  private timedOut = false;
  /** The pool error that kept a batch from a server connection (nothing of that batch ran). */
  refusedWith: PoolError | undefined;

  constructor(deps: WireSessionDeps<B>) {
    this.deps = deps;
    this.tenant = deps.tenant;
    this.mode = deps.mode;
    this.phase = deps.startup ? "startup" : "ready";
    this.reader = new FrameReader(deps.startup);
    // The built-in client Parses in every batch that Binds, so its long-lived sessions need not keep every text they ever ran
    // (in a Worker it has no startup; remote, its startup says so); a driver's session keeps every name it made.
    this.statements = new SessionStatements(deps.startup ? Infinity : BUILT_IN_SESSION_STATEMENTS);
    this.key = deps.cancelKeys.issue(this);
    deps.stats.clients++;
  }

  /** Whether the session ended. */
  get closed(): boolean {
    return this.phase === "closed";
  }

  /** Takes client bytes in any chunking; resolves when they were handled and written on (backpressure). */
  receive(bytes: Uint8Array): Promise<void> {
    this.chain = this.chain.then(() => this.process(bytes));
    return this.chain;
  }

  /**
   * The client went away: an open transaction is rolled back (the connection
   * goes back with a reset) and the connection returned. Idempotent.
   */
  end(): void {
    if (this.closed) return;
    this.phase = "closed";
    this.deps.cancelKeys.revoke(this.key);
    this.deps.stats.clients--;
    this.stopQueryTimer();
    this.release();
    for (const resolve of this.settled.splice(0)) resolve();
    this.deps.ended?.();
  }

  /** Resolves once every Sync, Query and FunctionCall received so far was answered with a ReadyForQuery sent to the client, or the session closed. */
  answered(): Promise<void> {
    if (this.owed === 0 || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.settled.push(resolve));
  }

  /**
   * Attaches a server connection now (a built-in session-mode lease, which
   * has no startup exchange); resolves with it, or rejects with the pool
   * error that ended the session.
   */
  start(): Promise<B> {
    const started = this.chain.then(async () => {
      if (!this.backend && !this.closed) {
        const lease = await this.borrow(true, false);
        if (lease) this.attach(lease, false);
      }
      if (this.backend) return this.backend;
      throw this.endedBy ?? this.badRequest("the session has ended");
    });
    this.chain = started.then(() => undefined, () => undefined);
    return started;
  }

  /** Cancels the running query (design §4): only with a server connection attached. */
  async cancel(): Promise<boolean> {
    const backend = this.backend;
    if (!backend || this.closed) return false;
    // On a shared connection the server may still be on an earlier rider's query.
    if (this.rider) await this.rider.pipeline.cancel(this.rider);
    else await backend.cancel();
    return true;
  }

  private async process(bytes: Uint8Array): Promise<void> {
    // A rider writes once: more bytes wait until its answers are in and it left the shared connection.
    if (this.rider) await this.answered();
    if (this.closed) return;
    let frames: Frame[];
    try {
      frames = this.reader.read(bytes);
    } catch (error) {
      if (!(error instanceof ProtocolViolation)) throw error;
      return this.fatal(this.badRequest(`protocol violation: ${error.message}`));
    }
    let from = 0;
    if (frames.length > 0 && this.rides(frames)) {
      const lease = await this.borrow(false, true);
      if (this.closed) return;
      // Joining, the registry decisions below and the write stay in one synchronous stretch: their order is the ticket order.
      if (lease) this.attach(lease, true);
      else {
        this.refused(frames[0]!.type);
        from = 1;
      }
    }
    try {
      for (const frame of frames.slice(from)) {
        if (this.closed) break;
        const pending = this.dispatch(frame);
        if (pending) await pending;
      }
    } catch (error) {
      if (!(error instanceof ProtocolViolation)) throw error;
      return this.fatal(this.badRequest(`protocol violation: ${error.message}`));
    }
    if (this.closed) return;
    if (this.lease) this.deps.pool.touch(this.lease);
    this.markInflight();
    this.startQueryTimer();
    const written = this.write();
    const delivered = this.deliver();
    // Answers of our own alone (Close, DEALLOCATE, a refused LISTEN) end a batch without a server read.
    this.release();
    await Promise.all([written, delivered]);
  }

  /** One client message: the one switch over the frontend message types. */
  private dispatch({ type, frame }: Frame): void | Promise<void> {
    if (type === STARTUP) return this.StartupMessage(frame);
    if (this.phase === "startup") return this.fatal(this.badRequest(`message type ${JSON.stringify(String.fromCharCode(type))} before the startup message`));
    if (type === Type.Terminate) return this.Terminate();
    if (this.skipping) return this.skip(type);
    if (this.lease && this.lease.state !== "active") return this.lost(new Error(`the lease is ${this.lease.state}`));
    if (!this.backend) return this.attachFor(type, frame);
    switch (type) {
      case Type.Query: return this.Query(frame);
      case Type.Parse: return this.Parse(frame);
      case Type.Bind: return this.Bind(frame);
      case Type.Describe: return this.Describe(frame);
      case Type.Execute: return this.Execute(frame);
      case Type.Close: return this.Close(frame);
      case Type.Sync: return this.Sync(frame);
      case Type.Flush: return this.Flush(frame);
      case Type.CopyData:
      case Type.CopyDone:
      case Type.CopyFail: return this.CopyData(frame);
      case Type.FunctionCall: return this.FunctionCall(frame);
      default: return this.fatal(this.badRequest(`unknown message type ${JSON.stringify(String.fromCharCode(type))}`));
    }
  }

  // ── startup ───────────────────────────────────────────────────────────────

  private async StartupMessage(frame: Uint8Array): Promise<void> {
    if (this.phase !== "startup") return this.fatal(this.badRequest("a second startup message"));
    const { code, parameters } = parseStartup(frame);
    if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
      // The transport (WebSocket, RPC, or the proxy's TLS) is the secure channel; the client goes on in plain text.
      this.own(new Uint8Array([0x4e]));
      return this.deliver();
    }
    if (code === CANCEL_REQUEST) return this.CancelRequest(frame);
    if (code >>> 16 !== 3) return this.fatal(this.badRequest(`unsupported frontend protocol ${code >>> 16}.${code & 0xffff}: edgepool speaks 3.0`));
    const unknown = [...parameters.keys()].filter((name) => name.startsWith("_pq_."));
    if (parameters.get(BUILT_IN_CLIENT_PARAMETER) === "1") this.statements = new SessionStatements(BUILT_IN_SESSION_STATEMENTS);
    if (code !== PROTOCOL_3_0 || unknown.length > 0) this.own(negotiateProtocolVersion(PROTOCOL_3_0, unknown));
    if (this.mode === "session") {
      const lease = await this.borrow(true, false);
      if (!lease) return;
      this.attach(lease, false);
    }
    if (this.closed) return;
    let values: ReadonlyMap<string, string>;
    try {
      values = this.backend ? this.backend.parameters : await this.deps.parameters();
    } catch (error) {
      // No server connection to read them from (CONNECT_FAILED, ACQUIRE_TIMEOUT ...): the session cannot start.
      return this.fatal(asPoolError(error, this.deps.tenant), true);
    }
    this.own(authenticationOk());
    for (const [name, value] of values) this.own(parameterStatus(name, value));
    this.own(backendKeyData(this.key.pid, this.key.secret));
    this.own(readyForQuery(this.status));
    this.phase = "ready";
    return this.deliver();
  }

  /** A CancelRequest as the first message: cancel the session owning that key, then close with no answer. */
  private async CancelRequest(frame: Uint8Array): Promise<void> {
    const { pid, secret } = parseCancelRequest(frame);
    this.end();
    this.deps.close();
    await this.deps.cancelKeys.cancel(pid, secret).catch(() => false);
  }

  private Terminate(): void {
    this.end();
    this.deps.close();
  }

  // ── attaching and releasing the server connection ─────────────────────────

  /** A message arrived with no server connection attached: attach, then handle it. */
  private async attachFor(type: number, frame: Uint8Array): Promise<void> {
    // Client COPY data with no COPY running on a connection has no one to go to.
    if (type === Type.CopyData || type === Type.CopyDone || type === Type.CopyFail) return;
    const lease = await this.borrow(false, false);
    if (this.closed) return;
    if (!lease) {
      this.refused(type);
      return this.deliver();
    }
    this.attach(lease, false);
    return this.dispatch({ type, frame });
  }

  /** No server connection could be had for this message: a Query gets its ReadyForQuery now, an extended batch at its Sync. */
  private refused(type: number): void {
    if (type === Type.Query || type === Type.FunctionCall) {
      this.owed++;
      this.answer(() => readyForQuery("I"));
      this.skipping = false;
    } else if (type === Type.Sync) this.skip(type);
  }

  /**
   * Whether this batch may ride a busy server connection: a whole batch of
   * a one-shot session with no transaction open, only Parse, Bind,
   * Describe, Execute, Sync and Query, ending in Sync or Query, no Query
   * inside an open extended exchange (the server would skip it after an
   * error, and the ReadyForQuery count would be off), and no statement that
   * opens or ends a transaction, runs COPY or changes session state.
   */
  private rides(frames: Frame[]): boolean {
    if (!this.deps.shared || this.mode !== "transaction" || this.phase !== "ready" || this.backend || this.skipping) return false;
    if (this.status !== "I" || this.reader.pending) return false;
    let open = false;
    for (const { type, frame } of frames) {
      switch (type) {
        case Type.Parse:
          if (runsAlone(parseParse(frame).query)) return false;
          open = true;
          break;
        case Type.Bind:
        case Type.Describe:
        case Type.Execute:
          open = true;
          break;
        case Type.Sync:
          open = false;
          break;
        case Type.Query:
          if (open || runsAlone(parseQuery(frame))) return false;
          break;
        default:
          return false;
      }
    }
    const last = frames[frames.length - 1]!.type;
    return last === Type.Sync || last === Type.Query;
  }

  /**
   * Borrows a server connection (`shared`: it may be one other one-shots
   * ride). Resolves undefined when none could be had: the error was answered
   * (FATAL ones close the session, the others start skipping to the next Sync).
   */
  private async borrow(atStartup: boolean, shared: boolean): Promise<Lease<B> | undefined> {
    const { pool, stats } = this.deps;
    stats.clientsWaiting++;
    let lease: Lease<B>;
    try {
      lease = await pool.acquire({ timeoutMs: this.deps.acquireTimeoutMs, shared });
    } catch (error) {
      const poolError = asPoolError(error, this.deps.tenant);
      // A session-mode session without its connection is no session: even 53300 ends it.
      if (atStartup) this.fatal(poolError, true);
      else {
        this.refusedWith = poolError;
        this.refuse(poolError);
      }
      return undefined;
    } finally {
      stats.clientsWaiting--;
    }
    if (this.closed) {
      pool.release(lease, { reset: false });
      return undefined;
    }
    return lease;
  }

  /** The one place a server connection is attached; a shared one through its pipeline, behind the sessions already on it. */
  private attach(lease: Lease<B>, shared: boolean): void {
    const backend = lease.connection.handle as B;
    this.lease = lease;
    this.backend = backend;
    this.status = backend.transactionStatus;
    // Both modes: the reset keeps protocol-level statements, so every one on the server must be the registry's (a client name left behind would clash with the next session's).
    this.server = this.deps.prepared.enabled ? this.deps.prepared.server(backend) : undefined;
    const receiver = this.makeReceiver();
    this.receiver = receiver;
    if (shared) this.rider = Pipeline.join(lease, backend, receiver);
    else backend.receive(receiver);
    this.deps.stats.clientsActive++;
  }

  /**
   * The one place a server connection is released, and the release rule:
   * in transaction mode only at ReadyForQuery `I` with nothing outstanding,
   * no COPY, and no extended-protocol exchange open since the last Sync
   * (PgBouncer's rule); in session mode only when the session ends. It goes
   * back reset when the session ends, when state may have changed or the
   * batch failed; a connection with answers still due is closed instead.
   */
  private release(): void {
    const { lease, backend } = this;
    if (!lease || !backend) return;
    const ending = this.closed;
    const busy = this.expected.length > 0 || this.copying || this.exchangeOpen || this.writes.length > 0;
    if (!ending && (this.mode === "session" || busy || this.status !== "I")) return;
    if (this.inflight) this.deps.pool.touch(lease, -1);
    this.inflight = false;
    this.lease = undefined;
    this.backend = undefined;
    this.server = undefined;
    this.receiver = undefined;
    this.expected.length = 0;
    this.writes = [];
    this.deps.stats.clientsActive--;
    const rider = this.rider;
    this.rider = undefined;
    if (rider) rider.pipeline.leave(rider, busy ? new Error("a pipelined session ended with answers due") : undefined);
    else backend.receive(undefined);
    // Answers still due would reach the next borrower: PgBouncer closes such a server connection too.
    if (busy) this.deps.pool.markBroken(backend);
    // A rider's batch changed no session state (see rides()): even after an error the connection is clean at `I`.
    else if (rider) this.deps.pool.release(lease, { reset: this.status !== "I" });
    else this.deps.pool.release(lease, { reset: this.mode === "session" || this.dirty || this.status !== "I" });
    this.dirty = false;
    this.failed = false;
    this.exchangeOpen = false;
    this.copying = false;
  }

  /** The attached server connection closed or failed under the session: LEASE_EXPIRED when the janitor reclaimed it, else LEASE_LOST. */
  private lost(cause: Error): void {
    const { lease, backend } = this;
    if (!lease || !backend || this.closed) return;
    let error: PoolError;
    if (lease.state === "active") this.deps.pool.markBroken(backend);
    try {
      this.deps.pool.assertActive(lease);
      error = new PoolError("LEASE_LOST", this.deps.tenant, `tenant "${this.deps.tenant}" lease ${lease.id} lost its connection (${cause.message})`);
    } catch (e) {
      error = asPoolError(e, this.deps.tenant);
    }
    if (this.inflight) this.deps.pool.touch(lease, -1);
    this.inflight = false;
    this.lease = undefined;
    this.backend = undefined;
    this.receiver = undefined;
    this.expected.length = 0;
    this.deps.stats.clientsActive--;
    const rider = this.rider;
    this.rider = undefined;
    // The connection is given up: the other sessions on it lose it too.
    rider?.pipeline.leave(rider, cause);
    void this.fatal(error);
  }

  /** Marks the lease in flight (never reclaimed) while answers are due or COPY runs. */
  private markInflight(): void {
    if (!this.lease) return;
    const busy = this.expected.length > 0 || this.copying;
    if (busy === this.inflight) return;
    this.inflight = busy;
    this.deps.pool.touch(this.lease, busy ? 1 : -1);
  }

  // ── frontend messages ─────────────────────────────────────────────────────

  private Query(frame: Uint8Array): void {
    this.owed++;
    const text = parseQuery(frame);
    if (this.mode === "transaction" && LISTEN.test(text)) {
      const bytes = this.listenRefused();
      this.answer(() => bytes);
      this.answer(() => readyForQuery(this.status));
      return;
    }
    if (CHANGES_SESSION.test(text)) this.dirty = true;
    if (this.server) {
      const name = DEALLOCATE_NAME.exec(text)?.[2];
      if (name && name.toLowerCase() !== "all" && (this.statements.delete(name) || REGISTRY_NAME.test(name))) {
        // A protocol-level name the server never saw under this name: answer as PgBouncer does, without sending it.
        this.answer(() => commandComplete("DEALLOCATE"));
        this.answer(() => readyForQuery(this.status));
        return;
      }
      if (DROPS_ALL.test(text)) this.statements.clear();
    }
    this.forward(frame, Type.Query);
  }

  private Parse(frame: Uint8Array): void {
    this.exchangeOpen = true;
    const message = parseParse(frame);
    if (this.mode === "transaction" && LISTEN.test(message.query)) {
      // postgres.js' sql.listen sends LISTEN this way (a tagged template): refused as for a Query, then skip to Sync.
      const bytes = this.listenRefused();
      this.answer(() => bytes);
      this.skipping = true;
      return;
    }
    if (CHANGES_SESSION.test(message.query)) this.dirty = true;
    if (!this.server || message.name === "") return this.forward(frame, Type.Parse);
    const statement = this.deps.prepared.statement(message.query, message.types);
    const existing = this.statements.get(message.name);
    // The same text and types again under the same name is taken as a no-op re-prepare (the built-in client names
    // statements by their text and cannot know what a pooled session already holds); anything else is Postgres' 42P05.
    if (existing && existing.key !== statement.key) {
      this.answer(() => errorResponse({ severity: "ERROR", code: "42P05", message: `prepared statement "${message.name}" already exists` }));
      this.skipping = true;
      return;
    }
    this.statements.set(message.name, statement);
    if (this.server.use(statement)) {
      this.deps.stats.preparedHits++;
      this.answer(parseComplete);
      return;
    }
    this.prepare(statement, "forward");
  }

  /** The ErrorResponse for LISTEN in transaction mode: an ERROR (0A000), the session stays usable. */
  private listenRefused(): Uint8Array {
    const error = this.badRequest("LISTEN needs a session-mode connection (mode: \"session\"): in transaction mode notifications would reach whoever holds the server connection next");
    return toErrorResponse(error, { sqlstate: "0A000", fatal: false }).bytes;
  }

  private Bind(frame: Uint8Array): void {
    this.exchangeOpen = true;
    const span = bindStatementSpan(frame);
    const statement = this.server && span.name !== "" ? this.statements.get(span.name) : undefined;
    if (!statement) return this.forward(frame, Type.Bind);
    this.ensure(statement);
    this.forward(replaceName(frame, span.start, span.end, statement.serverNameBytes), Type.Bind);
  }

  private Describe(frame: Uint8Array): void {
    this.exchangeOpen = true;
    const target = parseTarget(frame);
    const statement = this.server && target.kind === "S" && target.name !== "" ? this.statements.get(target.name) : undefined;
    if (!statement) return this.forward(frame, Type.Describe);
    this.ensure(statement);
    this.forward(describe("S", statement.serverName), Type.Describe);
  }

  private Execute(frame: Uint8Array): void {
    this.exchangeOpen = true;
    this.forward(frame, Type.Execute);
  }

  private Close(frame: Uint8Array): void {
    this.exchangeOpen = true;
    const target = parseTarget(frame);
    // The server keeps its statements for every session; the client only forgets its name. A registry name this session
    // never prepared is answered too (Postgres answers a Close of no statement alike): forwarded, it would close another's.
    if (this.server && target.kind === "S" && target.name !== "" && (this.statements.delete(target.name) || REGISTRY_NAME.test(target.name))) {
      this.answer(closeComplete);
      return;
    }
    this.forward(frame, Type.Close);
  }

  private Sync(frame: Uint8Array): void {
    // The server ignores Sync during COPY FROM STDIN: no ReadyForQuery will answer it.
    if (this.copying) return this.forward(frame);
    this.owed++;
    this.exchangeOpen = false;
    this.forward(frame, Type.Sync);
  }

  private Flush(frame: Uint8Array): void {
    this.exchangeOpen = true;
    this.forward(frame);
  }

  private CopyData(frame: Uint8Array): void {
    this.forward(frame);
    // Marks where the copy ends in the stream: Syncs before it reached the server in copy mode.
    if (this.copying && frame[0] !== Type.CopyData) this.expected.push({ type: frame[0]!, action: "swallow" });
  }

  private FunctionCall(frame: Uint8Array): void {
    this.owed++;
    this.forward(frame, Type.FunctionCall);
  }

  /** Skipping after our own error in an extended batch: the Sync ends it (the server's ReadyForQuery if attached, ours if not). */
  private skip(type: number): void {
    if (type !== Type.Sync) return;
    this.skipping = false;
    if (this.backend) return this.Sync(this.syncFrame());
    this.owed++;
    this.answer(() => readyForQuery(this.status));
  }

  private syncFrame(): Uint8Array {
    return new Uint8Array([Type.Sync, 0, 0, 0, 4]);
  }

  // ── named statements ──────────────────────────────────────────────────────

  /** The server connection must have `statement` before a Bind or Describe of it: inject a Parse whose ParseComplete is swallowed. */
  private ensure(statement: Statement): void {
    if (this.server!.use(statement)) return;
    this.deps.stats.preparedReprepares++;
    this.prepare(statement, "swallow");
  }

  /** Sends `statement`'s Parse (closing the least recently used ones beyond `maxPreparedStatements` first). */
  private prepare(statement: Statement, action: "forward" | "swallow"): void {
    this.deps.stats.preparedParses++;
    for (const evicted of this.server!.add(statement)) {
      this.deps.stats.preparedEvictions++;
      this.writes.push(closeStatement(evicted.serverName));
      this.expected.push({ type: Type.Close, action: "swallow" });
    }
    this.writes.push(statement.parse);
    this.expected.push({ type: Type.Parse, action, statement });
  }

  // ── output to the server and to the client ────────────────────────────────

  /** Queues a frontend message for the server; `answeredBy` is the message type whose answer the client waits for. */
  private forward(frame: Uint8Array, answeredBy?: number): void {
    const last = this.writes[this.writes.length - 1];
    if (last && last.buffer === frame.buffer && last.byteOffset + last.length === frame.byteOffset) {
      // Consecutive messages of one client chunk go on as one view.
      this.writes[this.writes.length - 1] = new Uint8Array(frame.buffer, last.byteOffset, last.length + frame.length);
    } else this.writes.push(frame);
    if (answeredBy !== undefined) this.expected.push({ type: answeredBy, action: "forward" });
  }

  private write(): Promise<void> | undefined {
    const backend = this.backend;
    if (!backend || this.writes.length === 0) return undefined;
    const writes = this.writes;
    this.writes = [];
    const written = this.rider ? this.rider.pipeline.write(this.rider, writes) : writeBatch(backend, writes);
    return written.then(
      () => undefined,
      (error: unknown) => this.lost(error instanceof Error ? error : new Error(String(error))),
    );
  }

  /** An answer of our own, delivered after every answer the server still owes before it. */
  private answer(own: () => Uint8Array): void {
    if (this.expected.length === 0) this.own(own());
    else this.expected.push({ type: 0, action: "own", own });
  }

  /** Bytes of our own for the client, in order with what is pending. */
  private own(bytes: Uint8Array): void {
    this.pieces.push(bytes);
    if (bytes[0] === Type.ReadyForQuery) this.readyInPieces++;
  }

  /** Hands pending bytes to the client; returns its backpressure. */
  private deliver(): Promise<void> | undefined {
    if (this.pieces.length === 0) return undefined;
    const pieces = this.pieces;
    this.pieces = [];
    const ready = this.readyInPieces;
    this.readyInPieces = 0;
    let pending: Promise<void>[] | undefined;
    for (const piece of pieces) {
      const result = this.deps.send(piece);
      if (result) (pending ??= []).push(result);
    }
    if (ready > 0 && this.owed > 0) {
      this.owed = Math.max(0, this.owed - ready);
      // The next owed answer gets a full queryTimeoutMs of its own.
      this.stopQueryTimer();
      this.startQueryTimer();
      if (this.owed === 0) for (const resolve of this.settled.splice(0)) resolve();
    }
    return pending ? Promise.all(pending).then(() => undefined) : undefined;
  }

  /** Answers of our own now due (nothing from the server is owed before them). */
  private drainOwn(): void {
    while (this.expected.length > 0 && this.expected[0]!.action === "own") this.own(this.expected.shift()!.own!());
  }

  // ── server messages ───────────────────────────────────────────────────────

  private makeReceiver(): Receiver {
    // Methods, not arrow properties: the Worker bundle (esbuild keepNames) names each arrow with a defineProperty call, per attach.
    const session = this;
    const receiver: Receiver = {
      message(type, frame) {
        if (session.receiver === receiver) session.serverMessage(type, frame);
      },
      flush() {
        if (session.receiver !== receiver) return undefined;
        if (session.lease) session.deps.pool.touch(session.lease);
        session.markInflight();
        const pending = session.deliver();
        session.release();
        if (session.receiver === receiver) return pending;
        // Released: the connection's next reads are its next borrower's, who must not wait until this client takes its bytes.
        pending?.catch(() => {});
        return undefined;
      },
      closed(cause) {
        if (session.receiver !== receiver) return;
        session.lost(cause);
      },
    };
    return receiver;
  }

  /** One server message: the one switch over the backend message types that matter to pooling. */
  private serverMessage(type: number, frame: Uint8Array): void {
    let send = true;
    switch (type) {
      case Type.ParseComplete: send = this.pop(ANSWERED_BY.ParseComplete); break;
      case Type.BindComplete: send = this.pop(ANSWERED_BY.BindComplete); break;
      case Type.CloseComplete: send = this.pop(ANSWERED_BY.CloseComplete); break;
      case Type.RowDescription:
      case Type.NoData: send = this.pop(ANSWERED_BY.Describe); break;
      case Type.CommandComplete: this.CommandComplete(frame); break;
      case Type.EmptyQueryResponse:
      case Type.PortalSuspended: send = this.pop(ANSWERED_BY.Execute); break;
      case Type.ErrorResponse: frame = this.ErrorResponse(frame); break;
      case Type.CopyInResponse:
      case Type.CopyBothResponse: this.copying = true; break;
      case Type.ReadyForQuery: this.ReadyForQuery(frame); break;
    }
    if (send) this.forwardToClient(frame);
    this.drainOwn();
  }

  /** Pops the head expectation if `types` answers it; whether the message goes to the client. */
  private pop(types: readonly number[]): boolean {
    const head = this.expected[0];
    if (!head || !types.includes(head.type)) return true;
    this.expected.shift();
    return head.action !== "swallow";
  }

  private CommandComplete(frame: Uint8Array): void {
    this.endCopy();
    this.pop(ANSWERED_BY.Execute);
    // The server's own word that session state changed, whatever comments hid it from CHANGES_SESSION.
    if (!this.dirty && changesSession(frame)) this.dirty = true;
    // Only DEALLOCATE ALL and DISCARD ALL matter here: a tag not starting with D is not decoded.
    if (this.server && frame.length <= 20 && frame[5] === 0x44) {
      const tag = parseCommandComplete(frame);
      if (tag === "DEALLOCATE ALL" || tag === "DISCARD ALL") this.server.clear();
    }
  }

  /** Returns the ErrorResponse the client gets: the server's, or `QUERY_TIMEOUT` for the 57014 of our own cancel. */
  private ErrorResponse(frame: Uint8Array): Uint8Array {
    this.endCopy();
    this.failed = true;
    this.dirty = true;
    if (!this.timedOut || parseFields(frame).get("C") !== "57014") return frame;
    this.timedOut = false;
    const { tenant } = this.deps;
    return toErrorResponse(new PoolError("QUERY_TIMEOUT", tenant, `tenant "${tenant}" query was cancelled on the server after ${this.deps.queryTimeoutMs}ms (queryTimeoutMs)`)).bytes;
  }

  // ── query timeout ─────────────────────────────────────────────────────────

  /** Starts the `queryTimeoutMs` timer if an answer is owed and none runs. */
  private startQueryTimer(): void {
    const timeoutMs = this.deps.queryTimeoutMs ?? 0;
    if (timeoutMs <= 0 || this.owed === 0 || this.queryTimer !== undefined || this.closed) return;
    this.queryTimer = this.deps.clock.setTimer(() => {
      this.queryTimer = undefined;
      this.timeOut(timeoutMs);
    }, timeoutMs);
  }

  /**
   * The owed answer is `queryTimeoutMs` late: the running query is cancelled.
   * A server still silent `graceMs` later is taken as gone (PgBouncer closes
   * the server connection at `query_timeout`): the connection is closed and
   * the session ends with `LEASE_LOST`. Any ReadyForQuery stops the wait.
   */
  timeOut(graceMs: number): void {
    const backend = this.backend;
    if (!backend || this.closed) return;
    this.stopQueryTimer();
    this.timedOut = true;
    void this.cancel().catch(() => {});
    this.queryTimer = this.deps.clock.setTimer(() => {
      this.queryTimer = undefined;
      if (this.backend === backend) this.deps.pool.markBroken(backend);
    }, graceMs);
  }

  private stopQueryTimer(): void {
    if (this.queryTimer !== undefined) this.deps.clock.clearTimer(this.queryTimer);
    this.queryTimer = undefined;
    this.timedOut = false;
  }

  /**
   * The COPY ended: Syncs the client pipelined behind the statement that
   * started it reached the server in copy mode, which ignores them; they
   * will get no ReadyForQuery (PgBouncer clears them the same way).
   */
  private endCopy(): void {
    if (!this.copying) return;
    this.copying = false;
    for (let i = 1; i < this.expected.length; i++) {
      const type = this.expected[i]!.type;
      if (type === Type.CopyDone || type === Type.CopyFail) {
        this.expected.splice(i, 1);
        break;
      }
      if (type === Type.Sync) {
        this.expected.splice(i--, 1);
        if (this.owed > 0) this.owed--;
      }
    }
  }

  private ReadyForQuery(frame: Uint8Array): void {
    this.status = String.fromCharCode(frame[5]!) as "I" | "T" | "E";
    const head = this.expected[0];
    if (head && ANSWERED_BY.ReadyForQuery.includes(head.type as never)) this.expected.shift();
    else if (this.failed) {
      // The server skipped to the Sync after an error: what it skipped is never answered.
      while (this.expected.length > 0) {
        const skipped = this.expected.shift()!;
        if (skipped.statement) this.server?.delete(skipped.statement);
        if (skipped.type === Type.Sync) break;
      }
    }
    this.failed = false;
    this.readyInPieces++;
  }

  /** Forwards a server message, merging it with the previous one when they are adjacent in one read. */
  private forwardToClient(frame: Uint8Array): void {
    const last = this.pieces[this.pieces.length - 1];
    if (last && last.buffer === frame.buffer && last.byteOffset + last.length === frame.byteOffset) {
      this.pieces[this.pieces.length - 1] = new Uint8Array(frame.buffer, last.byteOffset, last.length + frame.length);
    } else this.pieces.push(frame);
  }

  // ── errors ────────────────────────────────────────────────────────────────

  /** A non-fatal pool error for the current batch: ErrorResponse, then skip to the Sync (FATAL codes close instead). */
  private refuse(error: PoolError): void {
    const response = toErrorResponse(error);
    if (response.fatal) {
      void this.fatal(error);
      return;
    }
    this.answer(() => response.bytes);
    this.skipping = true;
  }

  /** ErrorResponse (FATAL), then the session ends and the client transport closes. */
  private fatal(error: PoolError, forceFatal = false): Promise<void> | undefined {
    if (this.closed) return undefined;
    const { bytes } = toErrorResponse(error, forceFatal ? { fatal: true } : {});
    this.endedBy = error;
    this.pieces.push(bytes);
    const pending = this.deliver();
    this.end();
    this.deps.close();
    return pending;
  }

  private badRequest(detail: string): PoolError {
    return new PoolError("BAD_REQUEST", this.deps.tenant, detail);
  }
}
