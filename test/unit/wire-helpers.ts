import { serialize } from "pg-protocol";
import type { Backend, Receiver } from "../../worker/wire/backend.ts";
import { CancelKeys } from "../../worker/wire/cancel.ts";
import { parseFields, readInt32 } from "../../worker/wire/messages.ts";
import { PreparedStatements } from "../../worker/wire/prepared.ts";
import { WireSession, type PoolMode, type WireSessionDeps } from "../../worker/wire/session.ts";
import { WireStats } from "../../worker/wire/stats.ts";
import { Pool, type Driver } from "../../worker/pool/pool.ts";
import { resolveOptions } from "../../worker/pool/options.ts";
import { ManualClock, flush } from "./helpers.ts";

export { serialize };

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Builds one backend message. */
function msg(type: string, ...parts: (string | number | Uint8Array | { int16: number })[]): Uint8Array {
  const chunks: Uint8Array[] = [];
  for (const part of parts) {
    if (typeof part === "string") chunks.push(encoder.encode(part + "\0"));
    else if (typeof part === "number") chunks.push(new Uint8Array([part >>> 24, part >>> 16, part >>> 8, part]));
    else if (part instanceof Uint8Array) chunks.push(part);
    else chunks.push(new Uint8Array([part.int16 >>> 8, part.int16 & 0xff]));
  }
  const size = chunks.reduce((n, c) => n + c.length, 4);
  const out = new Uint8Array(size + 1);
  out[0] = type.charCodeAt(0);
  out.set([size >>> 24, size >>> 16, size >>> 8, size], 1);
  let at = 5;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

function dataRow(values: string[]): Uint8Array {
  const parts: (number | Uint8Array | { int16: number })[] = [{ int16: values.length }];
  for (const v of values) {
    const bytes = encoder.encode(v);
    parts.push(bytes.length, bytes);
  }
  return msg("D", ...parts);
}

const rowDescription = () => msg("T", { int16: 1 }, "c", 0, { int16: 0 }, 25, { int16: -1 }, -1, { int16: 0 });
const error = (code: string, message: string) => msg("E", "SERROR", "VERROR", "C" + code, "M" + message, new Uint8Array([0]));

/**
 * A server connection that speaks enough protocol to answer: Parse, Bind,
 * Describe, Execute, Close, Sync, Flush, Query, COPY, errors on unknown
 * statements (26000) and duplicates (42P05), skipping to Sync after an error,
 * and output buffered until Sync/Flush/Query as Postgres does. Queries are a
 * tiny language: `select 'x'` / `select $1` → one row; `rows N` → N rows;
 * `begin`/`commit`/`rollback`; `fail` → 42000; `copy in` / `copy out`; `sleep` answers only on `resume()`;
 * a Parse of `syntax…` fails (42601).
 */
export class FakeBackend implements Backend {
  readonly parameters = new Map([["server_version", "18.0"], ["client_encoding", "UTF8"], ["DateStyle", "ISO, MDY"], ["integer_datetimes", "on"]]);
  transactionStatus: "I" | "T" | "E" = "I";
  statementEpoch = 0;
  /** Server-side prepared statements (name → query). */
  readonly statements = new Map<string, string>();
  private readonly portals = new Map<string, { query: string; params: string[] }>();
  receiver: Receiver | undefined;
  /** Every frontend message received: its type letter and, for P/B/D/C/Q, the name or text. */
  readonly log: string[] = [];
  /** Messages delivered while nobody was attached (a protocol error in the real thing). */
  orphans = 0;
  cancels = 0;
  closed = false;
  private out: Uint8Array[] = [];
  private skipping = false;
  private copyRows = -1;
  /** Reads waiting for `resume()` (a query that sleeps) or for the receiver's backpressure. */
  private readonly queued: Uint8Array[] = [];
  private paused = false;
  /** When true, output is queued until `resume()`. */
  held = false;
  /** When true, a cancel ends a held query with 57014 (default: a cancel is only counted). */
  cancelFails = false;
  /** Reads delivered while a flush's promise was pending (must stay 0). */
  readsDuringBackpressure = 0;
  private backpressure = false;

  constructor(readonly pid: number) {}

  async write(bytes: Uint8Array): Promise<void> {
    if (this.closed) throw new Error("write after close");
    let at = 0;
    while (at < bytes.length) {
      const type = String.fromCharCode(bytes[at]!);
      const length = readInt32(bytes, at + 1);
      this.handle(type, bytes.subarray(at, at + 1 + length));
      at += 1 + length;
    }
  }

  receive(receiver: Receiver | undefined): void {
    this.receiver = receiver;
  }

  async cancel(): Promise<void> {
    this.cancels++;
    if (!this.cancelFails || !this.held) return;
    // As Postgres ends a cancelled query: 57014 instead of its result, then ReadyForQuery.
    this.queued.length = 0;
    this.held = false;
    this.out.push(error("57014", "canceling statement due to user request"));
    this.ready();
  }

  /** Sends a NotificationResponse now. */
  notify(channel: string, payload: string): void {
    this.read([msg("A", this.pid, channel, payload)]);
  }

  /** The server closes the connection. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.receiver?.closed(new Error("server closed the connection"));
  }

  /** Lets held output go. */
  resume(): void {
    this.held = false;
    this.pump();
  }

  private handle(type: string, frame: Uint8Array): void {
    const body = frame.subarray(5);
    const cstr = (at: number): [string, number] => {
      const end = body.indexOf(0, at);
      return [decoder.decode(body.subarray(at, end)), end + 1];
    };
    if (this.copyRows >= 0) {
      if (type === "d") return void this.copyRows++;
      if (type === "c") {
        this.out.push(msg("C", `COPY ${this.copyRows}`));
        this.copyRows = -1;
        if (this.extendedCopy) return;
        return this.ready();
      }
      if (type === "f") {
        this.copyRows = -1;
        this.fail("57014", "COPY from stdin failed");
        if (this.extendedCopy) return;
        return this.ready();
      }
      if (type === "S" || type === "H") return;
    }
    if (type === "P") this.log.push(`P:${cstr(0)[0]}`);
    else if (type === "B") this.log.push(`B:${cstr(cstr(0)[1])[0]}`);
    else if (type === "D" || type === "C") this.log.push(`${type}:${String.fromCharCode(body[0]!)}:${cstr(1)[0]}`);
    else if (type === "Q") this.log.push(`Q:${cstr(0)[0]}`);
    else this.log.push(type);
    if (this.skipping && type !== "S") return;
    switch (type) {
      case "Q": {
        this.run(cstr(0)[0], [], true);
        if (this.copyRows < 0) this.ready();
        return;
      }
      case "P": {
        const [name, next] = cstr(0);
        const [query] = cstr(next);
        if (name !== "" && this.statements.has(name)) return this.fail("42P05", `prepared statement "${name}" already exists`);
        if (/^\s*syntax/i.test(query)) return this.fail("42601", `syntax error in: ${query}`);
        this.statements.set(name, query);
        this.out.push(msg("1"));
        return;
      }
      case "B": {
        const [portal, next] = cstr(0);
        const [statement, after] = cstr(next);
        const query = this.statements.get(statement);
        if (query === undefined) return this.fail("26000", `prepared statement "${statement}" does not exist`);
        let at = after;
        const formats = (body[at]! << 8) | body[at + 1]!;
        at += 2 + 2 * formats;
        const count = (body[at]! << 8) | body[at + 1]!;
        at += 2;
        const params: string[] = [];
        for (let i = 0; i < count; i++) {
          const length = readInt32(body, at);
          at += 4;
          params.push(length < 0 ? "" : decoder.decode(body.subarray(at, at + length)));
          at += Math.max(0, length);
        }
        this.portals.set(portal, { query, params });
        this.out.push(msg("2"));
        return;
      }
      case "D": {
        const kind = String.fromCharCode(body[0]!);
        const [name] = cstr(1);
        const query = kind === "S" ? this.statements.get(name) : this.portals.get(name)?.query;
        if (query === undefined) return this.fail(kind === "S" ? "26000" : "34000", `${kind === "S" ? "prepared statement" : "portal"} "${name}" does not exist`);
        if (kind === "S") this.out.push(msg("t", { int16: 0 }));
        this.out.push(/^\s*(select|rows)/i.test(query) ? rowDescription() : msg("n"));
        return;
      }
      case "E": {
        const [portal] = cstr(0);
        const p = this.portals.get(portal);
        if (!p) return this.fail("34000", `portal "${portal}" does not exist`);
        this.extendedCopy = true;
        this.run(p.query, p.params, false);
        return;
      }
      case "C": {
        const kind = String.fromCharCode(body[0]!);
        const [name] = cstr(1);
        if (kind === "S") this.statements.delete(name);
        else this.portals.delete(name);
        this.out.push(msg("3"));
        return;
      }
      case "S":
        this.skipping = false;
        this.portals.delete("");
        return this.ready();
      case "H":
        return this.deliver();
      case "X":
        return;
      default:
        throw new Error(`fake backend: unexpected message ${type}`);
    }
  }

  private extendedCopy = false;

  private run(query: string, params: string[], simple: boolean): void {
    // Leading comments are no part of the command, as in Postgres (its tag is the command's).
    const q = query.trim().replace(/^(?:\/\*[\s\S]*?\*\/\s*|--[^\n]*\n\s*)+/, "").toLowerCase();
    if (simple) this.extendedCopy = false;
    let m: RegExpExecArray | null;
    if (q === "begin") {
      this.transactionStatus = "T";
      this.out.push(msg("C", "BEGIN"));
    } else if (q === "commit" || q === "rollback") {
      this.transactionStatus = "I";
      this.out.push(msg("C", q.toUpperCase()));
    } else if (q === "fail" || q.startsWith("fail")) {
      this.fail("42000", `failed: ${query}`);
    } else if (q === "sleep") {
      this.held = true;
      this.out.push(msg("C", "SLEEP"));
    } else if ((m = /^select '([^']*)'/.exec(query.trim()))) {
      if (simple) this.out.push(rowDescription());
      this.out.push(dataRow([m[1]!]), msg("C", "SELECT 1"));
    } else if (/^select \$1/.test(q)) {
      this.out.push(dataRow([params[0] ?? ""]), msg("C", "SELECT 1"));
    } else if ((m = /^rows (\d+)/.exec(q))) {
      if (simple) this.out.push(rowDescription());
      const n = Number(m[1]);
      for (let i = 0; i < n; i++) this.out.push(dataRow([`row ${i}`]));
      this.out.push(msg("C", `SELECT ${n}`));
    } else if (q === "copy in") {
      this.copyRows = 0;
      this.out.push(msg("G", new Uint8Array([0]), { int16: 0 }));
      this.deliver();
    } else if (q === "copy out") {
      this.out.push(msg("H", new Uint8Array([0]), { int16: 0 }), msg("d", encoder.encode("a\n")), msg("d", encoder.encode("b\n")), msg("c"), msg("C", "COPY 2"));
    } else if (q === "deallocate all" || q === "discard all") {
      this.statements.clear();
      this.out.push(msg("C", q.toUpperCase()));
    } else if ((m = /^deallocate (\w+)/.exec(q))) {
      this.statements.delete(m[1]!);
      this.out.push(msg("C", "DEALLOCATE"));
    } else {
      this.out.push(msg("C", q.split(/\s+/)[0]!.toUpperCase()));
    }
  }

  private fail(code: string, message: string): void {
    this.out.push(error(code, message));
    if (this.transactionStatus === "T") this.transactionStatus = "E";
    this.skipping = true;
  }

  private ready(): void {
    this.out.push(msg("Z", new Uint8Array([this.transactionStatus.charCodeAt(0)])));
    this.deliver();
  }

  /** Output so far goes out as one read (one buffer). */
  private deliver(): void {
    if (this.out.length === 0) return;
    const size = this.out.reduce((n, m) => n + m.length, 0);
    const read = new Uint8Array(size);
    let at = 0;
    for (const m of this.out) {
      read.set(m, at);
      at += m.length;
    }
    this.out = [];
    this.read([read]);
  }

  private read(reads: Uint8Array[]): void {
    this.queued.push(...reads);
    queueMicrotask(() => this.pump());
  }

  private pump(): void {
    while (this.queued.length > 0 && !this.held && !this.paused && !this.closed) {
      const read = this.queued.shift()!;
      const receiver = this.receiver;
      if (!receiver) {
        this.orphans++;
        continue;
      }
      if (this.backpressure) this.readsDuringBackpressure++;
      let at = 0;
      while (at < read.length) {
        const length = readInt32(read, at + 1);
        receiver.message(read[at]!, read.subarray(at, at + 1 + length));
        at += 1 + length;
      }
      const pending = receiver.flush();
      if (pending) {
        this.paused = true;
        this.backpressure = true;
        pending.then(() => {
          this.paused = false;
          this.backpressure = false;
          this.pump();
        });
      }
    }
  }

  /** What a pool reset does to the server: rollback, and (with `dropsStatements`) DISCARD ALL. */
  reset(dropsStatements: boolean): void {
    this.transactionStatus = "I";
    this.portals.clear();
    if (dropsStatements) {
      this.statements.clear();
      this.statementEpoch++;
    }
  }
}

