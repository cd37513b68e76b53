/**
 * Postgres protocol 3.0 framing: the client frame reader, parsers for the
 * frontend messages the coordinator inspects, and builders for the messages
 * it writes itself. Everything else is forwarded as the bytes it came in.
 */

/** Protocol 3.0 as a StartupMessage carries it. */
export const PROTOCOL_3_0 = 196608;
/** Startup-phase request codes (sent where a protocol version would be). */
export const SSL_REQUEST = 80877103;
export const GSSENC_REQUEST = 80877104;
export const CANCEL_REQUEST = 80877102;

/** The `type` a startup-phase frame gets from the reader (it has no type byte). */
export const STARTUP = 0;

/** Type bytes, as char codes. */
export const Type = {
  // frontend
  Bind: 0x42, // B
  Close: 0x43, // C (frontend) / CommandComplete (backend)
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyFail: 0x66, // f
  Describe: 0x44, // D (frontend) / DataRow (backend)
  Execute: 0x45, // E (frontend) / ErrorResponse (backend)
  Flush: 0x48, // H (frontend) / CopyOutResponse (backend)
  FunctionCall: 0x46, // F
  Parse: 0x50, // P
  Query: 0x51, // Q
  Sync: 0x53, // S (frontend) / ParameterStatus (backend)
  Terminate: 0x58, // X
  // backend
  Authentication: 0x52, // R
  BackendKeyData: 0x4b, // K
  BindComplete: 0x32, // 2
  CloseComplete: 0x33, // 3
  CommandComplete: 0x43, // C
  CopyInResponse: 0x47, // G
  CopyOutResponse: 0x48, // H
  CopyBothResponse: 0x57, // W
  DataRow: 0x44, // D
  EmptyQueryResponse: 0x49, // I
  ErrorResponse: 0x45, // E
  FunctionCallResponse: 0x56, // V
  NegotiateProtocolVersion: 0x76, // v
  NoData: 0x6e, // n
  NoticeResponse: 0x4e, // N
  NotificationResponse: 0x41, // A
  ParameterDescription: 0x74, // t
  ParameterStatus: 0x53, // S
  ParseComplete: 0x31, // 1
  PortalSuspended: 0x73, // s
  ReadyForQuery: 0x5a, // Z
  RowDescription: 0x54, // T
} as const;

/** The longest startup-phase message accepted (Postgres' own limit). */
const MAX_STARTUP_LENGTH = 10_000;
/** The longest typed message accepted: Postgres takes up to 1 GB, but a coordinator has 128 MB for every session it serves. */
export const MAX_MESSAGE_LENGTH = 64 * 1024 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A frame the client sent: `frame` is the whole message (type byte, if any, length and body). */
export interface Frame {
  /** The type byte, or `STARTUP` for a startup-phase message (its code is at bytes 4..8). */
  type: number;
  frame: Uint8Array;
}

/** The client sent bytes that are no protocol 3.0 framing. */
export class ProtocolViolation extends Error {}

/**
 * Frames client bytes in any chunking (one byte at a time too). Whole
 * messages inside one chunk are returned as views of it; only a message that
 * spans chunks is copied, once, into a buffer of its own size — allocated
 * when its last byte came, so memory follows what the client sent, not the
 * length it declared.
 */
export class FrameReader {
  /** Until a StartupMessage (or CancelRequest) was read, messages have no type byte. */
  private startup: boolean;
  /** Header bytes of a message whose length is not known yet. */
  private readonly head = new Uint8Array(8);
  private headLength = 0;
  /** The pieces of a message being assembled across chunks, its whole size, and how much of it came. */
  private pieces: Uint8Array[] | undefined;
  private size = 0;
  private filled = 0;

  private readonly maxLength: number;

  /** `maxLength`: the longest typed message taken (a smaller bound where fewer bytes can be legitimate). */
  constructor(startup: boolean, maxLength = MAX_MESSAGE_LENGTH) {
    this.startup = startup;
    this.maxLength = maxLength;
  }

