import { asPoolError, toErrorResponse } from "./wire/errors.ts";

/**
 * A client session carried by two byte streams (a driver's socket, design §2
 * `connect()`): what arrives on `inbound` goes to the session, what the session
 * sends goes out on the returned stream. When the caller's request ends, workerd
 * errors `inbound` ("disconnected prematurely"), which ends the session: an open
 * transaction is rolled back and the connection returned.
 */

/** The two ends a session talks to. */
export interface TunnelEnds {
  /** Bytes to the client; a returned promise means the client is not reading fast enough. */
  send(bytes: Uint8Array): void | Promise<void>;
  /** Ends the client's side (after a FATAL error or Terminate). */
  close(): void;
}

/** What the tunnel drives: a wire session. */
export interface TunnelSession {
  receive(bytes: Uint8Array): void | Promise<void>;
  end(): void;
}

/**
 * A session refused before it began (unknown tenant, bad name, bad mode): the
 * client learns why as it would from a server, a FATAL ErrorResponse in answer
 * to its startup, and its own bytes are dropped.
 */
export function refuse(inbound: ReadableStream<Uint8Array>, error: unknown, tenant: string): ReadableStream<Uint8Array> {
  void inbound.cancel().catch(() => {});
  const { bytes } = toErrorResponse(asPoolError(error, tenant), { fatal: true });
  return new ReadableStream({
    start(controller) {
      controller.enqueue(bytes);
      controller.close();
    },
  });
}

/** `refuse` for a session that sends straight to `out`: the FATAL ErrorResponse, then the end. */
export function refuseTo(inbound: ReadableStream<Uint8Array>, out: TunnelEnds, error: unknown, tenant: string): void {
  void inbound.cancel().catch(() => {});
  out.send(toErrorResponse(asPoolError(error, tenant), { fatal: true }).bytes);
  out.close();
}

/** Bytes buffered towards a slow reader before the session is told to wait. */
const OUTBOUND_HIGH_WATER_BYTES = 256 * 1024;

/** Pumps `inbound` into the session that `open` makes (telling `received` of each batch of bytes), and returns the session's outbound stream. */
export function tunnel(inbound: ReadableStream<Uint8Array>, open: (ends: TunnelEnds) => TunnelSession, received?: () => void): ReadableStream<Uint8Array> {
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>(
    undefined,
    new ByteLengthQueuingStrategy({ highWaterMark: OUTBOUND_HIGH_WATER_BYTES }),
  );
  const writer = writable.getWriter();
  const reader = inbound.getReader();
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    writer.close().catch(() => {});
    reader.cancel().catch(() => {});
  };
  pump(reader, open({
    send(bytes) {
      if (closed) return;
      // The write settles when the reader takes it; only a full queue makes the session wait.
      writer.write(bytes).catch(close);
      if ((writer.desiredSize ?? 1) <= 0) return writer.ready.catch(close);
    },
    close,
  }), close, received);
  return readable;
}

/**
 * Pumps `inbound` into the session that `open` makes, which sends straight
 * to `out` (a WebSocket bridge: no outbound stream in between). The session
 * ends when `inbound` does; `out.close()` follows.
 */
export function tunnelTo(inbound: ReadableStream<Uint8Array>, out: TunnelEnds, open: (ends: TunnelEnds) => TunnelSession, received?: () => void): void {
  const reader = inbound.getReader();
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    out.close();
    reader.cancel().catch(() => {});
  };
  pump(reader, open({ send: (bytes) => (closed ? undefined : out.send(bytes)), close }), close, received);
}

/** Feeds what `reader` reads to `session` until either side ends. */
function pump(reader: ReadableStreamDefaultReader<Uint8Array>, session: TunnelSession, close: () => void, received?: () => void): void {
  void (async () => {
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        received?.();
        await session.receive(value);
      }
    } catch {
      // The client's side went away (request ended, socket destroyed): same as a clean end.
    } finally {
      session.end();
      close();
    }
  })();
}
