import { describe, expect, it } from "vitest";
import { fe, makeWire } from "./wire-helpers.ts";

describe("streaming and backpressure", () => {
  it("server messages of one read reach the client as one view of the read (no copy)", async () => {
    const wire = makeWire();
    const c = wire.client();
    await c.send(fe.query("rows 5"));
    expect(c.types()).toBe("T D D D D D C Z");
    expect(c.chunks).toHaveLength(1);
  });

  it("a client that does not take its bytes stops the reading of server bytes until it does", async () => {
    const wire = makeWire();
    const c = wire.client({ slow: true, mode: "session" });
    await c.send(fe.query("select 'a'"), fe.query("select 'b'"));
    const backend = wire.driver.backends[0]!;
    // The first read was handed to the client; the second waits for the client's promise.
    expect(c.types()).toBe("T D C Z");
    expect(c.pendingSends).toHaveLength(1);
    await wire.clock.advance(0);
    expect(c.types()).toBe("T D C Z");
    c.pendingSends.shift()!();
    await wire.clock.advance(0);
    expect(c.types()).toBe("T D C Z T D C Z");
    expect(backend.readsDuringBackpressure).toBe(0);
  });

  it("in transaction mode a client slow to take its last answer does not hold up the next borrower of the server connection", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const slow = wire.client({ slow: true });
    await slow.send(fe.query("select 'a'"));
    expect(slow.types()).toBe("T D C Z");
    // The client never takes these bytes; its transaction is over, so the connection went back to the pool.
    expect(slow.pendingSends).toHaveLength(1);
    const next = wire.client();
    await next.send(fe.query("select 'b'"));
    await wire.clock.advance(0);
    expect(next.types()).toBe("T D C Z");
    expect(wire.driver.backends).toHaveLength(1);
    expect(wire.driver.backends[0]!.log).toEqual(["Q:select 'a'", "Q:select 'b'"]);
  });

  it("receive() resolves only once the server took the bytes", async () => {
    const wire = makeWire();
    const c = wire.client();
    let taken = false;
    const done = c.session.receive(fe.query("select 'x'")).then(() => (taken = true));
    expect(taken).toBe(false);
    await done;
    expect(wire.driver.backends[0]!.log).toContain("Q:select 'x'");
  });
});
