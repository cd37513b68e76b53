/**
 * Opening a server connection: TCP, TLS as `sslmode` asks, StartupMessage,
 * authentication (trust, cleartext, md5, SCRAM-SHA-256), then the server's
 * parameters and cancel key up to the first ReadyForQuery.
 */
import { createHash } from "node:crypto";
import type { ServerConfig } from "./config.ts";
import {
  BackendType, ParameterStatus, PasswordMessage, SASLInitialResponse, SASLResponse, ServerError, text,
} from "./messages.ts";
import { ScramSha256 } from "./scram.ts";
import { parseFields, readInt32, SSL_REQUEST, startupMessage, startupRequest } from "../wire/messages.ts";
import type { ByteSocket, Connector } from "./socket.ts";

/** An open socket, TLS or not, with its stream reader and writer taken. */
export interface OpenSocket {
  socket: ByteSocket;
  reader: ReadableStreamDefaultReader<Uint8Array>;
  writer: WritableStreamDefaultWriter<Uint8Array>;
  /** Whether the socket runs TLS. */
  tls: boolean;
}

/** A logged-in server connection, ready for queries. */
export interface Startup extends OpenSocket {
  pid: number;
  /** BackendKeyData's secret key (4 bytes under protocol 3.0). */
  secretKey: Uint8Array;
  parameters: Map<string, string>;
  transactionStatus: "I" | "T" | "E";
  /** Bytes read past the first ReadyForQuery: the read loop starts with them. */
  rest: Uint8Array;
}

/** What to send besides user and database. */
export interface StartupOptions {
  /** More run-time parameters (`application_name`, `idle_in_transaction_session_timeout`, ...). */
  parameters?: Record<string, string>;
  /** Aborts the attempt: the socket is closed at once. */
  signal?: AbortSignal;
}

/** Why startup failed; `code` is the server's SQLSTATE when the server said no. */
export class StartupError extends Error {
  override readonly name = "StartupError";
  readonly code: string | undefined;

  constructor(message: string, code?: string) {
    super(message);
    this.code = code;
  }
}

const S = 0x53;
const N = 0x4e;

/** Opens a socket and, unless `sslmode=disable`, negotiates TLS (also used to send a CancelRequest). */
export async function openSocket(connector: Connector, config: ServerConfig, signal?: AbortSignal): Promise<OpenSocket> {
  const wantsTls = config.sslmode !== "disable";
  let socket = connector({ hostname: config.host, port: config.port }, { secureTransport: wantsTls ? "starttls" : "off", allowHalfOpen: false });
  // Whoever reads the streams sees the failure; an unobserved rejection here would only be noise.
  socket.closed.catch(() => {});
  const abort = () => void socket.close().catch(() => {});
  signal?.addEventListener("abort", abort, { once: true });
  try {
    await socket.opened.catch((error) => {
      throw new StartupError(reason(error));
    });
    let writer = socket.writable.getWriter();
    let reader = socket.readable.getReader();
    if (!wantsTls) return { socket, reader, writer, tls: false };
    await writer.write(startupRequest(SSL_REQUEST));
    const answer = await readSome(reader);
    if (answer === undefined) throw new StartupError("the server closed the connection in answer to SSLRequest");
    // More than the one byte would be plaintext injected ahead of the TLS handshake (CVE-2021-23222).
    if (answer.length > 1) throw new StartupError("the server sent more than its answer to SSLRequest");
    if (answer[0] === N) {
      if (config.sslmode === "prefer") return { socket, reader, writer, tls: false };
      throw new StartupError(`the server does not support TLS (sslmode=${config.sslmode})`);
    }
    if (answer[0] !== S) throw new StartupError(`the server answered SSLRequest with ${answer[0]} instead of S or N`);
    writer.releaseLock();
    reader.releaseLock();
    socket = socket.startTls({ expectedServerHostname: config.host });
    socket.closed.catch(() => {});
    await socket.opened.catch((error) => {
      throw new StartupError(tlsFailure(error, config));
    });
    writer = socket.writable.getWriter();
    reader = socket.readable.getReader();
    return { socket, reader, writer, tls: true };
  } catch (error) {
    abort();
    throw signal?.aborted ? new StartupError("the connection attempt was aborted") : error;
  } finally {
    signal?.removeEventListener("abort", abort);
  }
}

/** Opens a socket, logs in and reads the server's parameters up to the first ReadyForQuery. */
export async function startup(connector: Connector, config: ServerConfig, options: StartupOptions = {}): Promise<Startup> {
  const { signal } = options;
  const open = await openSocket(connector, config, signal);
  const abort = () => void open.socket.close().catch(() => {});
  signal?.addEventListener("abort", abort, { once: true });
  const messages = new MessageReader(open.reader);
  try {
    return await login(open, messages, config, options.parameters ?? {});
  } catch (error) {
    abort();
    if (signal?.aborted) throw new StartupError("the connection attempt was aborted");
    // Over TLS, a failure before the server's first byte is the handshake's: a socket may report it only on first use.
    if (open.tls && !messages.received) throw new StartupError(tlsFailure(error, config));
    if (error instanceof StartupError) throw error;
    throw new StartupError(reason(error));
  } finally {
    signal?.removeEventListener("abort", abort);
  }
}

