import { describe, expect, it } from "vitest";
import { fe, makeWire } from "./wire-helpers.ts";

describe("queryTimeoutMs on a client session (the remote built-in client's and drivers')", () => {
  it("a query still unanswered after queryTimeoutMs is cancelled on the server and its 57014 arrives as QUERY_TIMEOUT (ERROR); the session goes on", async () => {
    const wire = makeWire();
    const c = wire.client({ startup: true, queryTimeoutMs: 200 });
    await c.send(fe.startup({ user: "u" }), fe.query("sleep"));
    const backend = wire.driver.backends[0]!;
    backend.cancelFails = true;
    await wire.clock.advance(199);
    expect(backend.cancels).toBe(0);
    c.clear();
    await wire.clock.advance(1);
    expect(backend.cancels).toBe(1);
    expect(c.types()).toBe("E Z");
    const [error] = c.received;
    expect(error!.fields!.get("C")).toBe("57014");
    expect(error!.fields!.get("S")).toBe("ERROR");
    expect(error!.text).toMatch(/^QUERY_TIMEOUT: tenant "acme" query was cancelled on the server after 200ms \(queryTimeoutMs\)/);
    expect(c.closed).toBe(false);
    c.clear();
    await c.send(fe.query("select 'next'"));
    expect(c.types()).toBe("T D C Z");
  });

  it("each owed answer gets the full time: a session of quick queries is never cancelled, and a 57014 nobody caused stays the server's", async () => {
    const wire = makeWire();
    const c = wire.client({ startup: true, queryTimeoutMs: 200 });
    await c.send(fe.startup({ user: "u" }));
    for (let i = 0; i < 5; i++) {
      await c.send(fe.query(`select '${i}'`));
      await wire.clock.advance(150);
    }
    expect(wire.driver.backends[0]!.cancels).toBe(0);
    c.clear();
    // The server's own 57014 (a COPY the client failed) before any timeout: passed on as it is.
    await c.send(fe.query("copy in"));
    await c.send(fe.copyFail("changed my mind"));
    const error = c.received.find((m) => m.type === "E")!;
    expect(error.fields!.get("C")).toBe("57014");
    expect(error.text).toBe("COPY from stdin failed");
  });

  it("off by default (0), and the idle time between queries never counts", async () => {
    const wire = makeWire();
    const c = wire.client({ startup: true });
    await c.send(fe.startup({ user: "u" }), fe.query("sleep"));
    await wire.clock.advance(60_000);
    expect(wire.driver.backends[0]!.cancels).toBe(0);
    const timed = wire.client({ mode: "session", startup: true, queryTimeoutMs: 100 });
    await timed.send(fe.startup({ user: "u" }), fe.query("select 'x'"));
    await wire.clock.advance(10_000);
    expect(wire.driver.backends.every((b) => b.cancels === 0)).toBe(true);
  });

  it("a server still silent one more queryTimeoutMs after the cancel is given up: its connection closes and the session ends with LEASE_LOST", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const c = wire.client({ startup: true, queryTimeoutMs: 200 });
    await c.send(fe.startup({ user: "u" }), fe.query("sleep"));
    const backend = wire.driver.backends[0]!;
    // The cancel reaches nobody: the server stays silent (a host gone without closing the socket).
    await wire.clock.advance(200);
    expect(backend.cancels).toBe(1);
    c.clear();
    await wire.clock.advance(199);
    expect(backend.closed).toBe(false);
    expect(c.received).toEqual([]);
    await wire.clock.advance(1);
    expect(backend.closed).toBe(true);
    expect(c.types()).toBe("E");
    expect(c.received[0]!.text).toMatch(/^LEASE_LOST: /);
    expect(c.received[0]!.fields!.get("S")).toBe("FATAL");
    // The slot came back: the next session gets a new connection.
    const next = wire.client({ startup: true });
    await next.send(fe.startup({ user: "u" }), fe.query("select 'next'"));
    expect(next.types()).toContain("T D C Z");
    expect(wire.driver.backends).toHaveLength(2);
  });

  it("a cancelled query that answers within the grace keeps its connection", async () => {
    const wire = makeWire();
    const c = wire.client({ startup: true, queryTimeoutMs: 200 });
    await c.send(fe.startup({ user: "u" }), fe.query("sleep"));
    const backend = wire.driver.backends[0]!;
    backend.cancelFails = true;
    await wire.clock.advance(200);
    await wire.clock.advance(1_000);
    expect(backend.closed).toBe(false);
    c.clear();
    await c.send(fe.query("select 'next'"));
    expect(c.types()).toBe("T D C Z");
  });
});
