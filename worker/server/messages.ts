/**
 * The protocol messages only a server connection writes (authentication,
 * cancel, terminate) and the few backend messages it reads itself (startup,
 * its own queries, errors). Framing primitives and the messages a wire
 * session shares (StartupMessage, Query, ErrorResponse fields) come from
 * worker/wire/messages.ts. Frames are whole messages: type byte, Int32
 * length, body.
 */
import { CANCEL_REQUEST, parseFields, readInt32 } from "../wire/messages.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** CancelRequest with a backend's pid and secret key. */
export function CancelRequest(pid: number, secretKey: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + secretKey.length);
  const view = new DataView(out.buffer);
  view.setInt32(0, out.length);
  view.setInt32(4, CANCEL_REQUEST);
  view.setInt32(8, pid);
  out.set(secretKey, 12);
  return out;
}

function typed(type: string, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + body.length);
  out[0] = type.charCodeAt(0);
  new DataView(out.buffer).setInt32(1, 4 + body.length);
  out.set(body, 5);
  return out;
}

/** PasswordMessage: a cleartext or md5 password, NUL-terminated. */
export function PasswordMessage(password: string): Uint8Array {
  return typed("p", encoder.encode(`${password}\0`));
}

/** SASLInitialResponse: the chosen mechanism and the client-first message. */
export function SASLInitialResponse(mechanism: string, data: string): Uint8Array {
  const mech = encoder.encode(`${mechanism}\0`);
  const payload = encoder.encode(data);
  const body = new Uint8Array(mech.length + 4 + payload.length);
  body.set(mech);
  new DataView(body.buffer).setInt32(mech.length, payload.length);
  body.set(payload, mech.length + 4);
  return typed("p", body);
}

/** SASLResponse: the client-final message. */
export function SASLResponse(data: string): Uint8Array {
  return typed("p", encoder.encode(data));
}

/** CopyFail: refuses a COPY FROM STDIN the pool's own statements never feed. */
export function CopyFail(message: string): Uint8Array {
  return typed("f", encoder.encode(`${message}\0`));
}

/** Terminate. */
export function Terminate(): Uint8Array {
  return typed("X", new Uint8Array(0));
}

/** Backend message type bytes the server connection looks at. */
export const BackendType = {
  Authentication: 0x52, // R
  BackendKeyData: 0x4b, // K
  ParameterStatus: 0x53, // S
  ReadyForQuery: 0x5a, // Z
  ErrorResponse: 0x45, // E
  NoticeResponse: 0x4e, // N
  NotificationResponse: 0x41, // A
  RowDescription: 0x54, // T
  DataRow: 0x44, // D
  CommandComplete: 0x43, // C
  EmptyQueryResponse: 0x49, // I
  CopyInResponse: 0x47, // G
} as const;

/** ParameterStatus: `[name, value]`. */
export function ParameterStatus(frame: Uint8Array): [string, string] {
  const [name, value] = decoder.decode(frame.subarray(5, frame.length - 1)).split("\0");
  return [name!, value ?? ""];
}

/** DataRow in text format: one string per column, `null` for SQL NULL. */
export function DataRow(frame: Uint8Array): (string | null)[] {
  const count = (frame[5]! << 8) | frame[6]!;
  const values: (string | null)[] = new Array(count);
  let at = 7;
  for (let i = 0; i < count; i++) {
    const length = readInt32(frame, at);
    at += 4;
    if (length < 0) {
      values[i] = null;
    } else {
      values[i] = decoder.decode(frame.subarray(at, at + length));
      at += length;
    }
  }
  return values;
}

/** An ErrorResponse from the server, with Postgres' own fields. */
export class ServerError extends Error {
  override readonly name = "ServerError";
  /** SQLSTATE. */
  readonly code: string;
  /** Non-localized severity: `ERROR`, `FATAL`, `PANIC`. */
  readonly severity: string;
  readonly detail: string | undefined;
  readonly hint: string | undefined;

  constructor(fields: Map<string, string>, message = fields.get("M") ?? "unknown server error") {
    super(message);
    this.code = fields.get("C") ?? "XX000";
    this.severity = fields.get("V") ?? fields.get("S") ?? "ERROR";
    this.detail = fields.get("D");
    this.hint = fields.get("H");
  }

  /** From an ErrorResponse frame. */
  static from(frame: Uint8Array): ServerError {
    return new ServerError(parseFields(frame));
  }
}

/** Bytes as text (authentication payloads). */
export function text(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}
