import { describe, expect, it } from "vitest";
import { fe, leasedPids, makeWire } from "./wire-helpers.ts";

describe("transaction mode: the release rule", () => {
  it("attaches at the first message of a batch and releases at ReadyForQuery I", async () => {
    const wire = makeWire();
    const c = wire.client();
    await c.send(fe.query("select 'a'"));
    expect(c.types()).toBe("T D C Z");
    expect(c.received[1]!.text).toBe("a");
    expect(leasedPids(wire)).toEqual([]);
    expect(wire.pool.stats().leased).toBe(0);
    expect(wire.stats.clientsActive).toBe(0);
  });

  it("BEGIN … COMMIT keeps one backend across batches, then releases it", async () => {
    const wire = makeWire({ maxConnections: 2 });
    const c = wire.client();
    const other = wire.client();
    await c.send(fe.query("begin"));
    const [pid] = leasedPids(wire);
    expect(pid).toBeDefined();
    expect(wire.stats.clientsActive).toBe(1);
    await other.send(fe.query("select 'other'"));
    await c.send(fe.query("select 'in tx'"));
    await c.send(fe.parse("", "select 'ext'"), fe.bind(""), fe.execute(), fe.sync());
    await c.send(fe.query("commit"));
    const b = wire.driver.backends.find((x) => x.pid === pid)!;
    expect(b.log.filter((l) => l.startsWith("Q:"))).toEqual(["Q:begin", "Q:select 'in tx'", "Q:commit"]);
    expect(b.log).toContain("P:");
    expect(c.received.filter((m) => m.type === "Z").map((m) => m.text)).toEqual(["T", "T", "T", "I"]);
    expect(leasedPids(wire)).toEqual([]);
  });

  it("a Parse/Describe/Flush exchange keeps the backend until the Sync that follows Bind/Execute", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const c = wire.client();
    const other = wire.client({ acquireTimeoutMs: 1000 });
    await c.send(fe.parse("", "select $1"), fe.describe("S", ""), fe.flush());
    expect(c.types()).toBe("1 t T");
    expect(leasedPids(wire)).toHaveLength(1);
    // another session waits: the exchange holds the only backend
    await other.send(fe.query("select 'waits'"));
    expect(other.types()).toBe("");
    expect(wire.stats.clientsWaiting).toBe(1);
    await c.send(fe.bind("", ["v"]), fe.execute(), fe.sync());
    expect(c.types()).toBe("1 t T 2 D C Z");
    expect(c.received[4]!.text).toBe("v");
    await wire.clock.advance(0);
    expect(other.types()).toBe("T D C Z");
    expect(wire.stats.clientsWaiting).toBe(0);
    expect(leasedPids(wire)).toEqual([]);
  });

  it("a batch split at any byte is answered the same", async () => {
    const wire = makeWire();
    const c = wire.client();
    const bytes = new Uint8Array([...fe.parse("", "select $1"), ...fe.bind("", ["chunked"]), ...fe.execute(), ...fe.sync()]);
    for (let i = 0; i < bytes.length; i += 3) await c.send(bytes.subarray(i, i + 3));
    expect(c.types()).toBe("1 2 D C Z");
    expect(c.received[2]!.text).toBe("chunked");
    expect(leasedPids(wire)).toEqual([]);
  });

  it("several pipelined Syncs: released only after the last ReadyForQuery", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const c = wire.client();
    await c.send(fe.parse("", "select $1"), fe.bind("", ["1"]), fe.execute(), fe.sync(), fe.bind("", ["2"]), fe.execute(), fe.sync());
    expect(c.types()).toBe("1 2 D C Z 2 D C Z");
    expect(wire.driver.backends).toHaveLength(1);
    expect(leasedPids(wire)).toEqual([]);
  });

  it("no reset for a clean batch; a reset for SET, PREPARE, temp tables, advisory locks, LISTEN-free state changes and errors", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const c = wire.client();
    await c.send(fe.query("select 'clean'"));
    await wire.clock.advance(0);
    expect(wire.driver.resets).toEqual([]);
    const dirty = [
      "set search_path to x", "prepare p as select 1", "create temp table t (a int)", "CREATE TEMPORARY TABLE t (a int)",
      "select pg_advisory_lock(1)", "declare c cursor with hold for select 1", "load 'x'", "discard plans", "fail",
    ];
    for (const text of dirty) {
      await c.send(fe.query(text));
      await wire.clock.advance(0);
    }
    expect(wire.driver.resets).toHaveLength(dirty.length);
    await c.send(fe.query("select pg_advisory_xact_lock(1)"));
    await wire.clock.advance(0);
    expect(wire.driver.resets).toHaveLength(dirty.length);
  });

  it("a SET sent in a Parse (extended protocol) also resets", async () => {
    const wire = makeWire();
    const c = wire.client();
    await c.send(fe.parse("", "set timezone to 'UTC'"), fe.bind(""), fe.execute(), fe.sync());
    await wire.clock.advance(0);
    expect(wire.driver.resets).toHaveLength(1);
  });

  it("end() mid-transaction releases with reset (the rollback), and is idempotent", async () => {
    const wire = makeWire();
    const c = wire.client();
    await c.send(fe.query("begin"));
    expect(leasedPids(wire)).toHaveLength(1);
    c.session.end();
    c.session.end();
    await wire.clock.advance(0);
    expect(wire.driver.resets).toHaveLength(1);
    expect(wire.pool.stats().leased).toBe(0);
    expect(wire.pool.stats().idle).toBe(1);
    expect(wire.stats).toMatchObject({ clients: 0, clientsActive: 0 });
  });

  it("end() with answers still due closes the backend instead of handing it on", async () => {
    const wire = makeWire();
    const c = wire.client();
    await c.send(fe.query("sleep"));
    expect(leasedPids(wire)).toHaveLength(1);
    c.session.end();
    await wire.clock.advance(0);
    expect(wire.driver.backends[0]!.closed).toBe(true);
    expect(wire.pool.stats().total).toBe(0);
  });
});
