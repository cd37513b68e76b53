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
