import { describe, expect, it } from "vitest";
import { fe, leasedPids, makeWire } from "./wire-helpers.ts";

describe("session mode", () => {
  it("attaches at startup, keeps one backend for every batch, releases with reset at the end", async () => {
    const wire = makeWire({ maxConnections: 2 });
    const c = wire.client({ mode: "session", startup: true });
    await c.send(fe.startup({ user: "u" }));
    expect(c.types()).toBe("R S S S S K Z");
    const [pid] = leasedPids(wire);
    expect(pid).toBeDefined();
    expect(wire.stats.clientsActive).toBe(1);
    await c.send(fe.query("select 'a'"));
    await c.send(fe.query("select 'b'"));
    expect(leasedPids(wire)).toEqual([pid]);
    c.session.end();
    await wire.clock.advance(0);
    expect(wire.driver.resets).toEqual([pid]);
    expect(leasedPids(wire)).toEqual([]);
    expect(wire.stats.clientsActive).toBe(0);
  });

  it("forwards notifications the server sends while the client is idle", async () => {
    const wire = makeWire();
    const c = wire.client({ mode: "session", startup: true });
    await c.send(fe.startup({ user: "u" }), fe.query("listen ch"));
    c.clear();
    wire.driver.backends[0]!.notify("ch", "hello");
    await wire.clock.advance(0);
    expect(c.types()).toBe("A");
  });

  it("LISTEN works in session mode", async () => {
    const wire = makeWire();
    const c = wire.client({ mode: "session" });
    await c.send(fe.query("listen ch"));
    expect(c.types()).toBe("C Z");
    expect(c.received[0]!.text).toBe("LISTEN");
  });

  it("an idle session-mode session is reclaimed after leaseTimeoutMs: FATAL 08006 LEASE_EXPIRED", async () => {
    const wire = makeWire({ leaseTimeoutMs: 1000 });
    const c = wire.client({ mode: "session", startup: true });
    await c.send(fe.startup({ user: "u" }));
    await wire.clock.advance(600);
    await c.send(fe.query("select 'still active'"));
    await wire.clock.advance(600);
    wire.pool.sweep();
    await wire.clock.advance(0);
    expect(c.closed).toBe(false);
    await wire.clock.advance(500);
    wire.pool.sweep();
    await wire.clock.advance(0);
    const last = c.received.at(-1)!;
    expect(last.type).toBe("E");
    expect(last.fields!.get("S")).toBe("FATAL");
    expect(last.fields!.get("C")).toBe("08006");
    expect(last.text).toMatch(/^LEASE_EXPIRED: /);
    expect(c.closed).toBe(true);
    expect(wire.stats.clientsActive).toBe(0);
  });

  it("a query in flight is never reclaimed, however long it runs", async () => {
    const wire = makeWire({ leaseTimeoutMs: 1000 });
    const c = wire.client({ mode: "session" });
    await c.send(fe.query("sleep"));
    await wire.clock.advance(5000);
    wire.pool.sweep();
    await wire.clock.advance(0);
    expect(c.closed).toBe(false);
    wire.driver.backends[0]!.resume();
    await wire.clock.advance(0);
    expect(c.types()).toBe("C Z");
    expect(wire.pool.stats().leasesExpired).toBe(0);
  });

  it("transaction mode inside a transaction is reclaimed after leaseTimeoutMs", async () => {
    const wire = makeWire({ leaseTimeoutMs: 1000 });
    const c = wire.client();
    await c.send(fe.query("begin"));
    await wire.clock.advance(1500);
    wire.pool.sweep();
    await wire.clock.advance(0);
    expect(c.received.at(-1)!.text).toMatch(/^LEASE_EXPIRED: /);
    expect(c.closed).toBe(true);
  });

  it("a server connection that closes under the session: FATAL 08006 LEASE_LOST", async () => {
    const wire = makeWire();
    const c = wire.client({ mode: "session" });
    await c.send(fe.query("select 'x'"));
    wire.driver.backends[0]!.close();
    await wire.clock.advance(0);
    const last = c.received.at(-1)!;
    expect(last.fields!.get("C")).toBe("08006");
    expect(last.text).toMatch(/^LEASE_LOST: /);
    expect(c.closed).toBe(true);
    expect(wire.pool.stats().leased).toBe(0);
  });
});

describe("session mode without a startup exchange (a built-in lease)", () => {
  it("start() attaches now and resolves with the backend; endedBy is the error when none could be had", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const a = wire.client({ mode: "session" });
    const backend = await a.session.start();
    expect(backend.pid).toBe(wire.driver.backends[0]!.pid);
    expect(await a.session.start()).toBe(backend);
    const b = wire.client({ mode: "session", acquireTimeoutMs: 10 });
    const started = b.session.start().catch((e: unknown) => e);
    await wire.clock.advance(10);
    const error = await started;
    expect(error).toBe(b.session.endedBy);
    expect((error as Error).message).toMatch(/^ACQUIRE_TIMEOUT: /);
    expect(b.session.closed).toBe(true);
  });
});