  /** Frames in `chunk`, completing one left from earlier chunks. Throws `ProtocolViolation` on a bad length. */
  read(chunk: Uint8Array): Frame[] {
    const frames: Frame[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (this.pieces) {
        const take = Math.min(this.size - this.filled, chunk.length - at);
        this.pieces.push(chunk.subarray(at, at + take));
        this.filled += take;
        at += take;
        if (this.filled === this.size) this.complete(frames);
        continue;
      }
      const headSize = this.startup ? 4 : 5;
      if (this.headLength === 0 && chunk.length - at >= headSize) {
        const size = this.messageSize(chunk, at);
        if (chunk.length - at >= size) {
          frames.push(this.frame(chunk.subarray(at, at + size)));
          at += size;
          continue;
        }
        this.pieces = [];
        this.size = size;
        this.filled = 0;
        continue;
      }
      // The header itself spans chunks: gather it byte by byte (at most 5 bytes).
      this.head[this.headLength++] = chunk[at++]!;
      if (this.headLength === headSize) {
        this.size = this.messageSize(this.head, 0);
        this.pieces = [this.head.slice(0, headSize)];
        this.filled = headSize;
        this.headLength = 0;
        if (this.size === headSize) this.complete(frames);
      }
    }
    return frames;
  }

  /** Whether a message is partly read (the client stopped mid-message). */
  get pending(): boolean {
    return this.pieces !== undefined || this.headLength > 0;
  }

  /** The message being assembled is whole: one copy of its pieces. */
  private complete(frames: Frame[]): void {
    const message = new Uint8Array(this.size);
    let at = 0;
    for (const piece of this.pieces!) {
      message.set(piece, at);
      at += piece.length;
    }
    this.pieces = undefined;
    frames.push(this.frame(message));
  }

  private messageSize(bytes: Uint8Array, at: number): number {
    const lengthAt = this.startup ? at : at + 1;
    const length = readInt32(bytes, lengthAt);
    const max = this.startup ? MAX_STARTUP_LENGTH : this.maxLength;
    if (length < 4 || length > max || (this.startup && length < 8)) {
      throw new ProtocolViolation(`invalid message length ${length}${this.startup ? " in the startup packet" : ` for message type ${JSON.stringify(String.fromCharCode(bytes[at]!))}`}`);
    }
    return length + (this.startup ? 0 : 1);
  }

  private frame(frame: Uint8Array): Frame {
    if (!this.startup) return { type: frame[0]!, frame };
    const code = readInt32(frame, 4);
    if (code !== SSL_REQUEST && code !== GSSENC_REQUEST) this.startup = false;
    return { type: STARTUP, frame };
  }
}

/** Big-endian signed 32-bit integer. */
export function readInt32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) | 0;
}

function readInt16(bytes: Uint8Array, at: number): number {
  return (bytes[at]! << 8) | bytes[at + 1]!;
}

/** Reads a NUL-terminated string at `at`; returns it and where the next field starts. */
function readCString(bytes: Uint8Array, at: number): [string, number] {
  const end = bytes.indexOf(0, at);
  if (end < 0) throw new ProtocolViolation("a string field is not NUL-terminated");
  return [decodeText(bytes, at, end), end + 1];
}

/** Strings up to this length are decoded in JavaScript when they are ASCII. */
const SHORT_TEXT = 128;

/** UTF-8 `bytes[start, end)` as a string: a short ASCII one (names, tags, most queries) without a call into the runtime's TextDecoder. */
function decodeText(bytes: Uint8Array, start: number, end: number): string {
  if (end - start > SHORT_TEXT) return decoder.decode(bytes.subarray(start, end));
  let text = "";
  for (let i = start; i < end; i++) {
    const byte = bytes[i]!;
    if (byte >= 0x80) return decoder.decode(bytes.subarray(start, end));
    text += String.fromCharCode(byte);
  }
  return text;
}

// ── parsers of frontend messages ────────────────────────────────────────────

/** A startup-phase message: its code (protocol version or request code) and, for a StartupMessage, its parameters. */
export interface Startup {
  code: number;
  parameters: Map<string, string>;
}

/** Parses a startup-phase frame. */
export function parseStartup(frame: Uint8Array): Startup {
  const code = readInt32(frame, 4);
  const parameters = new Map<string, string>();
  if (code === SSL_REQUEST || code === GSSENC_REQUEST || code === CANCEL_REQUEST) return { code, parameters };
  let at = 8;
  while (at < frame.length && frame[at] !== 0) {
    const [name, next] = readCString(frame, at);
    const [value, after] = readCString(frame, next);
    parameters.set(name, value);
    at = after;
  }
  return { code, parameters };
}