/** A pool driver handing out fake backends; counts resets by backend pid. */
export class FakeBackendDriver implements Driver<FakeBackend> {
  readonly target = "db.example:5432";
  readonly backends: FakeBackend[] = [];
  readonly resets: number[] = [];
  resetDropsStatements = false;
  private nextPid = 1000;

  async open(): Promise<FakeBackend> {
    const backend = new FakeBackend(this.nextPid++);
    this.backends.push(backend);
    return backend;
  }

  async validate(): Promise<void> {}

  async reset(backend: FakeBackend): Promise<void> {
    this.resets.push(backend.pid);
    backend.reset(this.resetDropsStatements);
  }

  async close(backend: FakeBackend): Promise<void> {
    backend.close();
  }

  isFatal(): boolean {
    return false;
  }
}

/** One coordinator's worth of wire state over a real Pool of fake backends. */
export interface Wire {
  clock: ManualClock;
  driver: FakeBackendDriver;
  pool: Pool<FakeBackend>;
  stats: WireStats;
  prepared: PreparedStatements;
  cancelKeys: CancelKeys;
  client(options?: ClientOptions): TestClient;
}

export interface ClientOptions {
  mode?: PoolMode;
  startup?: boolean;
  acquireTimeoutMs?: number;
  queryTimeoutMs?: number;
  /** The server's ParameterStatus values for the startup answer (default: a fixed set). */
  parameters?: () => Promise<ReadonlyMap<string, string>>;
  /** Makes `send` return a promise the test settles (backpressure). */
  slow?: boolean;
  /** A built-in one-shot session: its self-contained batches may ride a busy backend (pipelining). */
  shared?: boolean;
}

