// `edgepool proxy` waits for a slow TCP client with drained(): a large result stalls many times per connection.
import { createServer, connect, type Socket } from "node:net";
import { expect, it } from "vitest";
import { drained } from "../../bin/proxy.ts";

it("the proxy's wait for a slow client leaves no listener behind, however often the client stalls", async () => {
  const accepted = new Promise<Socket>((resolve) => {
    const server = createServer((socket) => {
      server.close();
      resolve(socket);
    }).listen(0, "127.0.0.1", () => void connect((server.address() as { port: number }).port, "127.0.0.1"));
  });
  const socket = await accepted;
  const before = { drain: socket.listenerCount("drain"), close: socket.listenerCount("close") };
  for (let i = 0; i < 1_000; i++) {
    const wait = drained(socket);
    socket.emit("drain");
    await wait;
  }
  expect({ drain: socket.listenerCount("drain"), close: socket.listenerCount("close") }).toEqual(before);
  const closing = drained(socket);
  socket.destroy();
  await closing;
  expect(socket.listenerCount("drain")).toBe(before.drain);
});