/** A CancelRequest's key. */
export function parseCancelRequest(frame: Uint8Array): { pid: number; secret: number } {
  if (frame.length !== 16) throw new ProtocolViolation(`a CancelRequest is 16 bytes, not ${frame.length}`);
  return { pid: readInt32(frame, 8), secret: readInt32(frame, 12) };
}

/** A Parse message. */
export interface ParseMessage {
  name: string;
  query: string;
  /** Parameter type OIDs as sent (0: unspecified). */
  types: number[];
}

/** Parses a Parse ('P') frame. */
export function parseParse(frame: Uint8Array): ParseMessage {
  const [name, at] = readCString(frame, 5);
  const [query, after] = readCString(frame, at);
  const count = readInt16(frame, after);
  if (after + 2 + 4 * count > frame.length) throw new ProtocolViolation(`a Parse names ${count} parameter types but carries ${Math.max(0, frame.length - after - 2)} bytes of them`);
  const types: number[] = [];
  for (let i = 0; i < count; i++) types.push(readInt32(frame, after + 2 + 4 * i) >>> 0);
  return { name, query, types };
}

/** Where a Bind's statement name is: `[start, end)` of the name without its NUL. */
export function bindStatementSpan(frame: Uint8Array): { name: string; start: number; end: number } {
  const portalEnd = frame.indexOf(0, 5);
  if (portalEnd < 0) throw new ProtocolViolation("a Bind's portal name is not NUL-terminated");
  const start = portalEnd + 1;
  const [name, next] = readCString(frame, start);
  return { name, start, end: next - 1 };
}

/** A Describe or Close: `S` statement or `P` portal, and its name. */
export function parseTarget(frame: Uint8Array): { kind: "S" | "P"; name: string } {
  const kind = frame[5] === 0x53 ? "S" : "P";
  return { kind, name: readCString(frame, 6)[0] };
}

/** A simple Query's text. */
export function parseQuery(frame: Uint8Array): string {
  return readCString(frame, 5)[0];
}

/** Copies `frame` with the cstring at `[start, end)` replaced by `name` (a string, or its UTF-8 bytes). */
export function replaceName(frame: Uint8Array, start: number, end: number, name: string | Uint8Array): Uint8Array {
  const bytes = typeof name === "string" ? encoder.encode(name) : name;
  const out = new Uint8Array(frame.length - (end - start) + bytes.length);
  out.set(frame.subarray(0, start));
  out.set(bytes, start);
  out.set(frame.subarray(end), start + bytes.length);
  writeInt32(out, 1, out.length - 1);
  return out;
}

// ── builders ────────────────────────────────────────────────────────────────

function writeInt32(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value >>> 24;
  bytes[at + 1] = value >>> 16;
  bytes[at + 2] = value >>> 8;
  bytes[at + 3] = value;
}

