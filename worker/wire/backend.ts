/**
 * What a wire session needs from a server connection (worker/server/connection.ts
 * implements it; tests use a fake). The session never touches a socket.
 */
export interface Backend {
  /** The server's backend pid (pg_backend_pid()). */
  readonly pid: number;
  /** ParameterStatus values the server sent at startup, updated as it sends more. */
  readonly parameters: ReadonlyMap<string, string>;
  /** The last ReadyForQuery status: `I` idle, `T` in a transaction, `E` in a failed one. */
  readonly transactionStatus: "I" | "T" | "E";
  /** Incremented whenever every prepared statement on the server may have been dropped; caches from an older epoch are void. */
  readonly statementEpoch: number;
  /** Sends whole frontend messages, in order. Resolves when the socket took them (backpressure). */
  write(bytes: Uint8Array): Promise<void>;
  /**
   * Who gets the server's messages from now on (one receiver at a time;
   * `undefined`: none attached — a message then is a protocol error and
   * breaks the connection).
   */
  receive(receiver: Receiver | undefined): void;
  /** Sends a CancelRequest with this backend's own key over a new connection. */
  cancel(): Promise<void>;
}

/** Gets a server connection's messages, one whole message at a time. */
export interface Receiver {
  /**
   * One backend message: `frame` is a view (type byte, length, body) of the
   * bytes read; never mutated or reused, so it may be forwarded as is.
   */
  message(type: number, frame: Uint8Array): void;
  /** Every message of one read was delivered; a returned promise holds the next read (backpressure). */
  flush(): void | Promise<void>;
  /** The connection closed or failed; no message follows. */
  closed(cause: Error): void;
}

/** Batches up to this size go to the server as one write (copied together); larger ones piece by piece. */
export const ONE_WRITE_MAX_BYTES = 64 * 1024;

/**
 * Writes a batch's pieces in order. A small batch goes as one write: a
 * rewritten Bind and the Execute/Sync behind it would otherwise leave as
 * separate writes, each a syscall, a TCP segment and a wake-up of the server.
 */
export function writeBatch(backend: Backend, pieces: Uint8Array[]): Promise<void> {
  if (pieces.length === 1) return backend.write(pieces[0]!);
  const size = pieces.reduce((n, piece) => n + piece.length, 0);
  if (size > ONE_WRITE_MAX_BYTES) return Promise.all(pieces.map((bytes) => backend.write(bytes))).then(() => undefined);
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const piece of pieces) {
    bytes.set(piece, at);
    at += piece.length;
  }
  return backend.write(bytes);
}
