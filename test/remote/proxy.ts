// A TCP proxy in front of Postgres whose behaviour a test switches: forward, refuse
// (nothing listens), black hole (accepts, never answers), or freeze (as black hole, and
// the connections already open go silent both ways without closing: a host gone without
// a FIN or RST). It counts connection attempts and the most that were open at once.
import { createServer, connect, type Server, type Socket } from "node:net";

export type ProxyMode = "forward" | "blackhole" | "refuse" | "freeze";

export async function startProxy(target: { host: string; port: number }, port = 0) {
  let mode: ProxyMode = "forward";
  let server: Server | undefined;
  const sockets = new Set<Socket>();
  /** Forwarding pairs, so that `freeze` can stop them; a closed client still closes its upstream. */
  const pairs = new Set<{ client: Socket; upstream: Socket }>();
  const stats = { attempts: 0, open: 0, maxOpen: 0, attemptTimes: [] as number[] };

  const listen = (p: number) =>
    new Promise<number>((resolve, reject) => {
      server = createServer((socket) => {
        stats.attempts++;
        stats.attemptTimes.push(Date.now());
        stats.open++;
        stats.maxOpen = Math.max(stats.maxOpen, stats.open);
        sockets.add(socket);
        socket.on("close", () => {
          stats.open--;
          sockets.delete(socket);
        });
        socket.on("error", () => {});
        // Read and drop what the client sends: a paused socket would never notice the client closing.
        if (mode === "blackhole" || mode === "freeze") return void socket.resume();
        const upstream = connect(target.port, target.host);
        const pair = { client: socket, upstream };
        pairs.add(pair);
        upstream.on("error", () => socket.destroy());
        socket.on("close", () => (pairs.delete(pair), upstream.destroy()));
        upstream.on("close", () => socket.destroy());
        socket.pipe(upstream).pipe(socket);
      });
      server.once("error", reject);
      server.listen(p, "127.0.0.1", () => resolve((server!.address() as { port: number }).port));
    });

  const boundPort = await listen(port);
  const close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      if (!server) return resolve();
      server.close(() => resolve());
      server = undefined;
    });

  return {
    port: boundPort,
    stats,
    /** Switches behaviour; `refuse` closes the listener, the others (re)open it on the same port. */
    async set(next: ProxyMode) {
      mode = next;
      if (next === "freeze") {
        // Bytes from either side are read and dropped from now on.
        for (const { client, upstream } of pairs) {
          client.unpipe(upstream);
          upstream.unpipe(client);
          client.resume();
          upstream.resume();
        }
        pairs.clear();
      }
      if (next === "refuse") await close();
      else if (!server) await listen(boundPort);
    },
    /** Cuts every open connection (as a network failure would). */
    cut() {
      for (const s of sockets) s.destroy();
    },
    reset() {
      Object.assign(stats, { attempts: 0, maxOpen: stats.open, attemptTimes: [] });
    },
    close,
  };
}
