import { PoolError } from "../src/errors.ts";
import type { WireMode } from "../src/protocol.ts";
import { systemClock, within } from "./pool/clock.ts";
import type { TunnelEnds } from "./tunnel.ts";
import { asPoolError, toErrorResponse } from "./wire/errors.ts";
import { CANCEL_REQUEST, FrameReader, GSSENC_REQUEST, ProtocolViolation, readInt32, SSL_REQUEST, STARTUP } from "./wire/messages.ts";

/**
 * The remote tunnel (design §2): one WebSocket per client session, its binary
 * frames carrying the session's protocol bytes both ways. The Durable Object
 * accepts the socket and bridges it to a wire session (`FrontDoor.connect`).
 * No `cloudflare:*` import: the socket comes in as a parameter.
 */

/** What the bridge needs of a server-side WebSocket (workerd's, after `accept()`). */
export interface TunnelSocket {
  send(bytes: Uint8Array): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "message", listener: (event: { data: unknown }) => void): void;
  addEventListener(type: "close" | "error", listener: () => void): void;
  readonly bufferedAmount?: number;
  /** workerd defaults to "blob" from the `websocket_standard_binary_type` date on. */
  binaryType?: string;
}

/** What the bridge opens once the client may start: a wire session over two byte streams. */
export interface ConnectDeps {
  tenant: string;
  mode: WireMode;
  /** Opens the session: it reads `inbound` and sends its answers through `out`, straight to the socket. */
  open(inbound: ReadableStream<Uint8Array>, out: TunnelEnds): void;
  /**
   * Set when the client sent no token on the upgrade: the session asks for a
   * password (AuthenticationCleartextPassword) and this checks it as a client
   * token before the startup reaches the session. Throws `UNAUTHORIZED`.
   */
  checkPassword?: (password: string) => Promise<void>;
  /** How long the client has, with `checkPassword`, to send its password from the upgrade on (default `PASSWORD_WAIT_MS`). */
  passwordWaitMs?: number;
}

/** A client asked for its password (no token on the upgrade) gets this long to send it; then FATAL 28000 and the socket closes. */
export const PASSWORD_WAIT_MS = 10_000;
/** The longest message taken before the password is accepted (a startup is at most 10,000 bytes; a token is short). */
const MAX_GATE_MESSAGE_LENGTH = 16 * 1024;

/** Client bytes the coordinator queues unread per session before it ends the session (a WebSocket cannot be paused). */
export const MAX_INBOUND_QUEUED_BYTES = 32 * 1024 * 1024;
/** What the inbound queue counts per message beyond its bytes (the queue's own entry). */
const QUEUED_MESSAGE_OVERHEAD_BYTES = 64;
/** Bytes waiting in the socket's send buffer before the bridge stops reading the session's answers. */
export const OUTBOUND_HIGH_WATER_BYTES = 1024 * 1024;

/** AuthenticationCleartextPassword. */
const PASSWORD_REQUEST = new Uint8Array([0x52, 0, 0, 0, 8, 0, 0, 0, 3]);
const PASSWORD_MESSAGE = 0x70; // p

/**
 * Bridges an accepted WebSocket to a wire session: messages go to the
 * session's inbound stream, its answers go out with `send`, and a close on
 * either side ends the other (an open transaction is rolled back).
 */
export function bridge(socket: TunnelSocket, deps: ConnectDeps): void {
  socket.binaryType = "arraybuffer";
  let closed = false;
  const close = (code = 1000, reason = "") => {
    if (closed) return;
    closed = true;
    try {
      socket.close(code, reason);
    } catch {}
  };
  const messages = socketStream(socket, deps.tenant, close);
  const send = (bytes: Uint8Array) => {
    if (!closed) socket.send(bytes);
  };
  void (async () => {
    let inbound = messages;
    if (deps.checkPassword) {
      const waitMs = deps.passwordWaitMs ?? PASSWORD_WAIT_MS;
      try {
        inbound = await within(systemClock, passwordGate(messages, send, deps.checkPassword, deps.tenant), waitMs,
          () => new PoolError("UNAUTHORIZED", deps.tenant, `tenant "${deps.tenant}": no password (the client token) within ${waitMs} ms of connecting`));
      } catch (error) {
        const refused = error instanceof ProtocolViolation ? new PoolError("BAD_REQUEST", deps.tenant, error.message) : asPoolError(error, deps.tenant);
        send(toErrorResponse(refused, { fatal: true }).bytes);
        void messages.cancel().catch(() => {});
        return close(1000);
      }
    }
    const out: TunnelEnds = {
      send(bytes) {
        if (closed) return;
        socket.send(bytes);
        if ((socket.bufferedAmount ?? 0) > OUTBOUND_HIGH_WATER_BYTES) return drained(socket, () => closed);
      },
      close() {
        close(1000);
      },
    };
    deps.open(inbound, out);
  })();
}