async function login(open: OpenSocket, messages: MessageReader, config: ServerConfig, extra: Record<string, string>): Promise<Startup> {
  const { writer } = open;
  await writer.write(startupMessage({ ...extra, user: config.user, database: config.database }));
  const parameters = new Map<string, string>();
  let pid = 0;
  let secretKey = new Uint8Array(0);
  let scram: ScramSha256 | undefined;
  let scramVerified = false;
  for (;;) {
    const { type, frame } = await messages.next();
    switch (type) {
      case BackendType.Authentication: {
        const request = readInt32(frame, 5);
        if (request === 0) {
          // AuthenticationOk without the server's SCRAM proof would let a fake server skip it.
          if (scram && !scramVerified) throw new StartupError("the server ended SCRAM authentication without its proof");
          break;
        }
        if (request === 3) {
          await writer.write(PasswordMessage(password(config)));
        } else if (request === 5) {
          await writer.write(PasswordMessage(md5Password(config.user, password(config), frame.subarray(9, 13))));
        } else if (request === 10) {
          const mechanisms = text(frame.subarray(9)).split("\0").filter(Boolean);
          if (!mechanisms.includes(ScramSha256.mechanism)) {
            throw new StartupError(`the server offers SASL mechanisms ${mechanisms.join(", ")}; only ${ScramSha256.mechanism} is supported`);
          }
          scram = new ScramSha256(password(config));
          await writer.write(SASLInitialResponse(ScramSha256.mechanism, scram.clientFirstMessage));
        } else if (request === 11 && scram) {
          await writer.write(SASLResponse(await scram.clientFinalMessage(text(frame.subarray(9)))));
        } else if (request === 12 && scram) {
          scram.verifyServerFinal(text(frame.subarray(9)));
          scramVerified = true;
        } else {
          throw new StartupError(`the server asks for an unsupported authentication method (AuthenticationRequest ${request})`);
        }
        break;
      }
      case BackendType.ParameterStatus: {
        const [name, value] = ParameterStatus(frame);
        parameters.set(name, value);
        break;
      }
      case BackendType.BackendKeyData:
        pid = readInt32(frame, 5);
        secretKey = frame.slice(9);
        break;
      case BackendType.ErrorResponse: {
        const fields = parseFields(frame);
        throw new StartupError(`${fields.get("M") ?? "the server refused the connection"} (SQLSTATE ${fields.get("C") ?? "?"})`, fields.get("C"));
      }
      case BackendType.ReadyForQuery:
        return { ...open, pid, secretKey, parameters, transactionStatus: String.fromCharCode(frame[5]!) as "I" | "T" | "E", rest: messages.rest() };
      default:
        // NoticeResponse, NegotiateProtocolVersion: nothing to act on.
        break;
    }
  }
}

function password(config: ServerConfig): string {
  if (!config.password) throw new StartupError(`the server asks for a password and the connection string has none (user "${config.user}")`);
  return config.password;
}

/** `md5` + md5(md5(password + user) + salt), as PasswordMessage sends it. */
function md5Password(user: string, password: string, salt: Uint8Array): string {
  const inner = createHash("md5").update(password + user).digest("hex");
  return "md5" + createHash("md5").update(Buffer.concat([Buffer.from(inner), salt])).digest("hex");
}

/** The first non-empty chunk, or undefined at the end of the stream. */
async function readSome(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<Uint8Array | undefined> {
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return undefined;
    if (value.length > 0) return value;
  }
}

/**
 * Why the TLS handshake failed. workerd hands JavaScript only "internal error; reference = <id>"
 * and logs the cause under that id (an unknown CA: "invalid peer certificate: UnknownIssuer"):
 * name what it most often is, since the user never sees workerd's log.
 */
function tlsFailure(error: unknown, config: ServerConfig): string {
  const cause = reason(error);
  if (!/^internal error\b/.test(cause)) return `TLS handshake failed: ${cause}`;
  return `TLS handshake failed: the server's certificate was not accepted (not signed by a CA the runtime trusts, or not valid for host "${config.host}"; workerd logs the cause under its ${cause})`;
}

/** A socket error's own words (the TLS failure text, `ECONNREFUSED`, ...). */
function reason(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

/** Whole backend messages from a stream, for startup only: it copies, the read loop does not. */
class MessageReader {
  private buffer = new Uint8Array(0);
  /** Whether any byte came back (over TLS: the handshake succeeded). */
  received = false;

  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;

  constructor(reader: ReadableStreamDefaultReader<Uint8Array>) {
    this.reader = reader;
  }

  async next(): Promise<{ type: number; frame: Uint8Array }> {
    for (;;) {
      if (this.buffer.length >= 5) {
        const size = 1 + readInt32(this.buffer, 1);
        if (size < 5) throw new StartupError(`the server sent a malformed message (type ${this.buffer[0]}, length ${size - 1})`);
        if (this.buffer.length >= size) {
          const frame = this.buffer.subarray(0, size);
          this.buffer = this.buffer.subarray(size);
          return { type: frame[0]!, frame };
        }
      }
      const chunk = await this.reader.read();
      if (chunk.done) throw new StartupError("the server closed the connection during startup");
      this.received = true;
      const joined = new Uint8Array(this.buffer.length + chunk.value.length);
      joined.set(this.buffer);
      joined.set(chunk.value, this.buffer.length);
      this.buffer = joined;
    }
  }

  /** What was read beyond the last message returned. */
  rest(): Uint8Array {
    return this.buffer;
  }
}
