import { createServer, type Server, type Socket } from "node:net";
import type { WireMode } from "../src/protocol.ts";
import type { Tunnel } from "../src/socket.ts";
import { isLoopbackHost, openTunnel } from "../src/websocket.ts";

/**
 * `edgepool proxy`: a local TCP port where each client (psql, pgbench, pg_dump,
 * any language's driver) gets its own WebSocket tunnel to the tenant's
 * coordinator. The proxy only forwards bytes: the coordinator answers the
 * startup (SSLRequest with `N`) and, without a token here, asks the client for
 * the token as its password.
 */

/** What the proxy serves. */
export interface ProxyOptions {
  /** The coordinator Worker's URL (https, or http on loopback). */
  url: string;
  tenant: string;
  mode: WireMode;
  /** Client token; absent: each client sends it as its startup password. */
  token?: string;
  host: string;
  port: number;
  /** Where the proxy's own lines go; never given a token. */
  log: (line: string) => void;
}

/** A listening proxy. */
export interface RunningProxy {
  host: string;
  port: number;
  /** Client connections open now. */
  readonly sessions: number;
  /** Stops listening and closes every client and its tunnel. */
  close(): Promise<void>;
}

/** Checks where the proxy may send tokens: https, or plain http to this machine only. */
export function checkCoordinatorUrl(url: string): URL {
  if (!/^https?:\/\//.test(url) || !URL.canParse(url)) throw new Error(`the coordinator URL must be http(s)://host[:port], got ${JSON.stringify(url.slice(0, 80).replace(/\/\/[^/@]*@/, "//***@"))}`);
  const parsed = new URL(url);
  if (parsed.username || parsed.password) throw new Error("the coordinator URL must not carry credentials: the token comes from EDGEPOOL_TOKEN or the client's password");
  if (parsed.protocol !== "https:" && !isLoopbackHost(parsed.hostname)) {
    throw new Error(`the coordinator ${parsed.host} is not on this machine: use https (a token must not travel in clear)`);
  }
  return parsed;
}

/** Starts listening; resolves once the port is bound. */
export async function startProxy(options: ProxyOptions): Promise<RunningProxy> {
  const base = checkCoordinatorUrl(options.url).origin;
  const open = new Set<Socket>();
  const server: Server = createServer({ noDelay: true }, (socket) => {
    open.add(socket);
    socket.on("close", () => open.delete(socket));
    void serve(socket, openTunnel(base, { tenant: options.tenant, mode: options.mode, token: options.token }), options.log);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve());
  });
  server.on("error", (error) => options.log(`edgepool proxy: ${error.message}`));
  const address = server.address() as { address: string; port: number };
  return {
    host: address.address,
    port: address.port,
    get sessions() {
      return open.size;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of open) socket.destroy();
      }),
  };
}

/** Forwards one client's bytes both ways; either side ending ends the other. */
async function serve(socket: Socket, opening: Promise<Tunnel>, log: (line: string) => void): Promise<void> {
  // Nagle would hold back small protocol messages (design §7).
  socket.setNoDelay(true);
  // Bytes the client sends before the tunnel is open wait in the kernel.
  socket.pause();
  let tunnel: Tunnel;
  try {
    tunnel = await opening;
  } catch (error) {
    log(`edgepool proxy: tunnel failed: ${error instanceof Error ? error.message : String(error)}`);
    return void socket.destroy();
  }
  const writer = tunnel.writable.getWriter();
  const reader = tunnel.readable.getReader();
  const stop = () => {
    writer.close().catch(() => {});
    reader.cancel().catch(() => {});
  };
  if (socket.destroyed) return stop();
  socket.on("data", (chunk: Buffer) => {
    writer.write(chunk).catch(() => socket.destroy());
    if ((writer.desiredSize ?? 1) <= 0) {
      socket.pause();
      writer.ready.then(() => socket.resume(), () => {});
    }
  });
  socket.on("close", stop);
  socket.on("error", () => {});
  socket.resume();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done || socket.destroyed) break;
      if (!socket.write(value)) await drained(socket);
    }
  } catch {
    // The tunnel broke: the client's connection ends below.
  }
  socket.end();
}

/** Until the client's socket drains or closes; neither listener outlives the wait (a big result stalls thousands of times). */
export function drained(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off("drain", done).off("close", done);
      resolve();
    };
    socket.on("drain", done).on("close", done);
  });
}
