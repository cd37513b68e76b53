import { describe, expect, it } from "vitest";
import { fe, leasedPids, makeWire, type Wire } from "./wire-helpers.ts";
import { flush } from "./helpers.ts";
import { BUILT_IN_CLIENT_PARAMETER } from "../../worker/wire/session.ts";

/** Holds `n` backends busy in open transactions so the next acquire gets a specific one. */
async function pin(wire: Wire, n: number) {
  const holders = Array.from({ length: n }, () => wire.client());
  for (const h of holders) await h.send(fe.query("begin"));
  return holders;
}

describe("named prepared statements in transaction mode", () => {
  it("a client Parse goes to the server under a server-side name; Bind is rewritten to it", async () => {
    const wire = makeWire();
    const c = wire.client();
    await c.send(fe.parse("s1", "select $1"), fe.bind("s1", ["x"]), fe.execute(), fe.sync());
    expect(c.types()).toBe("1 2 D C Z");
    expect(c.received[2]!.text).toBe("x");
    const b = wire.driver.backends[0]!;
    expect(b.log.slice(0, 2)).toEqual(["P:edgepool_1", "B:edgepool_1"]);
    expect([...b.statements.keys()]).toEqual(["edgepool_1"]);
  });

  it("the same statement from another session on the same backend gets a ParseComplete without a Parse (a hit)", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const a = wire.client();
    const b = wire.client();
    await a.send(fe.parse("mine", "select $1"), fe.bind("mine", ["a"]), fe.execute(), fe.sync());
    await b.send(fe.parse("theirs", "select $1"), fe.describe("S", "theirs"), fe.flush());
    expect(b.types()).toBe("1 t T");
    await b.send(fe.bind("theirs", ["b"]), fe.execute(), fe.sync());
    expect(b.received.filter((m) => m.type === "D").map((m) => m.text)).toEqual(["b"]);
    const log = wire.driver.backends[0]!.log;
    expect(log.filter((l) => l.startsWith("P:"))).toEqual(["P:edgepool_1"]);
    expect(wire.stats.preparedHits).toBe(1);
  });

  it("a statement is prepared again (Parse injected, its ParseComplete swallowed) on a backend that lacks it", async () => {
    const wire = makeWire({ maxConnections: 2 });
    const c = wire.client();
    await c.send(fe.parse("s", "select $1"), fe.sync());
    expect(c.types()).toBe("1 Z");
    // The first backend is now busy elsewhere: the next batch gets the second one.
    const [holder] = await pin(wire, 1);
    c.clear();
    await c.send(fe.bind("s", ["again"]), fe.execute(), fe.sync());
    expect(c.types()).toBe("2 D C Z");
    expect(c.received[1]!.text).toBe("again");
    const second = wire.driver.backends[1]!;
    expect(second.log.slice(0, 2)).toEqual(["P:edgepool_1", "B:edgepool_1"]);
    expect(wire.stats.preparedReprepares).toBe(1);
    void holder;
  });

  it("Describe 'S' of a client name is rewritten, preparing first when needed", async () => {
    const wire = makeWire({ maxConnections: 2 });
    const c = wire.client();
    await c.send(fe.parse("s", "select $1"), fe.sync());
    await pin(wire, 1);
    c.clear();
    await c.send(fe.describe("S", "s"), fe.sync());
    expect(c.types()).toBe("t T Z");
    expect(wire.driver.backends[1]!.log.slice(0, 2)).toEqual(["P:edgepool_1", "D:S:edgepool_1"]);
  });

  it("the synthesized ParseComplete comes in order after the server's answers before it", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const c = wire.client();
    await c.send(fe.parse("a", "select $1"), fe.sync());
    c.clear();
    // Unnamed Parse (server answers 1), then Parse of a known statement (ours), then Bind (server 2).
    await c.send(fe.parse("", "select 'u'"), fe.bind(""), fe.parse("b", "select $1"), fe.bind("b", ["v"]), fe.execute(), fe.sync());
    expect(c.types()).toBe("1 2 1 2 D C Z");
    expect(c.received[4]!.text).toBe("v");
  });

  it("Close 'S' of a client name is answered by us, in order, and the server keeps the statement", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const c = wire.client();
    await c.send(fe.parse("s", "select $1"), fe.sync());
    c.clear();
    await c.send(fe.bind("s", ["1"]), fe.execute(), fe.close("S", "s"), fe.sync());
    expect(c.types()).toBe("2 D C 3 Z");
    const b = wire.driver.backends[0]!;
    expect(b.log.some((l) => l.startsWith("C:S"))).toBe(false);
    expect(b.statements.has("edgepool_1")).toBe(true);
    c.clear();
    // The name is gone for this client: a Bind of it reaches the server as is and fails there.
    await c.send(fe.bind("s", ["1"]), fe.execute(), fe.sync());
    expect(c.types()).toBe("E Z");
    expect(c.received[0]!.fields!.get("C")).toBe("26000");
  });

  it("a duplicate client name is refused with 42P05 and the batch skips to its Sync", async () => {
    const wire = makeWire();
    const c = wire.client();
    await c.send(fe.parse("s", "select $1"), fe.sync());
    c.clear();
    await c.send(fe.parse("s", "select 'other'"), fe.bind("s", ["1"]), fe.execute(), fe.sync());
    expect(c.types()).toBe("E Z");
    expect(c.received[0]!.fields!.get("C")).toBe("42P05");
    expect(leasedPids(wire)).toEqual([]);
  });

  it("the same name with the same text again is a no-op re-prepare, in both modes (a lease of the built-in client runs one text twice)", async () => {
    for (const mode of ["transaction", "session"] as const) {
      const wire = makeWire();
      const c = wire.client({ mode });
      await c.send(fe.parse("s", "select $1"), fe.bind("s", ["1"]), fe.execute(), fe.sync());
      c.clear();
      await c.send(fe.parse("s", "select $1"), fe.bind("s", ["2"]), fe.execute(), fe.sync());
      expect(c.types()).toBe("1 2 D C Z");
      // The server prepared it once.
      expect(wire.driver.backends[0]!.log.filter((m) => m.startsWith("P:"))).toEqual(["P:edgepool_1"]);
    }
  });

  it("evicts the least recently used statement with a Close at maxPreparedStatements and swallows its CloseComplete", async () => {
    const wire = makeWire({ maxConnections: 1 }, { maxPreparedStatements: 2 });
    const c = wire.client();
    await c.send(fe.parse("a", "select $1"), fe.parse("b", "select $1::int"), fe.bind("a", ["1"]), fe.execute(), fe.sync());
    c.clear();
    await c.send(fe.parse("c", "select $1::text"), fe.bind("c", ["3"]), fe.execute(), fe.sync());
    expect(c.types()).toBe("1 2 D C Z");
    const b = wire.driver.backends[0]!;
    expect(b.log).toContain("C:S:edgepool_2");
    expect([...b.statements.keys()].sort()).toEqual(["edgepool_1", "edgepool_3"]);
    expect(wire.stats.preparedEvictions).toBe(1);
    c.clear();
    // b was evicted: its Bind re-prepares it (evicting a, the least recently used now).
    await c.send(fe.bind("b", ["4"]), fe.execute(), fe.sync());
    expect(c.types()).toBe("2 D C Z");
    expect([...b.statements.keys()].sort()).toEqual(["edgepool_2", "edgepool_3"]);
  });

  it("DEALLOCATE of a protocol-level name is answered by us without reaching the server", async () => {
    const wire = makeWire();
    const c = wire.client();
    await c.send(fe.parse("s", "select $1"), fe.sync());
    c.clear();
    await c.send(fe.query("deallocate s"));
    expect(c.types()).toBe("C Z");
    expect(c.received[0]!.text).toBe("DEALLOCATE");
    expect(wire.driver.backends[0]!.log.some((l) => l.startsWith("Q:"))).toBe(false);
    expect(wire.driver.backends[0]!.statements.has("edgepool_1")).toBe(true);
    expect(leasedPids(wire)).toEqual([]);
  });

  it("DISCARD ALL / DEALLOCATE ALL forget the session's names and the server's", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const c = wire.client();
    await c.send(fe.parse("s", "select $1"), fe.sync());
    await c.send(fe.query("discard all"));
    await wire.clock.advance(0);
    c.clear();
    await c.send(fe.bind("s", ["1"]), fe.sync());
    expect(c.received[0]!.fields!.get("C")).toBe("26000");
    // another session parsing the same text gets a real Parse (the server's set was cleared)
    const d = wire.client();
    await d.send(fe.parse("t", "select $1"), fe.bind("t", ["2"]), fe.execute(), fe.sync());
    expect(d.types()).toBe("1 2 D C Z");
    expect(wire.driver.backends[0]!.log.filter((l) => l === "P:edgepool_1")).toHaveLength(2);
  });

  it("a statement epoch that moved (a reset that dropped statements) voids the cache", async () => {
    const wire = makeWire({ maxConnections: 1 });
    wire.driver.resetDropsStatements = true;
    const c = wire.client();
    await c.send(fe.parse("s", "select $1"), fe.sync());
    await c.send(fe.query("set x to 1"));
    await wire.clock.advance(0);
    expect(wire.driver.backends[0]!.statementEpoch).toBe(1);
    c.clear();
    await c.send(fe.bind("s", ["1"]), fe.execute(), fe.sync());
    expect(c.types()).toBe("2 D C Z");
    expect(wire.stats.preparedReprepares).toBe(1);
  });

  it("a failed injected Parse is not remembered on the server", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const c = wire.client();
    // The first Bind fails (unknown unnamed portal's statement): the server skips the rest, including the Parse of s.
    await c.send(fe.bind("nope"), fe.parse("s", "select $1"), fe.sync());
    expect(c.types()).toBe("E Z");
    c.clear();
    await c.send(fe.bind("s", ["ok"]), fe.execute(), fe.sync());
    expect(c.types()).toBe("2 D C Z");
  });

  it("maxPreparedStatements 0 passes named statements through untouched", async () => {
    const wire = makeWire({}, { maxPreparedStatements: 0 });
    const c = wire.client();
    await c.send(fe.parse("s", "select $1"), fe.bind("s", ["1"]), fe.execute(), fe.sync());
    expect(c.types()).toBe("1 2 D C Z");
    expect(wire.driver.backends[0]!.log.slice(0, 2)).toEqual(["P:s", "B:s"]);
  });

  it("session mode tracks named statements too: the reset keeps protocol statements, so no client name is left on the server", async () => {
    const wire = makeWire();
    const first = wire.client({ mode: "session" });
    await first.send(fe.parse("s", "select $1"), fe.bind("s", ["1"]), fe.execute(), fe.sync());
    expect(wire.driver.backends[0]!.log.slice(0, 2)).toEqual(["P:edgepool_1", "B:edgepool_1"]);
    first.session.end();
    await flush();
    // The next session on the same backend uses the same client name: no clash, no second Parse.
    const second = wire.client({ mode: "session" });
    await second.send(fe.parse("s", "select $1"), fe.bind("s", ["2"]), fe.execute(), fe.sync());
    expect(second.types()).toContain("1 2 D C Z");
    expect(wire.driver.backends).toHaveLength(1);
    expect(wire.driver.backends[0]!.log.filter((m) => m.startsWith("P:"))).toEqual(["P:edgepool_1"]);
  });

  it("the built-in client's sessions keep its last 256 statement names (it Parses in every batch that Binds); a driver's session keeps every name it made", async () => {
    const wire = makeWire({ maxConnections: 1 }, { maxPreparedStatements: 1_000 });
    const names = (c: { session: unknown }) => (c.session as { statements: { size: number } }).statements.size;
    const run = async (c: ReturnType<Wire["client"]>, i: number, parse = true) => {
      const name = `edgepool_${i}`;
      await c.send(...(parse ? [fe.parse(name, `select $1::text || '${i}'`)] : []), fe.bind(name, ["x"]), fe.execute(), fe.sync());
    };
    const inWorker = wire.client();
    const remote = wire.client({ startup: true });
    await remote.send(fe.startup({ user: "edgepool", [BUILT_IN_CLIENT_PARAMETER]: "1" }));
    const driver = wire.client({ startup: true });
    await driver.send(fe.startup({ user: "app" }));
    for (const c of [inWorker, remote, driver]) {
      c.clear();
      for (let i = 0; i < 300; i++) await run(c, i);
      expect(c.received.filter((m) => m.type === "E")).toEqual([]);
      expect(c.received.filter((m) => m.type === "D")).toHaveLength(300);
    }
    expect([names(inWorker), names(remote), names(driver)]).toEqual([256, 256, 300]);
    // The driver Binds its first statement again without a Parse: still known, rewritten, answered.
    driver.clear();
    await run(driver, 0, false);
    expect(driver.types()).toBe("2 D C Z");
  });

  it("a registry replaced by a new maxPreparedStatements goes on numbering: sessions begun before and after the change share a server connection without 42P05", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const before = wire.client();
    await before.send(fe.parse("a", "select $1 || 'before'"), fe.bind("a", ["x"]), fe.execute(), fe.sync());
    wire.prepared = wire.prepared.successor(50);
    const after = wire.client();
    await after.send(fe.parse("b", "select $1 || 'after'"), fe.bind("b", ["y"]), fe.execute(), fe.sync());
    await before.send(fe.parse("c", "select $1 || 'before again'"), fe.bind("c", ["z"]), fe.execute(), fe.sync());
    for (const c of [before, after]) expect(c.received.filter((m) => m.type === "E").map((m) => m.text)).toEqual([]);
    expect([...wire.driver.backends[0]!.statements.keys()]).toEqual(["edgepool_1", "edgepool_2", "edgepool_3"]);
  });
});