/** A pool on a manual clock with fake backends, and the per-coordinator wire state. */
export function makeWire(options: Record<string, unknown> = {}, wire: { maxPreparedStatements?: number; random?: () => number } = {}): Wire {
  const clock = new ManualClock();
  const driver = new FakeBackendDriver();
  const pool = new Pool<FakeBackend>({ tenant: "acme", options: resolveOptions("acme", options), driver, clock, random: () => 0 });
  const stats = new WireStats();
  const prepared = new PreparedStatements(wire.maxPreparedStatements ?? 200, stats);
  const cancelKeys = new CancelKeys(wire.random ? () => Math.floor(wire.random!() * 2 ** 32) | 0 : undefined);
  const w: Wire = {
    clock, driver, pool, stats, prepared, cancelKeys,
    client: (o = {}) => new TestClient(w, o),
  };
  return w;
}

/** A backend message the client received, decoded enough for assertions. */
export interface Received {
  type: string;
  /** DataRow values, CommandComplete tag, ReadyForQuery status, ErrorResponse message. */
  text: string;
  /** ErrorResponse / NoticeResponse fields. */
  fields?: Map<string, string>;
  bytes: Uint8Array;
}

/** A client session driven by the test: frontend bytes in, backend messages collected. */
export class TestClient {
  readonly session: WireSession<FakeBackend>;
  readonly received: Received[] = [];
  closed = false;
  /** Chunks handed to `send`, as given (checks coalescing). */
  readonly chunks: Uint8Array[] = [];
  private buffer = new Uint8Array(0);
  private startupAnswer: boolean;
  /** With `slow`: resolves the pending sends. */
  readonly pendingSends: (() => void)[] = [];

