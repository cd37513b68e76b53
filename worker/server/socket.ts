/**
 * A TCP socket as `cloudflare:sockets`' `connect()` returns it. Injected into
 * the server connection, so it runs in Node tests (over `node:net`/`node:tls`)
 * as it does in the Durable Object (over `cloudflare:sockets`).
 */
export interface ByteSocket {
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  /** Resolves once connected (rejects when the connection, or its TLS handshake, failed). */
  readonly opened: Promise<unknown>;
  /** Resolves when the socket closed, rejects when it failed. */
  readonly closed: Promise<void>;
  close(): Promise<void>;
  /** Upgrades a socket opened with `secureTransport: "starttls"`; the old one must not be used afterwards. */
  startTls(options?: { expectedServerHostname?: string }): ByteSocket;
}

/** Options of `connect()` that the server connection uses. */
export interface SocketOptions {
  secureTransport: "off" | "on" | "starttls";
  allowHalfOpen: boolean;
}

/** Opens a socket: `cloudflare:sockets`' `connect` in workerd, a `node:net` adapter in tests. */
export type Connector = (address: { hostname: string; port: number }, options: SocketOptions) => ByteSocket;
