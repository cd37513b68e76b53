// A `Connector` over node:net and node:tls: worker/server runs in Node tests against real Postgres
// as it runs in workerd over cloudflare:sockets.
import { connect as netConnect, isIP, type Socket } from "node:net";
import { checkServerIdentity, connect as tlsConnect } from "node:tls";
import type { ByteSocket, Connector } from "../../worker/server/socket.ts";

/** What the TLS side trusts; workerd always checks chain and host name, Node tests may loosen the latter. */
export interface NodeConnectorOptions {
  /** CA certificates to trust (PEM); Node's default roots when absent. */
  ca?: string | Buffer;
  /** Whether the server certificate must match the host name (default true, as workerd). */
  checkHostname?: boolean;
}

/** `cloudflare:sockets`' `connect()` over node:net / node:tls. */
export function nodeConnector(options: NodeConnectorOptions = {}): Connector {
  const secure = (over: Socket | { port: number }, hostname: string) =>
    tlsConnect({
      ...("port" in over ? { port: over.port } : { socket: over }),
      host: hostname,
      // SNI must not carry an IP address (RFC 6066).
      ...(isIP(hostname) ? {} : { servername: hostname }),
      ca: options.ca,
      rejectUnauthorized: true,
      checkServerIdentity: options.checkHostname === false ? () => undefined : checkServerIdentity,
    });
  return ({ hostname, port }, { secureTransport }) => {
    if (secureTransport === "on") {
      const sock = secure({ port }, hostname);
      return byteSocket(sock, "secureConnect", () => {
        throw new Error("startTls() on a socket opened with secureTransport: on");
      });
    }
    const sock = netConnect({ host: hostname, port });
    sock.setNoDelay(true);
    return byteSocket(sock, "connect", (tlsOptions) => {
      if (secureTransport !== "starttls") throw new Error("startTls() needs secureTransport: starttls");
      return byteSocket(secure(sock, tlsOptions?.expectedServerHostname ?? hostname), "secureConnect", () => {
        throw new Error("startTls() called twice");
      });
    });
  };
}

/** Web streams over a Node socket; reads pause the socket when the stream's queue is full (backpressure). */
function byteSocket(sock: Socket, readyEvent: string, startTls: ByteSocket["startTls"]): ByteSocket {
  const opened = new Promise<unknown>((resolve, reject) => {
    sock.once(readyEvent, () => resolve(undefined));
    sock.once("error", reject);
  });
  let lastError: Error | undefined;
  const closed = new Promise<void>((resolve, reject) => {
    sock.once("close", () => (lastError ? reject(lastError) : resolve()));
  });
  opened.catch(() => {});
  closed.catch(() => {});
  const listeners: [string, (...args: any[]) => void][] = [];
  const on = (event: string, listener: (...args: any[]) => void) => {
    sock.on(event, listener);
    listeners.push([event, listener]);
  };
  const readable = new ReadableStream<Uint8Array>(
    {
      start(controller) {
        on("data", (data: Buffer) => {
          controller.enqueue(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
          if ((controller.desiredSize ?? 0) <= 0) sock.pause();
        });
        const finish = () => {
          try {
            controller.close();
          } catch {}
        };
        on("end", finish);
        on("close", finish);
        on("error", (error: Error) => {
          lastError = error;
          try {
            controller.error(error);
          } catch {}
        });
      },
      pull() {
        sock.resume();
      },
      cancel() {
        sock.destroy();
      },
    },
    { highWaterMark: 2 },
  );
  const writable = new WritableStream<Uint8Array>({
    write: (chunk) => new Promise<void>((resolve, reject) => void sock.write(chunk, (error) => (error ? reject(error) : resolve()))),
    close: () => new Promise<void>((resolve) => void sock.end(resolve)),
    abort: () => void sock.destroy(),
  });
  return {
    readable,
    writable,
    opened,
    closed,
    close() {
      if (!sock.destroyed) sock.destroy();
      return closed.catch(() => {});
    },
    startTls(options) {
      // The plain streams are done: the TLS socket reads the TCP socket from here on.
      sock.pause();
      for (const [event, listener] of listeners) sock.off(event, listener);
      return startTls(options);
    },
  };
}