  constructor(readonly wire: Wire, options: ClientOptions) {
    this.startupAnswer = false;
    const deps: WireSessionDeps<FakeBackend> = {
      tenant: "acme",
      mode: options.mode ?? "transaction",
      pool: wire.pool,
      send: (bytes) => {
        this.chunks.push(bytes);
        this.take(bytes);
        if (options.slow) return new Promise<void>((resolve) => this.pendingSends.push(resolve));
      },
      close: () => {
        this.closed = true;
      },
      clock: wire.clock,
      prepared: wire.prepared,
      stats: wire.stats,
      cancelKeys: wire.cancelKeys,
      parameters: options.parameters ?? (() => new Map([["server_version", "18.0"], ["client_encoding", "UTF8"]])),
      startup: options.startup ?? false,
      acquireTimeoutMs: options.acquireTimeoutMs,
      queryTimeoutMs: options.queryTimeoutMs,
      shared: options.shared,
    };
    this.session = new WireSession(deps);
  }

  /** Sends frontend bytes (whole or chunked) and lets everything settle. */
  async send(...messages: Uint8Array[]): Promise<void> {
    const bytes = concat(messages);
    void this.session.receive(bytes);
    await flush();
  }

  /** Expects the next SSLRequest answer to be a single byte. */
  expectSslAnswer(): void {
    this.startupAnswer = true;
  }