/** Builds one message from parts: numbers are Int32, strings are NUL-terminated, bytes go as they are. */
function message(type: number | undefined, parts: readonly (number | string | Uint8Array | { int16: number })[]): Uint8Array {
  const chunks: Uint8Array[] = [];
  let size = 4;
  for (const part of parts) {
    let chunk: Uint8Array;
    if (typeof part === "number") {
      chunk = new Uint8Array(4);
      writeInt32(chunk, 0, part);
    } else if (typeof part === "string") {
      const text = encoder.encode(part);
      chunk = new Uint8Array(text.length + 1);
      chunk.set(text);
    } else if (part instanceof Uint8Array) chunk = part;
    else chunk = new Uint8Array([part.int16 >>> 8, part.int16 & 0xff]);
    chunks.push(chunk);
    size += chunk.length;
  }
  const offset = type === undefined ? 0 : 1;
  const out = new Uint8Array(size + offset);
  if (type !== undefined) out[0] = type;
  writeInt32(out, offset, size);
  let at = offset + 4;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

/** AuthenticationOk. */
export function authenticationOk(): Uint8Array {
  return message(Type.Authentication, [0]);
}

/** ParameterStatus. */
export function parameterStatus(name: string, value: string): Uint8Array {
  return message(Type.ParameterStatus, [name, value]);
}

/** BackendKeyData (protocol 3.0: a 4-byte secret). */
export function backendKeyData(pid: number, secret: number): Uint8Array {
  return message(Type.BackendKeyData, [pid, secret]);
}

const READY_FOR_QUERY = {
  I: new Uint8Array([Type.ReadyForQuery, 0, 0, 0, 5, 0x49]),
  T: new Uint8Array([Type.ReadyForQuery, 0, 0, 0, 5, 0x54]),
  E: new Uint8Array([Type.ReadyForQuery, 0, 0, 0, 5, 0x45]),
} as const;
const PARSE_COMPLETE = new Uint8Array([Type.ParseComplete, 0, 0, 0, 4]);
const CLOSE_COMPLETE = new Uint8Array([Type.CloseComplete, 0, 0, 0, 4]);

/** ReadyForQuery with a transaction status (a copy of a prebuilt one: callers own what they get). */
export function readyForQuery(status: "I" | "T" | "E"): Uint8Array {
  return READY_FOR_QUERY[status].slice();
}

/** NegotiateProtocolVersion: the newest 3.x minor we speak and the `_pq_.` options we did not recognize. */
export function negotiateProtocolVersion(newest: number, unrecognized: readonly string[]): Uint8Array {
  return message(Type.NegotiateProtocolVersion, [newest, unrecognized.length, ...unrecognized]);
}

/** Fields of an ErrorResponse or NoticeResponse the coordinator writes. */
export interface ErrorFields {
  severity: "ERROR" | "FATAL" | "PANIC" | "WARNING" | "NOTICE";
  /** SQLSTATE. */
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

function fieldParts(fields: ErrorFields): string[] {
  const parts = ["S" + fields.severity, "V" + fields.severity, "C" + fields.code, "M" + fields.message];
  if (fields.detail) parts.push("D" + fields.detail);
  if (fields.hint) parts.push("H" + fields.hint);
  return parts;
}

/** ErrorResponse with S, V, C, M (and D, H when given). */
export function errorResponse(fields: ErrorFields): Uint8Array {
  return message(Type.ErrorResponse, [...fieldParts(fields), new Uint8Array([0])]);
}

/** NoticeResponse. */
export function noticeResponse(fields: ErrorFields): Uint8Array {
  return message(Type.NoticeResponse, [...fieldParts(fields), new Uint8Array([0])]);
}

/** ParseComplete. */
export function parseComplete(): Uint8Array {
  return PARSE_COMPLETE.slice();
}

/** CloseComplete. */
export function closeComplete(): Uint8Array {
  return CLOSE_COMPLETE.slice();
}

/** CommandComplete with a command tag. */
export function commandComplete(tag: string): Uint8Array {
  return message(Type.CommandComplete, [tag]);
}

/** A Parse the coordinator sends (a statement under its server-side name). */
export function parse(name: string, query: string, types: readonly number[]): Uint8Array {
  return message(Type.Parse, [name, query, { int16: types.length }, ...types]);
}

/** A Close of a prepared statement ('S') the coordinator sends. */
export function closeStatement(name: string): Uint8Array {
  return message(Type.Close, [new Uint8Array([0x53]), name]);
}

/** A Describe ('S' or 'P') with a new name. */
export function describe(kind: "S" | "P", name: string): Uint8Array {
  return message(Type.Describe, [new Uint8Array([kind.charCodeAt(0)]), name]);
}

/** A StartupMessage (tests and tools). */
export function startupMessage(parameters: Record<string, string>, version = PROTOCOL_3_0): Uint8Array {
  const parts: (string | number | Uint8Array)[] = [version];
  for (const [name, value] of Object.entries(parameters)) parts.push(name, value);
  parts.push(new Uint8Array([0]));
  return message(undefined, parts);
}

/** A startup-phase request with no body (SSLRequest, GSSENCRequest) or a CancelRequest's key. */
export function startupRequest(code: number, key?: { pid: number; secret: number }): Uint8Array {
  return message(undefined, key ? [code, key.pid, key.secret] : [code]);
}

/** A simple Query. */
export function query(text: string): Uint8Array {
  return message(Type.Query, [text]);
}

/** Reads the fields of an ErrorResponse or NoticeResponse frame by their one-letter codes. */
export function parseFields(frame: Uint8Array): Map<string, string> {
  const fields = new Map<string, string>();
  let at = 5;
  while (at < frame.length && frame[at] !== 0) {
    const code = String.fromCharCode(frame[at]!);
    const [value, next] = readCString(frame, at + 1);
    fields.set(code, value);
    at = next;
  }
  return fields;
}

/** A CommandComplete's tag. */
export function parseCommandComplete(frame: Uint8Array): string {
  return readCString(frame, 5)[0];
}