/** The socket's binary messages as a byte stream; it errors when the socket closes, which ends the session. */
function socketStream(socket: TunnelSocket, tenant: string, close: (code?: number, reason?: string) => void): ReadableStream<Uint8Array> {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let done = false;
  const stream = new ReadableStream<Uint8Array>(
    { start: (c) => void (controller = c), cancel: () => void (done = true) },
    // Each queued message costs its bytes plus its own bookkeeping: a flood of tiny ones counts too.
    { highWaterMark: MAX_INBOUND_QUEUED_BYTES, size: (chunk: Uint8Array) => chunk.byteLength + QUEUED_MESSAGE_OVERHEAD_BYTES },
  );
  const fail = (error: Error) => {
    if (done) return;
    done = true;
    controller.error(error);
  };
  socket.addEventListener("message", ({ data }) => {
    if (done) return;
    if (typeof data === "string") {
      fail(new PoolError("BAD_REQUEST", tenant, "the tunnel carries binary frames only"));
      return close(1003, "binary frames only");
    }
    controller.enqueue(data instanceof Uint8Array ? data : new Uint8Array(data as ArrayBuffer));
    if ((controller.desiredSize ?? 0) < 0) {
      fail(new PoolError("BAD_REQUEST", tenant, `client sent more than ${MAX_INBOUND_QUEUED_BYTES} bytes ahead of the session`));
      close(1011, "client too far ahead");
    }
  });
  // The client is gone: the session ends (rolling back) and the close handshake completes.
  const gone = () => {
    fail(new Error("client closed the tunnel"));
    close(1000);
  };
  socket.addEventListener("close", gone);
  socket.addEventListener("error", gone);
  return stream;
}

/** Waits while the socket's send buffer is above the high-water mark (where the runtime reports it) and the socket is open: a closed socket may keep its count. */
async function drained(socket: TunnelSocket, closed: () => boolean): Promise<void> {
  for (let waitMs = 1; (socket.bufferedAmount ?? 0) > OUTBOUND_HIGH_WATER_BYTES && !closed(); waitMs = Math.min(waitMs * 2, 50)) {
    await new Promise((resolve) => setTimeout(resolve, waitMs));
  }
}

/**
 * The startup exchange for a client whose token is its password: SSLRequest
 * and GSSENCRequest get `N`, a CancelRequest passes as it is (its key is the
 * credential), a StartupMessage is held until the PasswordMessage that
 * answers AuthenticationCleartextPassword carries a valid token. Resolves with
 * the stream the session reads: the startup, then the rest of the client's bytes.
 */
async function passwordGate(
  messages: ReadableStream<Uint8Array>,
  send: (bytes: Uint8Array) => void,
  checkPassword: (password: string) => Promise<void>,
  tenant: string,
): Promise<ReadableStream<Uint8Array>> {
  const reader = messages.getReader();
  const frames = new FrameReader(true, MAX_GATE_MESSAGE_LENGTH);
  const ahead: Uint8Array[] = [];
  let startup: Uint8Array | undefined;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) throw new PoolError("BAD_REQUEST", tenant, "the client closed before its startup");
    const read = frames.read(value);
    for (let i = 0; i < read.length; i++) {
      const { type, frame } = read[i]!;
      if (startup && ahead.length === 0 && type === PASSWORD_MESSAGE) {
        const end = frame.indexOf(0, 5);
        await checkPassword(new TextDecoder().decode(frame.subarray(5, end < 0 ? frame.length : end)));
        ahead.push(startup, ...read.slice(i + 1).map((f) => f.frame));
        if (frames.pending) throw new ProtocolViolation("a message split across the password");
        return prepend(ahead, reader);
      }
      if (startup) throw new PoolError("UNAUTHORIZED", tenant, `tenant "${tenant}": expected a password message (the client token) after the startup`);
      if (type !== STARTUP) throw new ProtocolViolation("a typed message before the startup");
      const code = readInt32(frame, 4);
      if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
        send(new Uint8Array([0x4e]));
      } else if (code === CANCEL_REQUEST) {
        ahead.push(frame, ...read.slice(i + 1).map((f) => f.frame));
        return prepend(ahead, reader);
      } else {
        startup = frame;
        send(PASSWORD_REQUEST);
      }
    }
  }
}

/** `first`, then whatever `reader` still yields. */
function prepend(first: Uint8Array[], reader: ReadableStreamDefaultReader<Uint8Array>): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = first.shift();
      if (next) return controller.enqueue(next);
      const { done, value } = await reader.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel: (reason) => reader.cancel(reason),
  });
}