  /** Messages received since the last call. */
  take(bytes: Uint8Array): void {
    let data = concat([this.buffer, bytes]);
    if (this.startupAnswer && data.length > 0) {
      this.received.push({ type: String.fromCharCode(data[0]!), text: "", bytes: data.subarray(0, 1) });
      data = data.subarray(1);
      this.startupAnswer = false;
    }
    let at = 0;
    while (data.length - at >= 5) {
      const length = readInt32(data, at + 1);
      if (data.length - at < 1 + length) break;
      const frame = data.subarray(at, at + 1 + length);
      this.received.push(decode(frame));
      at += 1 + length;
    }
    this.buffer = data.slice(at);
  }

  /** Types of everything received, as a string ("1 2 D C Z"). */
  types(): string {
    return this.received.map((m) => m.type).join(" ");
  }

  /** Clears what was received. */
  clear(): void {
    this.received.length = 0;
    this.chunks.length = 0;
  }
}

function decode(frame: Uint8Array): Received {
  const type = String.fromCharCode(frame[0]!);
  const body = frame.subarray(5);
  switch (type) {
    case "D": {
      const count = (body[0]! << 8) | body[1]!;
      const values: string[] = [];
      let at = 2;
      for (let i = 0; i < count; i++) {
        const length = readInt32(body, at);
        at += 4;
        values.push(decoder.decode(body.subarray(at, at + length)));
        at += length;
      }
      return { type, text: values.join(","), bytes: frame };
    }
    case "C": return { type, text: decoder.decode(body.subarray(0, body.length - 1)), bytes: frame };
    case "Z": return { type, text: String.fromCharCode(body[0]!), bytes: frame };
    case "E":
    case "N": {
      const fields = parseFields(frame);
      return { type, text: fields.get("M") ?? "", fields, bytes: frame };
    }
    default: return { type, text: "", bytes: frame };
  }
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Frontend messages, by pg's own serializer. */
export const fe = {
  query: (text: string) => new Uint8Array(serialize.query(text)),
  parse: (name: string, text: string, types: number[] = []) => new Uint8Array(serialize.parse({ name, text, types })),
  bind: (statement: string, values: string[] = [], portal = "") => new Uint8Array(serialize.bind({ statement, values, portal })),
  describe: (type: "S" | "P", name: string) => new Uint8Array(serialize.describe({ type, name })),
  execute: (portal = "") => new Uint8Array(serialize.execute({ portal })),
  close: (type: "S" | "P", name: string) => new Uint8Array(serialize.close({ type, name })),
  sync: () => new Uint8Array(serialize.sync()),
  flush: () => new Uint8Array(serialize.flush()),
  copyData: (text: string) => new Uint8Array(serialize.copyData(Buffer.from(text))),
  copyDone: () => new Uint8Array(serialize.copyDone()),
  copyFail: (message: string) => new Uint8Array(serialize.copyFail(message)),
  terminate: () => new Uint8Array(serialize.end()),
  startup: (params: Record<string, string>) => new Uint8Array(serialize.startup(params)),
  ssl: () => new Uint8Array(serialize.requestSsl()),
  cancel: (pid: number, secret: number) => new Uint8Array(serialize.cancel(pid, secret)),
};

/** The backend connections currently leased, by pid. */
export function leasedPids(wire: Wire): number[] {
  return wire.driver.backends.filter((b) => b.receiver !== undefined).map((b) => b.pid);
}
